/**
 * The snapshotter's metrics (`cvmfs_ts_snapshotter_*`), made by `cvmfs-ts snapshotter` when it is
 * given --metrics-listen. gRPC calls take milliseconds (directories, SQLite, sometimes a repository
 * mount), so prom-client's labelled calls are cheap enough here.
 */
import { Counter, Gauge, Histogram } from 'prom-client';
import { MetricsRegistry } from './registry';

const REQUEST_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const REPOSITORY_MOUNT_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export interface SnapshotterMetricsOptions {
  readonly version: string;
  readonly processMetrics?: boolean;
}

export class SnapshotterMetrics {
  readonly registry: MetricsRegistry;
  private readonly requests: Counter<'method' | 'code'>;
  private readonly requestSeconds: Histogram<'method'>;
  private readonly mounts: Counter<'kind'>;
  private readonly thinMounts: Counter;
  private readonly remoteLayers: Counter<'result'>;
  private readonly thinCommits: Counter;
  private readonly repositoryMounts: Counter<'outcome'>;
  private readonly repositoryMountSeconds: Histogram;
  private snapshots: (() => Iterable<{ readonly kind: string }>) | undefined;

  constructor(o: SnapshotterMetricsOptions) {
    this.registry = new MetricsRegistry({ processMetrics: o.processMetrics });
    const registers = [this.registry.prom];
    new Gauge({ name: 'cvmfs_ts_snapshotter_info', help: 'The cvmfs-ts version (always 1).', labelNames: ['version'], registers }).set(
      { version: o.version },
      1,
    );
    this.requests = new Counter({
      name: 'cvmfs_ts_snapshotter_requests_total',
      help: 'Snapshots API calls by method (Prepare, View, Mounts, Commit, …) and gRPC status code.',
      labelNames: ['method', 'code'],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: 'cvmfs_ts_snapshotter_request_duration_seconds',
      help: 'Time to answer a Snapshots API call, by method.',
      labelNames: ['method'],
      buckets: REQUEST_BUCKETS,
      registers,
    });
    this.mounts = new Counter({
      name: 'cvmfs_ts_snapshotter_mounts_total',
      help: 'Mount lists handed to containerd (Prepare, View, Mounts), by snapshot kind.',
      labelNames: ['kind'],
      registers,
    });
    this.thinMounts = new Counter({
      name: 'cvmfs_ts_snapshotter_thin_image_mounts_total',
      help: 'Mount lists whose lower directories came from a thin image (CVMFS layer directories).',
      registers,
    });
    this.remoteLayers = new Counter({
      name: 'cvmfs_ts_snapshotter_remote_layer_lookups_total',
      help: 'Layers containerd was about to unpack, by whether a repository held them (hit: no download, no unpack).',
      labelNames: ['result'],
      registers,
    });
    this.thinCommits = new Counter({
      name: 'cvmfs_ts_snapshotter_thin_layers_committed_total',
      help: 'Committed layers that hold a thin image description (thin.json).',
      registers,
    });
    this.repositoryMounts = new Counter({
      name: 'cvmfs_ts_snapshotter_repository_mounts_total',
      help: 'Repository mounts the snapshotter started on demand, by outcome.',
      labelNames: ['outcome'],
      registers,
    });
    this.repositoryMountSeconds = new Histogram({
      name: 'cvmfs_ts_snapshotter_repository_mount_duration_seconds',
      help: 'Time to mount a repository on demand.',
      buckets: REPOSITORY_MOUNT_BUCKETS,
      registers,
    });
    for (const result of ['hit', 'miss']) this.remoteLayers.inc({ result }, 0);
    for (const kind of ['active', 'view']) this.mounts.inc({ kind }, 0);
    const snapshots = () => this.snapshots;
    new Gauge({
      name: 'cvmfs_ts_snapshotter_snapshots',
      help: 'Snapshots in the metadata store, by kind.',
      labelNames: ['kind'],
      registers,
      collect() {
        const all = snapshots();
        if (!all) return;
        const counts = new Map<string, number>([
          ['active', 0],
          ['view', 0],
          ['committed', 0],
        ]);
        for (const s of all()) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
        for (const [kind, n] of counts) this.set({ kind }, n);
      },
    });
  }

  /** One answered gRPC call; `code` is the status name (OK, NOT_FOUND, …). */
  request(method: string, seconds: number, code: string): void {
    this.requests.inc({ method, code });
    this.requestSeconds.observe({ method }, seconds);
  }

  /** SnapshotterEvents (snapshotter.ts), structurally. */
  remoteLayer(found: boolean): void {
    this.remoteLayers.inc({ result: found ? 'hit' : 'miss' });
  }

  mounted(kind: string, thin: boolean): void {
    this.mounts.inc({ kind });
    if (thin) this.thinMounts.inc();
  }

  thinCommitted(): void {
    this.thinCommits.inc();
  }

  repositoryMount(ok: boolean, seconds: number): void {
    this.repositoryMounts.inc({ outcome: ok ? 'ok' : 'failed' });
    this.repositoryMountSeconds.observe(seconds);
  }

  /** `start` (a repository mount starter) with its calls counted and timed. */
  timeRepositoryMounts<A extends unknown[]>(start: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
    return async (...args) => {
      const started = performance.now();
      try {
        await start(...args);
        this.repositoryMount(true, (performance.now() - started) / 1000);
      } catch (e) {
        this.repositoryMount(false, (performance.now() - started) / 1000);
        throw e;
      }
    };
  }

  /** Where the snapshot gauge reads from (the metadata store, at scrape time). */
  watch(snapshots: () => Iterable<{ readonly kind: string }>): void {
    this.snapshots = snapshots;
  }
}
