/**
 * The metrics of one mount daemon (`cvmfs_ts_*`). Made by the mount's composition root only when
 * CVMFS_TS_METRICS_LISTEN is set, so a mount without metrics pays nothing.
 *
 * Two kinds of instruments:
 * - recorded as things happen: FUSE operations (on the hot path: pre-bound FastHistogram children
 *   and an errno map per operation, no prom-client call and no allocation per operation) and HTTP
 *   attempts (milliseconds each, so prom-client's labelled calls are cheap enough);
 * - read at scrape time from the counters the modules keep anyway (fetcher, downloaders, quota,
 *   mounted revision), so those modules know nothing of metrics.
 */
import { constants } from 'node:os';
import { Counter, Gauge, Histogram } from 'prom-client';

type BackgroundClass = 'readahead' | 'prefetch';
const BACKGROUND_CLASSES: readonly BackgroundClass[] = ['readahead', 'prefetch'];
import { FastHistogram, MetricsRegistry, type HistogramChild } from './registry';

/** FUSE latency buckets, seconds: 10 µs (a getattr answered from memory) to 10 s (a slow download). */
const FUSE_BUCKETS = [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** HTTP attempt buckets, seconds. */
const DOWNLOAD_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const ERRNO_NAMES = new Map<number, string>(Object.entries(constants.errno).map(([name, n]) => [n, name]));

/** `ENOENT` for -2 (or 2); the number itself for an errno this platform does not name. */
export function errnoName(errno: number): string {
  return ERRNO_NAMES.get(Math.abs(errno)) ?? String(Math.abs(errno));
}

/** One FUSE operation's instruments, bound once. */
export class FuseOpMeter {
  /** Failures by (negative) errno. */
  readonly errors = new Map<number, number>();

  constructor(
    readonly op: string,
    readonly latency: HistogramChild,
  ) {}

  /** An answered call: its duration and 0 or the negative errno it was answered with. */
  record(seconds: number, errno: number): void {
    this.latency.observe(seconds);
    if (errno !== 0) this.errors.set(errno, (this.errors.get(errno) ?? 0) + 1);
  }
}

/** How one HTTP attempt ended (the downloader's report, structurally). */
export interface DownloadAttempt {
  readonly host: string;
  readonly proxy: string;
  readonly outcome: string;
  readonly bytes: number;
  readonly seconds: number;
}

/** What the mount's modules already count, read at scrape time. */
export interface MountMetricSources {
  revision(): number;
  loadedCatalogs(): number;
  /** The fetcher's live counters. */
  readonly fetcher: { readonly hits: number; readonly misses: number; readonly downloads: number; readonly bytesInflated: number };
  readonly quota: { size(): number; capacity(): number; evictions(): { readonly objects: number; readonly bytes: number } };
  /** What readahead and prefetch downloads brought, and what readers used of it (fetch/background-ledger.ts). */
  readonly background?: {
    readonly counters: Readonly<Record<BackgroundClass, { readonly downloads: number; readonly bytes: number; readonly hits: number; readonly late: number; readonly unreadBytes: number }>>;
    readonly uncovered: number;
  };
  /** Downloads holding a slot, and waiting for one by class. */
  downloadSlots?(): { readonly running: number; readonly queued: Readonly<Record<'demand' | BackgroundClass, number>> };
  /** Main and external download managers. */
  readonly downloaders: readonly {
    readonly counters: { readonly hostFailovers: number; readonly proxyFailovers: number; readonly retries: number; readonly failures: number };
  }[];
}

export interface MountMetricsOptions {
  readonly fqrn: string;
  readonly version: string;
  /** The FUSE operations the adapter answers (one latency series each, exported from the start). */
  readonly fuseOps: readonly string[];
  readonly processMetrics?: boolean;
}

export class MountMetrics {
  readonly registry: MetricsRegistry;
  private readonly fuse = new Map<string, FuseOpMeter>();
  private readonly attempts: Counter<'host' | 'proxy' | 'outcome'>;
  private readonly downloadBytes: Counter<'host' | 'proxy'>;
  private readonly downloadSeconds: Histogram<'host' | 'proxy'>;
  private sources: MountMetricSources | undefined;

  constructor(o: MountMetricsOptions) {
    const registry = (this.registry = new MetricsRegistry({ processMetrics: o.processMetrics }));
    const registers = [registry.prom];
    const latency = new FastHistogram(
      'cvmfs_ts_fuse_op_duration_seconds',
      'Time from a FUSE request reaching the daemon to its answer, by operation.',
      FUSE_BUCKETS,
    );
    registry.add(latency);
    for (const op of o.fuseOps) this.fuse.set(op, new FuseOpMeter(op, latency.child({ op })));

    new Gauge({
      name: 'cvmfs_ts_info',
      help: 'The mounted repository and the cvmfs-ts version (always 1).',
      labelNames: ['repository', 'version'],
      registers,
    }).set({ repository: o.fqrn, version: o.version }, 1);

    const meters = [...this.fuse.values()];
    new Counter({
      name: 'cvmfs_ts_fuse_ops_total',
      help: 'FUSE requests answered, by operation.',
      labelNames: ['op'],
      registers,
      collect() {
        this.reset();
        for (const m of meters) this.inc({ op: m.op }, m.latency.count);
      },
    });
    new Counter({
      name: 'cvmfs_ts_fuse_errors_total',
      help: 'FUSE requests answered with an error, by operation and errno (EIO: the daemon failed; ENOENT: no such entry).',
      labelNames: ['op', 'errno'],
      registers,
      collect() {
        this.reset();
        for (const m of meters) for (const [errno, n] of m.errors) this.inc({ op: m.op, errno: errnoName(errno) }, n);
      },
    });

    this.attempts = new Counter({
      name: 'cvmfs_ts_download_attempts_total',
      help: 'HTTP download attempts by host, proxy (DIRECT: none) and outcome (ok, not_found, http_error, host_error, proxy_error, transfer_error, bad_data, aborted).',
      labelNames: ['host', 'proxy', 'outcome'],
      registers,
    });
    this.downloadBytes = new Counter({
      name: 'cvmfs_ts_download_bytes_total',
      help: 'Body bytes received by HTTP download attempts (failed ones included), by host and proxy.',
      labelNames: ['host', 'proxy'],
      registers,
    });
    this.downloadSeconds = new Histogram({
      name: 'cvmfs_ts_download_duration_seconds',
      help: 'Duration of HTTP download attempts (request to last byte), by host and proxy.',
      labelNames: ['host', 'proxy'],
      buckets: DOWNLOAD_BUCKETS,
      registers,
    });

    // Read at scrape time from the modules' own counters (see watch()); zero until then.
    const sources = () => this.sources;
    const fromSources = (kind: 'counter' | 'gauge', name: string, help: string, read: (s: MountMetricSources) => number): void => {
      if (kind === 'gauge') {
        new Gauge({
          name,
          help,
          registers,
          collect() {
            const s = sources();
            this.set(s ? read(s) : 0);
          },
        });
      } else {
        new Counter({
          name,
          help,
          registers,
          collect() {
            const s = sources();
            this.reset();
            this.inc(s ? read(s) : 0);
          },
        });
      }
    };
    const sum = (s: MountMetricSources | undefined, f: (c: MountMetricSources['downloaders'][number]['counters']) => number) =>
      s ? s.downloaders.reduce((acc, d) => acc + f(d.counters), 0) : 0;
    fromSources('gauge', 'cvmfs_ts_revision', 'Revision of the mounted root catalog.', (s) => s.revision());
    fromSources('gauge', 'cvmfs_ts_catalogs_loaded', 'Catalogs currently attached (root and nested).', (s) => s.loadedCatalogs());
    fromSources('counter', 'cvmfs_ts_cache_hits_total', 'Object requests served from the cache.', (s) => s.fetcher.hits);
    fromSources('counter', 'cvmfs_ts_cache_misses_total', 'Object requests that needed a download (or joined one in flight).', (s) => s.fetcher.misses);
    fromSources('counter', 'cvmfs_ts_cache_inserted_objects_total', 'Objects downloaded, verified and committed to the cache.', (s) => s.fetcher.downloads);
    fromSources('counter', 'cvmfs_ts_cache_inserted_bytes_total', 'Decompressed bytes committed to the cache.', (s) => s.fetcher.bytesInflated);
    fromSources('gauge', 'cvmfs_ts_cache_size_bytes', 'Bytes in the cache according to the quota ledger (0 without CVMFS_QUOTA_LIMIT).', (s) => s.quota.size());
    fromSources('gauge', 'cvmfs_ts_cache_limit_bytes', 'CVMFS_QUOTA_LIMIT in bytes (0: unmanaged).', (s) => s.quota.capacity());
    fromSources('counter', 'cvmfs_ts_cache_evictions_total', 'Objects this daemon evicted to stay under the quota.', (s) => s.quota.evictions().objects);
    fromSources('counter', 'cvmfs_ts_cache_evicted_bytes_total', 'Bytes this daemon evicted to stay under the quota.', (s) => s.quota.evictions().bytes);
    fromSources('counter', 'cvmfs_ts_download_retries_total', 'Same-path retries after transfer errors.', (s) => sum(s, (c) => c.retries));
    fromSources('counter', 'cvmfs_ts_download_failures_total', 'Downloads that failed on every host.', (s) => sum(s, (c) => c.failures));
    const perClass = (kind: 'counter' | 'gauge', name: string, help: string, read: (c: NonNullable<MountMetricSources['background']>['counters'][BackgroundClass]) => number): void => {
      const collect = function (this: Counter<'class'> | Gauge<'class'>): void {
        const bg = sources()?.background;
        if (kind === 'counter') this.reset();
        for (const cls of BACKGROUND_CLASSES) {
          const v = bg ? read(bg.counters[cls]) : 0;
          if (this instanceof Gauge) this.set({ class: cls }, v);
          else this.inc({ class: cls }, v);
        }
      };
      if (kind === 'gauge') new Gauge({ name, help, labelNames: ['class'], registers, collect });
      else new Counter({ name, help, labelNames: ['class'], registers, collect });
    };
    perClass('counter', 'cvmfs_ts_prefetch_downloads_total', 'Objects downloaded in the background, by class (readahead of chunks, prefetch of access profiles).', (c) => c.downloads);
    perClass('counter', 'cvmfs_ts_prefetch_bytes_total', 'Bytes received by background downloads (as stored on the server).', (c) => c.bytes);
    perClass('counter', 'cvmfs_ts_prefetch_hits_total', 'Reader requests answered from an object a background download had brought.', (c) => c.hits);
    perClass('gauge', 'cvmfs_ts_prefetch_unread_bytes', 'Bytes brought by background downloads that no reader has asked for yet (wasted, if never read).', (c) => c.unreadBytes);
    new Counter({
      name: 'cvmfs_ts_prefetch_misses_total',
      help: 'Reader requests that had to wait for a download: late = a background download of it was queued or running; uncovered = none was (counted once a prefetch has started).',
      labelNames: ['class', 'reason'],
      registers,
      collect() {
        const bg = sources()?.background;
        this.reset();
        for (const cls of BACKGROUND_CLASSES) this.inc({ class: cls, reason: 'late' }, bg ? bg.counters[cls].late : 0);
        this.inc({ class: 'prefetch', reason: 'uncovered' }, bg ? bg.uncovered : 0);
      },
    });
    new Gauge({
      name: 'cvmfs_ts_downloads_queued',
      help: 'Downloads waiting for a slot (CVMFS_TS_PARALLEL_DOWNLOADS), by class.',
      labelNames: ['class'],
      registers,
      collect() {
        const slots = sources()?.downloadSlots?.();
        for (const cls of ['demand', ...BACKGROUND_CLASSES] as const) this.set({ class: cls }, slots ? slots.queued[cls] : 0);
      },
    });
    fromSources('gauge', 'cvmfs_ts_downloads_running', 'Downloads holding a slot right now.', (s) => s.downloadSlots?.().running ?? 0);
    new Counter({
      name: 'cvmfs_ts_failovers_total',
      help: 'Times a download moved on to another host or to another proxy.',
      labelNames: ['kind'],
      registers,
      collect() {
        const s = sources();
        this.reset();
        this.inc({ kind: 'host' }, sum(s, (c) => c.hostFailovers));
        this.inc({ kind: 'proxy' }, sum(s, (c) => c.proxyFailovers));
      },
    });
  }

  /** The meter of a FUSE operation named in the options (bind once, outside the hot path). */
  fuseOp(op: string): FuseOpMeter {
    const m = this.fuse.get(op);
    if (!m) throw new Error(`no metrics for FUSE operation ${op}`);
    return m;
  }

  download(a: DownloadAttempt): void {
    this.attempts.inc({ host: a.host, proxy: a.proxy, outcome: a.outcome });
    this.downloadBytes.inc({ host: a.host, proxy: a.proxy }, a.bytes);
    this.downloadSeconds.observe({ host: a.host, proxy: a.proxy }, a.seconds);
  }

  /** Where the scrape-time figures come from (the mount, once it is built). */
  watch(sources: MountMetricSources): void {
    this.sources = sources;
  }
}
