/**
 * `cvmfs-ts thin mount`: a thin image's layers, served from CVMFS, stacked with overlayfs under a
 * writable upper directory, so a container (or anyone) gets the image's root file system without
 * pulling it.
 *
 * The lowerdir option names every layer. With full /cvmfs/REPO/.layers/xx/<64 hex>/layerfs paths,
 * ~40 layers already exceed the one page (4096 bytes) that mount(2) accepts for options, so each
 * layer gets a short symlink `l/<n>` in the mount's state directory and mount(8) runs with that
 * directory as its working directory: the option holds only `l/0:l/1:…` (containerd and Docker's
 * overlay2 shorten their lowerdirs the same way). overlayfs resolves the links once, at mount time.
 */
import { mkdir, rm, symlink, writeFile, readFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, resolve } from 'node:path';
import { layerDirectory, parseThinJson, type ThinImage } from '../image/thin-json';
import { isMountpoint, mount, unmount } from '../system/mounts';
import { CvmfsError } from '../errors';
import { warmUpThinImage } from './warm-up';

export const DEFAULT_THIN_STATE = '/var/lib/cvmfs-ts/thin';

/** Makes sure `/cvmfs/REPO` is mounted (e.g. by starting `cvmfs-ts mount`); injected by the caller. */
export type RepositoryMounter = (repository: string, mountpoint: string) => Promise<void>;

export interface ThinMountOptions {
  readonly image: ThinImage;
  readonly target: string;
  /** Holds upper/ and work/ (same file system, as overlayfs requires); default under the state root. */
  readonly upper?: string;
  /** Per-mount state (layer links, the mounted thin.json); default /var/lib/cvmfs-ts/thin. */
  readonly stateRoot?: string;
  readonly cvmfsRoot?: string;
  readonly ensureMounted: RepositoryMounter;
  /** Told how the warm-up of the repositories went (catalog and profile prefetch). */
  readonly log?: (line: string) => void;
}

export interface ThinMountResult {
  readonly target: string;
  readonly stateDir: string;
  readonly upperDir: string;
  readonly workDir: string;
  /** Top layer first, as given to overlayfs. */
  readonly lowerDirs: readonly string[];
  /** Length of the option string handed to mount(2). */
  readonly optionBytes: number;
}

/** One state directory per target path, so `thin umount TARGET` finds it again. */
export function stateDirFor(target: string, stateRoot = DEFAULT_THIN_STATE): string {
  return join(stateRoot, createHash('sha256').update(resolve(target)).digest('hex').slice(0, 16));
}

/** The thin.json text of a thin image given as a thin.json file. */
export async function readThinJsonFile(path: string): Promise<ThinImage> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new CvmfsError('E_NOT_FOUND', `${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  return parseThinJson(text);
}

export async function mountThin(o: ThinMountOptions): Promise<ThinMountResult> {
  const target = resolve(o.target);
  const cvmfsRoot = o.cvmfsRoot ?? '/cvmfs';
  if (await isMountpoint(target)) throw new CvmfsError('E_USAGE', `${target} is already a mount point`);
  for (const repository of new Set(o.image.layers.map((l) => l.repository))) {
    const mountpoint = join(cvmfsRoot, repository);
    if (await isMountpoint(mountpoint)) continue;
    await mkdir(mountpoint, { recursive: true });
    await o.ensureMounted(repository, mountpoint);
  }
  await warmUpThinImage(o.image, { cvmfsRoot, log: o.log });
  const lowerDirs = o.image.layers.map((l) => layerDirectory(l, cvmfsRoot)).reverse();

  const stateDir = stateDirFor(target, o.stateRoot);
  const linkDir = join(stateDir, 'l');
  await rm(linkDir, { recursive: true, force: true });
  await mkdir(linkDir, { recursive: true });
  await Promise.all(lowerDirs.map((dir, i) => symlink(dir, join(linkDir, String(i)))));
  const upperBase = resolve(o.upper ?? join(stateDir, 'rw'));
  const upperDir = join(upperBase, 'upper');
  const workDir = join(upperBase, 'work');
  await mkdir(upperDir, { recursive: true });
  await mkdir(workDir, { recursive: true });
  await mkdir(target, { recursive: true });
  await writeFile(join(stateDir, 'mount.json'), JSON.stringify({ target, upperBase, image: o.image }, null, 2));

  const options = `lowerdir=${lowerDirs.map((_, i) => `l/${i}`).join(':')},upperdir=${upperDir},workdir=${workDir}`;
  await mount(['-t', 'overlay', 'cvmfs-ts-thin', '-o', options, target], stateDir);
  return { target, stateDir, upperDir, workDir, lowerDirs, optionBytes: Buffer.byteLength(options) };
}

export interface ThinUnmountOptions {
  readonly stateRoot?: string;
  /** Also delete the state directory, and with it the default upper directory. */
  readonly clean?: boolean;
}

export async function unmountThin(target: string, o: ThinUnmountOptions = {}): Promise<void> {
  const path = resolve(target);
  if (!(await isMountpoint(path))) throw new CvmfsError('E_USAGE', `${path} is not mounted`);
  await unmount(path);
  const stateDir = stateDirFor(path, o.stateRoot);
  await rm(join(stateDir, 'l'), { recursive: true, force: true });
  if (o.clean) await rm(stateDir, { recursive: true, force: true });
}
