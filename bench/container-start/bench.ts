/**
 * The bench/container-start harness: for each image and mode, `runs` timed container starts in an
 * Environment, with bytes over the link and HTTP requests per run.
 */
import { performance } from 'node:perf_hooks';
import { Interrupted, sleep } from '../lib/proc';
import { describeBreakdown, diffMetrics, medianBreakdown, type Breakdown, type MetricsPoint } from './breakdown';
import type { BenchImage, Environment, Snapshot } from './environment';
import type { Mode, ModeContext } from './modes';

export interface BenchRecord {
  readonly image: string;
  readonly mode: string;
  readonly runs_s: number[];
  readonly median_s: number | null;
  readonly min_s: number | null;
  readonly max_s: number | null;
  /** Median over the runs of the bytes through the link (both directions, with headers). */
  readonly bytes_over_link: number | null;
  /** Median over the runs of the HTTP requests to the registry and the repository server. */
  readonly requests: number | null;
  readonly bytes_runs: number[];
  readonly requests_runs: number[];
  readonly requests_registry: number | null;
  readonly requests_cvmfs: number | null;
  /** Median seconds of the repository mount done before the clock (thin-cold, thin-warm). */
  readonly mount_s?: number;
  /** Median seconds from the start of the clock to the end of each marked phase (e.g. pull). */
  readonly phases_s?: Record<string, number>;
  /**
   * Modes with an afterRun (thin-cold, thin-cold-plain): the daemon's `prefetch status` after each
   * run, once its background downloads settled — median over the runs of each figure (prefetch_bytes:
   * bytes the profile prefetch downloaded; prefetch_unread_bytes: of those, never read (wasted);
   * prefetch_hits; prefetch_late: readers that joined a prefetch still downloading;
   * reader_misses_uncovered: reader downloads no prefetch covered; readahead_*; settle_s: seconds the
   * prefetch still ran after the clock; bytes_after_clock: bytes over the link meanwhile).
   */
  readonly prefetch?: Record<string, number>;
  /** The same figures per run. */
  readonly prefetch_runs?: Record<string, number>[];
  /**
   * Modes through our snapshotter (thin-*): where the time went, from the mount daemon's and the
   * snapshotter's metrics scraped right before the clock and when it stopped — median over the runs
   * of each field (breakdown.ts: FUSE requests and the daemon's summed answer time, by operation;
   * downloads and their summed duration; snapshotter calls and their summed time, by method; CPU
   * seconds of both daemons).
   */
  readonly breakdown?: Breakdown;
  /** The same per run. */
  readonly breakdown_runs?: Breakdown[];
  readonly image_compressed_bytes: number;
  readonly image_unpacked_bytes: number;
  readonly rate_mbit: number;
  readonly rtt_ms: number;
  /** Set when the mode failed for this image (the runs before the failure are kept). */
  readonly error?: string;
}

