/**
 * `cvmfs-ts thin mount|umount`: the command-line edge of src/thin. Repositories that a thin image
 * needs and that are not mounted yet are mounted here, with `cvmfs-ts mount` like a user would.
 */
import { join } from 'node:path';
import { CvmfsError } from '../errors';
import { mountThin, unmountThin, type RepositoryMounter } from '../thin/thin-mount';
import { loadThinImage, loadThinImageWithConfig } from '../thin/thin-source';
import { mountInBackground } from './mount-command';
import { publishAccessProfile, recordAccessProfile } from '../thin/record';
import { serializeAccessProfile } from '../format/access-profile';
import { writeFile } from 'node:fs/promises';

export interface ThinMountCommandOptions {
  upper?: string;
  state?: string;
  cvmfsRoot?: string;
  configRoot?: string;
  json?: boolean;
}

/** Starts `cvmfs-ts mount REPO /cvmfs/REPO` in the background, as mount(8) would. */
export function cliRepositoryMounter(bin: string, configRoot?: string): RepositoryMounter {
  return (repository, mountpoint) => mountInBackground(repository, mountpoint, { configRoot, log: logFileFor(repository) }, bin);
}

function logFileFor(repository: string): string {
  return join('/var/log/cvmfs-ts', `${repository}.log`);
}

export async function runThinMount(image: string, target: string, o: ThinMountCommandOptions, bin: string): Promise<void> {
  const thin = await loadThinImage(image);
  const result = await mountThin({
    image: thin,
    target,
    upper: o.upper,
    stateRoot: o.state,
    cvmfsRoot: o.cvmfsRoot,
    ensureMounted: cliRepositoryMounter(bin, o.configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT),
  });
  if (o.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`mounted ${thin.layers.length} layers of ${thin.origin || image} on ${result.target} (upper ${result.upperDir})\n`);
}

export async function runThinUmount(target: string, o: { state?: string; clean?: boolean }): Promise<void> {
  await unmountThin(target, { stateRoot: o.state, clean: o.clean });
}

export interface ThinRecordCommandOptions {
  seconds: number;
  env: string[];
  output?: string;
  repo?: string;
  fqrn?: string;
  keys: string;
  state?: string;
  cvmfsRoot?: string;
  configRoot?: string;
}

/** `thin record IMAGE -- CMD…`: records the access profile, writes it to --output and/or publishes it (--repo). */
export async function runThinRecord(image: string, command: string[], o: ThinRecordCommandOptions, bin: string): Promise<void> {
  if (!o.output && !o.repo) throw new CvmfsError('E_USAGE', 'thin record: give --output FILE and/or --repo DIR (with --fqrn) to keep the profile');
  if (o.repo && !o.fqrn) throw new CvmfsError('E_USAGE', 'thin record: --repo needs --fqrn');
  const { thin, run } = await loadThinImageWithConfig(image);
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const { profile, exit, ignored } = await recordAccessProfile({
    image: thin,
    command,
    seconds: o.seconds,
    env: [...(run?.env ?? []), ...o.env],
    workingDir: run?.workingDir,
    stateRoot: o.state,
    cvmfsRoot: o.cvmfsRoot,
    ensureMounted: cliRepositoryMounter(bin, o.configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT),
    log,
  });
  if (exit === 126 || exit === 127) log(`warning: the command could not be started in the image (exit ${exit}); the profile holds only what was read before`);
  const bytes = profile.objects.reduce((n, x) => n + x.size, 0);
  process.stdout.write(`recorded ${profile.objects.length} objects (${bytes} bytes) in ${o.seconds} s window; command ended: ${exit}${ignored ? `; ${ignored} objects outside the image left out` : ''}\n`);
  if (o.output) await writeFile(o.output, serializeAccessProfile(profile));
  if (o.repo) {
    const published = await publishAccessProfile({ profile, image: thin, repoDir: o.repo, fqrn: o.fqrn!, keysDir: o.keys });
    process.stdout.write(`published /${published.path} in revision ${published.revision} of ${o.fqrn}\n`);
  }
}
