/**
 * Where the time of a thin container start goes (issue 6: a missed target is reported with a
 * profile): the mount daemon (CVMFS_TS_METRICS_LISTEN) and the snapshotter (--metrics-listen)
 * serve Prometheus metrics on unix sockets in the work directory; the harness scrapes both right
 * before the clock starts and right when it stops (the task's output seen, before the container is
 * removed) and keeps the difference: FUSE requests by operation and the daemon's summed answer
 * time, HTTP downloads and their summed duration, snapshotter calls by method and their summed
 * time, and the CPU seconds of both daemons. One scrape is one HTTP GET per daemon, outside the
 * clock.
 */
import { existsSync } from 'node:fs';
import { scrape, type Scrape } from '../../test/helpers/prom-text';

/** Count and summed seconds of one FUSE operation or snapshotter method. */
export interface CountSeconds {
  readonly n: number;
  readonly s: number;
}

/** The metrics of both daemons at one moment (either missing when its socket does not answer). */
export interface MetricsPoint {
  readonly mount?: {
    readonly fuse: Readonly<Record<string, CountSeconds>>;
    readonly downloads: number;
    readonly downloadSeconds: number;
    readonly downloadBytes: number;
    readonly cacheHits: number;
    readonly cacheMisses: number;
    readonly cpuSeconds: number;
    readonly startTime: number;
  };
  readonly snapshotter?: {
    readonly methods: Readonly<Record<string, CountSeconds>>;
    readonly cpuSeconds: number;
    readonly startTime: number;
  };
}

/**
 * One run's (or, in a record, the median over the runs of each field) figures. Sums of durations
 * of requests that may run in parallel: they can add up to more than the wall time.
 */
export interface Breakdown {
  /** FUSE requests the mount daemon answered. */
  readonly fuse_ops?: number;
  /** Their summed answer time in the daemon (request reaching the daemon's JS thread → answer). */
  readonly fuse_daemon_s?: number;
  readonly fuse_by_op?: Record<string, CountSeconds>;
  /** HTTP download attempts of the mount daemon (demand, readahead and prefetch) and their summed duration. */
  readonly downloads?: number;
  readonly download_s?: number;
  readonly download_bytes?: number;
  readonly cache_hits?: number;
  readonly cache_misses?: number;
  /** CPU seconds (user + system) of the mount daemon. */
  readonly mount_cpu_s?: number;
  /** Snapshots API calls answered by our snapshotter and their summed time. */
  readonly snapshotter_calls?: number;
  readonly snapshotter_s?: number;
  readonly snapshotter_by_method?: Record<string, CountSeconds>;
  readonly snapshotter_cpu_s?: number;
}

export interface MetricsSockets {
  readonly mount: string;
  readonly snapshotter: string;
}

function byLabel(s: Scrape, family: string, label: string): Record<string, CountSeconds> {
  const out: Record<string, { n: number; s: number }> = {};
  for (const x of s.samples) {
    const key = x.labels[label];
    if (key === undefined) continue;
    if (x.name === `${family}_count`) (out[key] ??= { n: 0, s: 0 }).n += x.value;
    else if (x.name === `${family}_sum`) (out[key] ??= { n: 0, s: 0 }).s += x.value;
  }
  return out;
}

async function scrapeSocket(path: string): Promise<Scrape | undefined> {
  if (!existsSync(path)) return undefined;
  try {
    return await scrape({ socketPath: path, path: '/metrics' });
  } catch {
    return undefined; // the daemon went away (unmounted) — no figures rather than a failed run
  }
}

/** Scrapes both daemons (in parallel; each is one GET of /metrics). */
export async function scrapeMetrics(sockets: MetricsSockets): Promise<MetricsPoint> {
  const [m, s] = await Promise.all([scrapeSocket(sockets.mount), scrapeSocket(sockets.snapshotter)]);
  return {
    mount: m && {
      fuse: byLabel(m, 'cvmfs_ts_fuse_op_duration_seconds', 'op'),
      downloads: m.sum('cvmfs_ts_download_duration_seconds_count'),
      downloadSeconds: m.sum('cvmfs_ts_download_duration_seconds_sum'),
      downloadBytes: m.sum('cvmfs_ts_download_bytes_total'),
      cacheHits: m.sum('cvmfs_ts_cache_hits_total'),
      cacheMisses: m.sum('cvmfs_ts_cache_misses_total'),
      cpuSeconds: m.sum('process_cpu_seconds_total'),
      startTime: m.sum('process_start_time_seconds'),
    },
    snapshotter: s && {
      methods: byLabel(s, 'cvmfs_ts_snapshotter_request_duration_seconds', 'method'),
      cpuSeconds: s.sum('process_cpu_seconds_total'),
      startTime: s.sum('process_start_time_seconds'),
    },
  };
}

const r6 = (x: number) => Math.round(x * 1e6) / 1e6;