export function median(xs: readonly number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

interface RunSample {
  seconds: number;
  bytes: number;
  registry: number;
  cvmfs: number;
  extra: Record<string, number>;
  phases: Record<string, number>;
  after?: Record<string, number>;
  breakdown?: Breakdown;
}

function diff(a: Snapshot, b: Snapshot) {
  return {
    bytes: b.link.down - a.link.down + (b.link.up - a.link.up),
    registry: b.requests.registry - a.requests.registry,
    cvmfs: b.requests.cvmfs - a.requests.cvmfs,
  };
}

/** One line of prefetch figures for the log. */
export function describePrefetch(p: Record<string, number>): string {
  const mb = (b: number | undefined) => `${((b ?? 0) / 1e6).toFixed(2)} MB`;
  if (!p.prefetch_enabled && !p.readahead_downloads) return `prefetch off, ${p.reader_misses_uncovered ?? 0} uncovered`;
  return (
    `prefetch ${mb(p.prefetch_bytes)} (${p.profile_objects_done ?? 0}/${p.profile_objects ?? 0} objects, ${p.profile_objects_done_at_clock ?? 0} at the clock), ` +
    `unread ${mb(p.prefetch_unread_bytes)}, ${p.prefetch_hits ?? 0} hits, ${p.prefetch_late ?? 0} late, ${p.reader_misses_uncovered ?? 0} uncovered; ` +
    `readahead ${mb(p.readahead_bytes)} (unread ${mb(p.readahead_unread_bytes)}); settled ${(p.settle_s ?? 0).toFixed(1)} s after the clock, +${mb(p.bytes_after_clock)}`
  );
}

export interface BenchOptions {
  readonly env: Environment;
  readonly images: readonly BenchImage[];
  readonly modes: readonly Mode[];
  readonly runs: number;
  readonly log: (line: string) => void;
  /** Called after each (image, mode) with the records so far (for partial results). */
  readonly onRecord?: (records: readonly BenchRecord[]) => Promise<void> | void;
}

export async function runBench(o: BenchOptions): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  for (const image of o.images) {
    for (const mode of o.modes) {
      let t0 = 0;
      let phases: Record<string, number> = {};
      // Set while a measured run is under way and the mode wants a breakdown: the scrape at the clock's stop.
      let stopScrape: { started: boolean; point?: Promise<MetricsPoint | undefined> } | undefined;
      const ctx: ModeContext = {
        env: o.env,
        image,
        log: o.log,
        id: (run) => `cvb-${image.name}-${mode.name}-${Date.now().toString(36)}-${run}`,
        phase: (name) => void (phases[name] = (performance.now() - t0) / 1000),
        clockStopped: () => {
          if (!stopScrape || stopScrape.started) return;
          stopScrape.started = true;
          stopScrape.point = o.env.scrapeMetrics();
          stopScrape.point.catch(() => undefined);
        },
      };
      const samples: RunSample[] = [];
      let error: string | undefined;
      const started = performance.now();
      try {
        await o.env.ensureServers();
        await mode.setup?.(ctx);
        for (let i = 0; i < o.runs; i++) {
          for (let attempt = 0; ; attempt++) {
            try {
              await o.env.ensureServers();
              const extra = (await mode.prepare?.(ctx, i)) ?? {};
              const before = await o.env.snapshot();
              const metricsBefore = mode.breakdown ? await o.env.scrapeMetrics() : undefined;
              stopScrape = metricsBefore ? { started: false } : undefined;
              phases = {};
              t0 = performance.now();
              const seenAt = await mode.measure(ctx, i);
              const metricsAtClock = stopScrape ? await (stopScrape.point ?? o.env.scrapeMetrics()) : undefined;
              stopScrape = undefined;
              const breakdown = metricsBefore && metricsAtClock ? diffMetrics(metricsBefore, metricsAtClock) : undefined;
              // Access logs are written when a response completes; give the last line a moment.
              await sleep(200);
              const atClock = await o.env.snapshot();
              const d = diff(before, atClock);
              let after: Record<string, number> | undefined;
              if (mode.afterRun) {
                after = { ...((await mode.afterRun(ctx, i)) ?? {}) };
                after.bytes_after_clock = diff(atClock, await o.env.snapshot()).bytes;
              }
              samples.push({ seconds: (seenAt - t0) / 1000, ...d, extra, phases, after, breakdown });
              const shown = Object.entries({ ...extra, ...phases }).map(([k, v]) => `${k} ${v.toFixed(2)} s`);
              o.log(
                `  ${image.name} ${mode.name} #${i + 1}: ${((seenAt - t0) / 1000).toFixed(3)} s, ${(d.bytes / 1e6).toFixed(2)} MB, ${d.registry}+${d.cvmfs} requests` +
                  (shown.length ? ` (${shown.join(', ')})` : '') +
                  (after ? `; ${describePrefetch(after)}` : '') +
                  (breakdown ? `; ${describeBreakdown(breakdown)}` : ''),
              );
              break;
            } catch (e) {
              // A server killed from outside (another job's `pkill -x docker-registry`) costs one retry, not the mode.
              if (e instanceof Interrupted || o.env.o.cleanup.interruptedBy || attempt > 0) throw e;
              const restarted = await o.env.ensureServers();
              if (restarted.length === 0) throw e;
              o.log(`  ${image.name} ${mode.name} #${i + 1}: failed while ${restarted.join(', ')} had exited; run again`);
            }
          }
        }
        await mode.teardown?.(ctx);
      } catch (e) {
        if (e instanceof Interrupted || o.env.o.cleanup.interruptedBy) throw e;
        error = (e as Error).message.slice(0, 2000);
        o.log(`  ${image.name} ${mode.name} FAILED: ${error}`);
        await mode.teardown?.(ctx).catch(() => undefined);
      }
      const secs = samples.map((s) => s.seconds);
      const extraKeys = new Set(samples.flatMap((s) => Object.keys(s.extra)));
      const mountMedian = extraKeys.has('mount_s') ? median(samples.map((s) => s.extra.mount_s ?? 0)) : null;
      const phaseNames = [...new Set(samples.flatMap((s) => Object.keys(s.phases)))];
      const phasesMedian = Object.fromEntries(phaseNames.map((n) => [n, round(median(samples.map((s) => s.phases[n] ?? 0))!)]));
      const afters = samples.flatMap((s) => (s.after ? [s.after] : []));
      const afterKeys = [...new Set(afters.flatMap((a) => Object.keys(a)))];
      const prefetch = Object.fromEntries(afterKeys.map((k) => [k, round(median(afters.map((a) => a[k] ?? 0))!)]));
      const breakdowns = samples.flatMap((s) => (s.breakdown ? [s.breakdown] : []));
      const breakdown = medianBreakdown(breakdowns);
      const record: BenchRecord = {
        image: image.name,
        mode: mode.name,
        runs_s: secs.map((s) => round(s)),
        median_s: secs.length ? round(median(secs)!) : null,
        min_s: secs.length ? round(Math.min(...secs)) : null,
        max_s: secs.length ? round(Math.max(...secs)) : null,
        bytes_over_link: median(samples.map((s) => s.bytes)),
        requests: median(samples.map((s) => s.registry + s.cvmfs)),
        bytes_runs: samples.map((s) => s.bytes),
        requests_runs: samples.map((s) => s.registry + s.cvmfs),
        requests_registry: median(samples.map((s) => s.registry)),
        requests_cvmfs: median(samples.map((s) => s.cvmfs)),
        ...(mountMedian !== null ? { mount_s: round(mountMedian) } : {}),
        ...(phaseNames.length ? { phases_s: phasesMedian } : {}),
        ...(afters.length ? { prefetch, prefetch_runs: afters } : {}),
        ...(breakdown ? { breakdown, breakdown_runs: breakdowns } : {}),
        image_compressed_bytes: image.compressedBytes,
        image_unpacked_bytes: image.unpackedBytes,
        rate_mbit: o.env.o.rateMbit,
        rtt_ms: o.env.o.rttMs,
        ...(error ? { error } : {}),
      };
      records.push(record);
      o.log(
        `${image.name} ${mode.name}: median ${record.median_s ?? '-'} s (min ${record.min_s ?? '-'}, max ${record.max_s ?? '-'}), ` +
          `${((record.bytes_over_link ?? 0) / 1e6).toFixed(2)} MB over the link, ${record.requests ?? '-'} requests ` +
          `[${((performance.now() - started) / 1000).toFixed(0)} s]`,
      );
      await o.onRecord?.(records);
    }
  }
  return records;
}
