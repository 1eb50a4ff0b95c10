/**
 * `cvmfs-ts snapshotter`: runs the containerd proxy snapshotter until SIGINT/SIGTERM.
 */
import { resolve } from 'node:path';
import { Snapshotter } from '../snapshotter/snapshotter';
import { serveSnapshotter } from '../snapshotter/grpc-server';
import { cliMountStarter } from '../snapshotter/repositories';
import { SystemdNotifier } from '../system/sd-notify';
import { CvmfsError, describeError } from '../errors';
import { LISTEN_ADDRESS_FORMS, parseListenAddress } from '../metrics/listen-address';
import { SnapshotterMetrics } from '../metrics/snapshotter-metrics';
import { startMetricsServer, type MetricsServer } from '../metrics/server';
import { VERSION } from '../version';

export interface SnapshotterCommandOptions {
  socket: string;
  root: string;
  cvmfsRoot: string;
  repository: string[];
  verbose?: boolean;
  /** Serve Prometheus metrics at /metrics on HOST:PORT or a unix socket path. */
  metricsListen?: string;
}

export const DEFAULT_SOCKET = '/run/cvmfs-ts/snapshotter.sock';
export const DEFAULT_ROOT = '/var/lib/cvmfs-ts/snapshotter';

export async function runSnapshotter(o: SnapshotterCommandOptions, bin: string): Promise<void> {
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Taken before any repository mount is started, so that those never inherit the socket.
  const systemd = SystemdNotifier.fromEnvironment();
  const tellSystemd = (sent: Promise<void> | undefined) => void sent?.catch((e) => log(`systemd notification: ${describeError(e)}`));
  const metricsAddress = o.metricsListen === undefined ? undefined : parseListenAddress(o.metricsListen);
  if (o.metricsListen !== undefined && !metricsAddress) {
    throw new CvmfsError('E_USAGE', `--metrics-listen '${o.metricsListen}': expected ${LISTEN_ADDRESS_FORMS}`);
  }
  const metrics = metricsAddress ? new SnapshotterMetrics({ version: VERSION }) : undefined;
  const starter = cliMountStarter(bin);
  const snapshotter = await Snapshotter.open({
    root: resolve(o.root),
    cvmfsRoot: resolve(o.cvmfsRoot),
    repositories: o.repository,
    startRepository: metrics ? metrics.timeRepositoryMounts(starter) : starter,
    log,
    events: metrics,
  });
  metrics?.watch(() => snapshotter.list([]));
  // Asked for on the command line: not being able to serve it is an error, before containerd connects.
  let metricsServer: MetricsServer | undefined;
  if (metrics && metricsAddress) {
    metricsServer = await startMetricsServer(metricsAddress, metrics.registry).catch((e: unknown) => {
      snapshotter.close();
      throw e;
    });
    log(`metrics at ${metricsServer.address}${metricsAddress.kind === 'unix' ? ' (GET /metrics)' : '/metrics'}`);
  }
  const server = await serveSnapshotter(snapshotter, resolve(o.socket), { verbose: o.verbose, log, metrics });
  log(`snapshotter listening on ${server.socket} (root ${resolve(o.root)}, cvmfs root ${resolve(o.cvmfsRoot)}${o.repository.length ? `, remote layers from ${o.repository.join(', ')}` : ''})`);
  // Readiness for whoever started us: the socket accepts connections from now on.
  process.stdout.write(`ready ${server.socket}\n`);
  tellSystemd(systemd?.ready(`listening on ${server.socket}`));
  await new Promise<void>((done) => {
    const stop = () => {
      tellSystemd(systemd?.stopping('closing the socket'));
      void Promise.all([server.close(), metricsServer?.close()]).then(() => done());
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  snapshotter.close();
}
