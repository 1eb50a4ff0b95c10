/**
 * `cvmfs-ts thin record`: runs a command in a thin image and notes which objects it reads during
 * its first N seconds, in order — the image's access profile (format/access-profile.ts).
 *
 * The image is thin-mounted in a temporary directory; the command runs chrooted into it, in a
 * private mount namespace with /proc and /dev (unshare + chroot: a container without isolation
 * beyond the file system, which is all a profile needs). The mount daemon of the layers'
 * repository records (`record start` / `record stop` on its control socket); the page cache is
 * dropped first so every read reaches it. Only objects under the image's layer directories are
 * kept. The command is killed when the window ends.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CvmfsError } from '../errors';
import { ContentHash } from '../format/hash';
import { serializeAccessProfile, type AccessProfile, type ProfiledObject } from '../format/access-profile';
import { profilePath, type ThinImage } from '../image/thin-json';
import { publish } from '../publish/publisher';
import type { RecordedAccess } from '../client/prefetch';
import { DEFAULT_THIN_STATE, mountThin, unmountThin, type RepositoryMounter } from './thin-mount';
import { sendTalkThroughMount } from './warm-up';

export interface RecordOptions {
  readonly image: ThinImage;
  readonly command: readonly string[];
  /** Length of the recording window (the command is killed when it ends). */
  readonly seconds: number;
  /** Environment of the command (NAME=value): the image config's, then the caller's (later wins). */
  readonly env?: readonly string[];
  /** Working directory in the image (the config's WorkingDir); default /. */
  readonly workingDir?: string;
  readonly cvmfsRoot?: string;
  readonly stateRoot?: string;
  readonly ensureMounted: RepositoryMounter;
  readonly log?: (line: string) => void;
}

export interface RecordResult {
  readonly profile: AccessProfile;
  /** How the command ended: its exit code, or the signal that ended it ('window' when we did). */
  readonly exit: number | string;
  /** Objects recorded outside the image's layers (left out). */
  readonly ignored: number;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/**
 * Mounts /proc and /dev inside the private namespace, reads the image's /etc/passwd and /etc/group
 * as a container runtime does before it starts the task (so they are in the profile), then becomes
 * the command, chrooted, in the working directory ($2, through the image's /bin/sh when not /).
 */
const ENTER = [
  // The environment is the image's; host tools are found with the host's PATH, which the command does not see.
  'set -e; root=$1; dir=$2; shift 2; image_path=$PATH; PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; chroot=$(command -v chroot)',
  'mkdir -p "$root/proc" "$root/dev"; mount -t proc proc "$root/proc"; mount --rbind /dev "$root/dev"',
  'cat "$root/etc/passwd" "$root/etc/group" > /dev/null 2>&1 || true',
  'PATH=$image_path',
  'if [ "$dir" = / ]; then exec "$chroot" "$root" "$@"; fi',
  'exec "$chroot" "$root" /bin/sh -c \'cd "$0" && exec "$@"\' "$dir" "$@"',
].join('\n');

export async function recordAccessProfile(o: RecordOptions): Promise<RecordResult> {
  if (o.command.length === 0) throw new CvmfsError('E_USAGE', 'thin record needs a command to run (after --)');
  const cvmfsRoot = o.cvmfsRoot ?? '/cvmfs';
  const log = o.log ?? (() => undefined);
  const stateRoot = o.stateRoot ?? DEFAULT_THIN_STATE;
  await mkdir(stateRoot, { recursive: true });
  const work = await mkdtemp(join(stateRoot, 'record-'));
  const target = join(work, 'root');
  const repositories = [...new Set(o.image.layers.map((l) => l.repository))];
  let mounted = false;
  try {
    await mountThin({ image: o.image, target, upper: join(work, 'rw'), stateRoot: o.stateRoot, cvmfsRoot, ensureMounted: o.ensureMounted, log });
    mounted = true;
    await writeFile('/proc/sys/vm/drop_caches', '1\n').catch((e: unknown) => log(`page cache not dropped (${(e as Error).message}): reads served from it are not recorded`));
    const talk = (repository: string, command: string) => sendTalkThroughMount(join(cvmfsRoot, repository), command);
    await Promise.all(repositories.map((r) => talk(r, 'record start')));
    const started = performance.now();
    const exit = await runFor(target, o.workingDir || '/', o.command, o.env ?? [], o.seconds * 1000);
    log(`command ended (${exit}) after ${((performance.now() - started) / 1000).toFixed(2)} s`);
    const recorded = (await Promise.all(repositories.map(async (r) => JSON.parse(await talk(r, 'record stop')) as RecordedAccess[]))).flat();
    const prefixes = o.image.layers.map((l) => `/${l.path}/`);
    const inImage = recorded.filter((a) => prefixes.some((p) => a.path.startsWith(p))).sort((a, b) => a.ms - b.ms);
    const objects: ProfiledObject[] = inImage.map((a) => ({ hash: ContentHash.parse(a.hash), suffix: a.suffix, compressed: a.compressed, size: a.size, path: a.path.slice(1) }));
    const profile: AccessProfile = {
      created: new Date().toISOString(),
      seconds: o.seconds,
      command: o.command,
      layers: o.image.layers.map((l) => l.digest),
      objects,
    };
    return { profile, exit, ignored: recorded.length - inImage.length };
  } finally {
    if (mounted) await unmountThin(target, { stateRoot: o.stateRoot, clean: true }).catch((e: unknown) => log(`unmounting ${target}: ${(e as Error).message}`));
    await rm(work, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Runs the command chrooted into `root` for at most `ms`; its exit code, signal, or 'window'. */
function runFor(root: string, workingDir: string, command: readonly string[], env: readonly string[], ms: number): Promise<number | string> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/unshare', ['--mount', '--propagation', 'private', '--fork', '--pid', '--', '/bin/sh', '-c', ENTER, 'enter', root, workingDir, ...command], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { PATH: DEFAULT_PATH, HOME: '/root', ...Object.fromEntries(env.map((e) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])) },
      detached: true,
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }, ms);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new CvmfsError('E_USAGE', `cannot run unshare: ${e.message}`, { cause: e }));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve(timedOut ? 'window' : (code ?? signal ?? 'unknown'));
    });
  });
}

export interface ProfilePublishOptions {
  readonly profile: AccessProfile;
  readonly image: ThinImage;
  readonly repoDir: string;
  readonly fqrn: string;
  readonly keysDir: string;
  readonly staging?: string;
}

/**
 * Publishes the profile where thin.json names it (or, for a thin.json without a `profile` field, at
 * the path derived from its layers), as one new revision carrying everything else over (union).
 */
export async function publishAccessProfile(o: ProfilePublishOptions): Promise<{ revision: number; path: string }> {
  const where = o.image.profile ?? { repository: o.image.layers[0]!.repository, path: profilePath(o.image.layers.map((l) => l.digest)) };
  if (where.repository !== o.fqrn) {
    throw new CvmfsError('E_USAGE', `the image's profile belongs in repository ${where.repository}, not ${o.fqrn}`);
  }
  const staging = await mkdtemp(join(o.staging ?? tmpdir(), 'cvmfs-ts-profile-'));
  try {
    await mkdir(join(staging, dirname(where.path)), { recursive: true });
    await writeFile(join(staging, where.path), serializeAccessProfile(o.profile));
    const published = await publish({ fqrn: o.fqrn, source: staging, repoDir: o.repoDir, keysDir: o.keysDir, union: true });
    return { revision: published.revision, path: where.path };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
