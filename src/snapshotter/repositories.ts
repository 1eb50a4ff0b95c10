/**
 * CVMFS repositories under the client mount root (default /cvmfs): a thin image or a remote layer
 * needs REPO mounted at <cvmfsRoot>/REPO. When it is not (no directory, or an empty one — an idle
 * mount point), the snapshotter asks a MountStarter to mount it, once at a time per repository.
 */
import { spawn } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError } from './errors';
import { describeError } from '../errors';

/** Mounts `repository` at `mountpoint`; resolves once it is mounted. */
export type MountStarter = (repository: string, mountpoint: string) => Promise<void>;

/** The default starter: `cvmfs-ts mount REPO MOUNTPOINT` (returns once the mount is ready). */
export function cliMountStarter(bin: string): MountStarter {
  return (repository, mountpoint) =>
    new Promise((done, fail) => {
      const child = spawn(process.execPath, [bin, 'mount', repository, mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d));
      child.on('error', fail);
      child.on('close', (code) => {
        if (code === 0) done();
        else fail(new Error(`cvmfs-ts mount ${repository} exited with ${code}: ${stderr.trim()}`));
      });
    });
}

async function populated(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch {
    return false;
  }
}

export class Repositories {
  private readonly starting = new Map<string, Promise<void>>();

  constructor(
    readonly cvmfsRoot: string,
    private readonly start: MountStarter,
  ) {}

  mountpoint(repository: string): string {
    return join(this.cvmfsRoot, repository);
  }

  /** Makes sure `repository` is there, starting its mount if needed; E_UNAVAILABLE if it cannot be. */
  ensure(repository: string): Promise<void> {
    if (repository.includes('/') || repository === '.' || repository === '..' || repository === '') {
      return Promise.reject(new SnapshotError('E_INVALID', `bad repository name ${JSON.stringify(repository)}`));
    }
    // Concurrent Prepare calls of one image share a single mount attempt.
    let p = this.starting.get(repository);
    if (!p) {
      p = this.doEnsure(repository).finally(() => this.starting.delete(repository));
      this.starting.set(repository, p);
    }
    return p;
  }

  private async doEnsure(repository: string): Promise<void> {
    const mp = this.mountpoint(repository);
    if (await populated(mp)) return;
    // An autofs-managed root refuses mkdir; the starter then knows better.
    await mkdir(mp, { recursive: true }).catch(() => undefined);
    try {
      await this.start(repository, mp);
    } catch (e) {
      throw new SnapshotError('E_UNAVAILABLE', `repository ${repository} is not mounted at ${mp} and could not be mounted: ${describeError(e)}`, { cause: e });
    }
    if (!(await populated(mp))) throw new SnapshotError('E_UNAVAILABLE', `repository ${repository} is still not available at ${mp}`);
  }
}
