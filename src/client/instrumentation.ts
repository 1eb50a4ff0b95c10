/**
 * A mount's logs and metrics, wired in one place for the composition root (mount.ts): applies
 * CVMFS_SYSLOG_LEVEL / CVMFS_DEBUGLOG to the daemon's logger, makes the metrics when
 * CVMFS_TS_METRICS_LISTEN is set and serves them, and builds the observers the FUSE adapter and the
 * download managers report to. Without metrics and without a debug log, FUSE calls are not even
 * timed; downloads still report failovers, which are logged as warnings (as cvmfs does).
 */
import { resolve } from 'node:path';
import type { ClientSettings } from '../config/settings';
import { CvmfsError, describeError } from '../errors';
import { FUSE_OPS, type FuseObserver, type FuseOpRecorder } from '../fuse/adapter';
import type { AttemptReport, DownloadObserver } from '../net/downloader';
import { errnoName, MountMetrics, type MountMetricSources } from '../metrics/mount-metrics';
import { startMetricsServer, type MetricsServer } from '../metrics/server';
import type { ConfigurableLogger, Logger } from './log';
import { VERSION } from '../version';

export interface InstrumentationOptions {
  readonly fqrn: string;
  readonly mountpoint: string;
  readonly settings: Pick<ClientSettings, 'syslogLevel' | 'debugLog' | 'metricsListen'>;
  readonly log: ConfigurableLogger;
}

function fuseObserver(metrics: MountMetrics | undefined, log: Logger): FuseObserver {
  const recorder = (op: (typeof FUSE_OPS)[number]): FuseOpRecorder => {
    const meter = metrics?.fuseOp(op);
    if (!log.debugEnabled && meter) return (started, errno) => meter.record((performance.now() - started) / 1000, errno);
    return (started, errno, path) => {
      const seconds = (performance.now() - started) / 1000;
      meter?.record(seconds, errno);
      log.debug(`fuse ${op} ${path}${errno === 0 ? '' : `: ${errnoName(errno)}`} (${(seconds * 1000).toFixed(3)} ms)`);
    };
  };
  return Object.fromEntries(FUSE_OPS.map((op) => [op, recorder(op)])) as Record<(typeof FUSE_OPS)[number], FuseOpRecorder>;
}

function downloadObserver(metrics: MountMetrics | undefined, log: Logger): DownloadObserver {
  return {
    attempt: (r: AttemptReport) => {
      metrics?.download(r);
      if (log.debugEnabled) {
        const via = r.proxy === 'DIRECT' ? '' : ` via ${r.proxy}`;
        const why = r.detail ? `: ${r.detail}` : '';
        log.debug(`download ${r.host}${r.path}${via}: ${r.outcome}, ${r.bytes} bytes in ${(r.seconds * 1000).toFixed(1)} ms${why}`);
      }
    },
    failover: (kind, from, to, reason) => log.warn(`${kind} ${from} failed (${reason}); switching to ${to}`),
  };
}

export class MountInstrumentation {
  private server: MetricsServer | undefined;

  private constructor(
    private readonly o: InstrumentationOptions,
    readonly metrics: MountMetrics | undefined,
    /** For the FuseAdapter; undefined when nobody listens (no timing at all). */
    readonly fuse: FuseObserver | undefined,
    /** For every Downloader of the mount. */
    readonly downloads: DownloadObserver,
  ) {}

  /**
   * Configures the logger and makes the metrics; E_IO if the debug log cannot be opened, E_USAGE for
   * a metrics socket inside the mountpoint (binding it would make the daemon wait for itself).
   */
  static create(o: InstrumentationOptions): MountInstrumentation {
    o.log.configure({ syslogLevel: o.settings.syslogLevel, debugLog: o.settings.debugLog });
    const listen = o.settings.metricsListen;
    const mp = resolve(o.mountpoint);
    if (listen?.kind === 'unix' && (listen.path === mp || listen.path.startsWith(`${mp}/`))) {
      throw new CvmfsError('E_USAGE', `CVMFS_TS_METRICS_LISTEN=${listen.path} is inside the mountpoint ${mp}`);
    }
    const metrics = listen ? new MountMetrics({ fqrn: o.fqrn, version: VERSION, fuseOps: FUSE_OPS }) : undefined;
    const fuse = metrics || o.log.debugEnabled ? fuseObserver(metrics, o.log) : undefined;
    o.log.debug(`logging: CVMFS_SYSLOG_LEVEL=${o.settings.syslogLevel}, debug log ${o.settings.debugLog}`);
    return new MountInstrumentation(o, metrics, fuse, downloadObserver(metrics, o.log));
  }

  /**
   * Serves the metrics, if configured. Call before the FUSE mount (a path lookup must not go through
   * our own file system). A failure is logged and the mount goes on: monitoring is not worth an
   * unavailable repository.
   */
  async listen(): Promise<void> {
    const listen = this.o.settings.metricsListen;
    if (!this.metrics || !listen) return;
    try {
      this.server = await startMetricsServer(listen, this.metrics.registry);
      this.o.log.info(`metrics at ${this.server.address}${listen.kind === 'unix' ? ' (GET /metrics)' : '/metrics'}`);
    } catch (e) {
      this.o.log.error(`no metrics: ${describeError(e)}`);
    }
  }

  /** Where the scrape-time figures come from, once the mount is built. */
  watch(sources: MountMetricSources): void {
    this.metrics?.watch(sources);
  }

  async close(): Promise<void> {
    await this.server?.close();
    this.server = undefined;
  }
}
