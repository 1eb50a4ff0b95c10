/**
 * `cvmfs-ts snapshotter`: runs the containerd proxy snapshotter until SIGINT/SIGTERM.
 */
import { resolve } from 'node:path';
import { Snapshotter } from '../snapshotter/snapshotter';
import { serveSnapshotter } from '../snapshotter/grpc-server';
import { cliMountStarter } from '../snapshotter/repositories';

export interface SnapshotterCommandOptions {
  socket: string;
  root: string;
  cvmfsRoot: string;
  repository: string[];
  verbose?: boolean;
}

export const DEFAULT_SOCKET = '/run/cvmfs-ts/snapshotter.sock';
export const DEFAULT_ROOT = '/var/lib/cvmfs-ts/snapshotter';

export async function runSnapshotter(o: SnapshotterCommandOptions, bin: string): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  const snapshotter = await Snapshotter.open({
    root: resolve(o.root),
    cvmfsRoot: resolve(o.cvmfsRoot),
    repositories: o.repository,
    startRepository: cliMountStarter(bin),
    log,
  });
  const server = await serveSnapshotter(snapshotter, resolve(o.socket), { verbose: o.verbose, log });
  log(`snapshotter listening on ${server.socket} (root ${resolve(o.root)}, cvmfs root ${resolve(o.cvmfsRoot)}${o.repository.length ? `, remote layers from ${o.repository.join(', ')}` : ''})`);
  // Readiness for whoever started us: the socket accepts connections from now on.
  process.stdout.write(`ready ${server.socket}\n`);
  await new Promise<void>((done) => {
    const stop = () => void server.close().then(done);
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  snapshotter.close();
}