function median(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** b − a per key (a key missing before counts from 0). */
function diffCounts(a: Readonly<Record<string, CountSeconds>>, b: Readonly<Record<string, CountSeconds>>): Record<string, CountSeconds> {
  const out: Record<string, CountSeconds> = {};
  for (const [k, v] of Object.entries(b)) {
    const n = v.n - (a[k]?.n ?? 0);
    if (n > 0) out[k] = { n, s: r6(v.s - (a[k]?.s ?? 0)) };
  }
  return out;
}

const total = (c: Readonly<Record<string, CountSeconds>>) => Object.values(c).reduce((acc, v) => ({ n: acc.n + v.n, s: acc.s + v.s }), { n: 0, s: 0 });

/**
 * What happened between two points. A daemon that was not there before, or was restarted in
 * between (another process start time), counts from zero; one missing at the end gives no figures.
 */
export function diffMetrics(before: MetricsPoint, after: MetricsPoint): Breakdown {
  const out: Record<string, unknown> = {};
  const m1 = after.mount;
  if (m1) {
    const m0 = before.mount && before.mount.startTime === m1.startTime ? before.mount : undefined;
    const fuse = diffCounts(m0?.fuse ?? {}, m1.fuse);
    const t = total(fuse);
    Object.assign(out, {
      fuse_ops: t.n,
      fuse_daemon_s: r6(t.s),
      fuse_by_op: fuse,
      downloads: m1.downloads - (m0?.downloads ?? 0),
      download_s: r6(m1.downloadSeconds - (m0?.downloadSeconds ?? 0)),
      download_bytes: m1.downloadBytes - (m0?.downloadBytes ?? 0),
      cache_hits: m1.cacheHits - (m0?.cacheHits ?? 0),
      cache_misses: m1.cacheMisses - (m0?.cacheMisses ?? 0),
      mount_cpu_s: r6(m1.cpuSeconds - (m0?.cpuSeconds ?? 0)),
    });
  }
  const s1 = after.snapshotter;
  if (s1) {
    const s0 = before.snapshotter && before.snapshotter.startTime === s1.startTime ? before.snapshotter : undefined;
    const methods = diffCounts(s0?.methods ?? {}, s1.methods);
    const t = total(methods);
    Object.assign(out, {
      snapshotter_calls: t.n,
      snapshotter_s: r6(t.s),
      snapshotter_by_method: methods,
      snapshotter_cpu_s: r6(s1.cpuSeconds - (s0?.cpuSeconds ?? 0)),
    });
  }
  return out as Breakdown;
}

const SCALARS = [
  'fuse_ops',
  'fuse_daemon_s',
  'downloads',
  'download_s',
  'download_bytes',
  'cache_hits',
  'cache_misses',
  'mount_cpu_s',
  'snapshotter_calls',
  'snapshotter_s',
  'snapshotter_cpu_s',
] as const;

function medianCounts(runs: readonly (Readonly<Record<string, CountSeconds>> | undefined)[]): Record<string, CountSeconds> {
  const keys = [...new Set(runs.flatMap((r) => Object.keys(r ?? {})))].sort();
  return Object.fromEntries(keys.map((k) => [k, { n: median(runs.map((r) => r?.[k]?.n ?? 0))!, s: r6(median(runs.map((r) => r?.[k]?.s ?? 0))!) }]));
}

/** Median over the runs of each field (per operation and method too); undefined without runs. */
export function medianBreakdown(runs: readonly Breakdown[]): Breakdown | undefined {
  if (runs.length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const k of SCALARS) {
    const xs = runs.flatMap((r) => (r[k] === undefined ? [] : [r[k]]));
    if (xs.length > 0) out[k] = r6(median(xs)!);
  }
  if (runs.some((r) => r.fuse_by_op)) out.fuse_by_op = medianCounts(runs.map((r) => r.fuse_by_op));
  if (runs.some((r) => r.snapshotter_by_method)) out.snapshotter_by_method = medianCounts(runs.map((r) => r.snapshotter_by_method));
  return out as Breakdown;
}

/** One line for the log. */
export function describeBreakdown(b: Breakdown): string {
  const ms = (s: number | undefined) => `${((s ?? 0) * 1000).toFixed(0)} ms`;
  const top = (c: Record<string, CountSeconds> | undefined) =>
    Object.entries(c ?? {})
      .sort((x, y) => y[1].s - x[1].s)
      .slice(0, 3)
      .map(([k, v]) => `${k} ${v.n}/${ms(v.s)}`)
      .join(', ');
  const parts: string[] = [];
  if (b.snapshotter_calls !== undefined) parts.push(`snapshotter ${b.snapshotter_calls} calls ${ms(b.snapshotter_s)} (${top(b.snapshotter_by_method)}), cpu ${ms(b.snapshotter_cpu_s)}`);
  if (b.fuse_ops !== undefined) {
    parts.push(`fuse ${b.fuse_ops} ops ${ms(b.fuse_daemon_s)} (${top(b.fuse_by_op)}), cpu ${ms(b.mount_cpu_s)}`);
    parts.push(`${b.downloads ?? 0} downloads ${ms(b.download_s)}`);
  }
  return parts.join('; ');
}
