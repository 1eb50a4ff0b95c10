/**
 * `cvmfs-ts thin mount|umount`: the command-line edge of src/thin. Repositories that a thin image
 * needs and that are not mounted yet are mounted here, with `cvmfs-ts mount` like a user would.
 */
import { join } from 'node:path';
import { mountThin, unmountThin, type RepositoryMounter } from '../thin/thin-mount';
import { loadThinImage } from '../thin/thin-source';
import { mountInBackground } from './mount-command';

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
