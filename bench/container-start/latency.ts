/**
 * Issue 8's target "on-demand read latency during a running prefetch ≤ 20% above an idle
 * client's", measured over the emulated link of bench/container-start:
 *
 * - K small files (1–64 KiB) of the image's layers, under usr/share, whose content is not in the
 *   image's access profile (nor twice in the set), picked deterministically (sorted paths, evenly
 *   spaced);
 * - idle: repository freshly mounted with an empty cache; the files are stat'ed first (their
 *   catalogs attached, no data read), then read one at a time — open, read to the end, close — by a
 *   separate process that times each read;
 * - prefetch: the same, mounted again with an empty cache, but right before the reads the daemon
 *   is told `prefetch profile PATH` of the image's profile (what the snapshotter asks at Prepare), so
 *   the reads compete with the profile's downloads. `prefetch status` after the reads shows whether
 *   the prefetch was still running when the last read finished.
 *
 * Median and p90 of both, and their ratios (the target: median ratio ≤ 1.2). `rounds` > 1 repeats
 * idle + prefetch and pools the samples. Writes OUT/prefetch-latency.{json,md}.
 */
import { lstat, mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { getAttribute } from '@napi-rs/xattr';
import { parseAccessProfile } from '../../src/format/access-profile';
import { describeMachine, type MachineInfo } from '../lib/processes';
import { run } from '../lib/proc';
import type { BenchImage, Environment } from './environment';

export interface LatencyOptions {
  readonly env: Environment;
  readonly image: BenchImage;
  /** Files read per phase (default 40). */
  readonly files?: number;
  /** Idle + prefetch repetitions, pooled (default 1). */
  readonly rounds?: number;
  readonly outDir: string;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly log: (line: string) => void;
}

export interface PhaseResult {
  /** Per read (open + read to the end + close), milliseconds, in read order; rounds appended. */
  readonly ms: number[];
  readonly median_ms: number;
  readonly p90_ms: number;
  readonly mean_ms: number;
  /** Seconds the K reads took, per round. */
  readonly series_s: number[];
  /** Bytes over the link during the reads, per round. */
  readonly link_bytes: number[];
}

export interface LatencyResult {
  readonly date: string;
  readonly command: string;
  readonly machine: MachineInfo;
  readonly rate_mbit: number;
  readonly rtt_ms: number;
  readonly image: string;
  readonly profile: { readonly path: string; readonly objects: number; readonly bytes: number };
  readonly files: readonly { readonly path: string; readonly size: number }[];
  readonly candidates: number;
  readonly rounds: number;
  readonly idle: PhaseResult;
  readonly prefetch: PhaseResult & {
    /** The daemon's answer to `prefetch profile`, per round. */
    readonly answers: string[];
    /** `prefetch status` right after the last read, per round. */
    readonly status_after_reads: Record<string, number>[];
  };
  readonly ratio_median: number;
  readonly ratio_p90: number;
  /** ratio_median ≤ 1.2, and the prefetch was still running when the reads ended (else not measured). */
  readonly target_met: boolean | null;
}

/** Times open + read-to-end + close of each argument, one after the other; prints JSON. */
const READER = `
const fs = require('fs');
const buf = Buffer.allocUnsafe(1 << 16);
const out = [];
for (const f of process.argv.slice(1)) {
  const t0 = process.hrtime.bigint();
  const fd = fs.openSync(f, 'r');
  let n = 0;
  for (;;) { const r = fs.readSync(fd, buf, 0, buf.length, null); if (r === 0) break; n += r; }
  fs.closeSync(fd);
  out.push({ ms: Number(process.hrtime.bigint() - t0) / 1e6, bytes: n });
}
process.stdout.write(JSON.stringify(out));
`;

const MIN_SIZE = 1024;
const MAX_SIZE = 64 * 1024;
const MAX_VISITED = 100_000;

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/** Regular files of size [MIN_SIZE, MAX_SIZE] under `dir`, with their sizes (depth first, sorted). */
async function walk(dir: string, out: { path: string; size: number }[], budget: { left: number }): Promise<void> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const e of entries) {
    if (budget.left-- <= 0) return;
    const p = join(dir, e.name);
    if (e.isDirectory()) await walk(p, out, budget);
    else if (e.isFile()) {
      const st = await lstat(p);
      if (st.size >= MIN_SIZE && st.size <= MAX_SIZE) out.push({ path: p, size: st.size });
    }
  }
}

async function readFiles(paths: readonly string[]): Promise<{ ms: number; bytes: number }[]> {
  const r = await run([process.execPath, '-e', READER, ...paths], { timeoutMs: 600_000 });
  return JSON.parse(r.stdout) as { ms: number; bytes: number }[];
}

export async function runPrefetchLatency(o: LatencyOptions): Promise<LatencyResult> {
  const { env, image, log } = o;
  const k = o.files ?? 40;
  const rounds = o.rounds ?? 1;
  const thin = await env.thinImage(image);
  if (!thin.profile) throw new Error(`${env.thinJsonPath(image)} names no access profile`);
  const profilePath = thin.profile.path;

  // The files: from a fresh mount, outside any measurement.
  await env.unmountRepository();
  await env.wipeCache();
  await env.mountRepository();
  const profile = parseAccessProfile(await readFile(join(env.cvmfsRoot, thin.profile.repository, profilePath), 'utf8'));
  const inProfile = new Set(profile.objects.map((x) => x.hash.toString()));
  const profileBytes = profile.objects.reduce((n, x) => n + x.size, 0);
  if (profile.objects.length === 0) throw new Error(`the access profile of ${image.name} (${profilePath}) is empty`);
  const candidates: { path: string; size: number }[] = [];
  const budget = { left: MAX_VISITED };
  for (const layer of [...thin.layers].reverse()) await walk(join(env.cvmfsRoot, layer.repository, layer.path, 'usr/share'), candidates, budget);
  const seen = new Set<string>();
  const usable: { path: string; size: number }[] = [];
  for (const c of candidates.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const hash = (await getAttribute(c.path, 'user.hash').catch(() => null))?.toString();
    if (!hash || inProfile.has(hash) || seen.has(hash)) continue;
    seen.add(hash);
    usable.push(c);
  }
  await env.unmountRepository();
  if (usable.length < k) throw new Error(`only ${usable.length} usable small files under usr/share of ${image.name} (wanted ${k})`);
  const step = usable.length / k;
  const files = Array.from({ length: k }, (_, i) => usable[Math.floor(i * step + step / 2)]!);
  const paths = files.map((f) => f.path);
  const rel = (p: string) => p.slice(env.cvmfsRoot.length + 1);
  log(
    `latency: ${k} files of ${image.name} (of ${usable.length} usable, ${candidates.length} small files under usr/share; ${(files.reduce((n, f) => n + f.size, 0) / 1e3).toFixed(0)} kB), ` +
      `profile ${profile.objects.length} objects, ${(profileBytes / 1e6).toFixed(1)} MB`,
  );

  const idle = { ms: [] as number[], series_s: [] as number[], link_bytes: [] as number[] };
  const busy = { ms: [] as number[], series_s: [] as number[], link_bytes: [] as number[], answers: [] as string[], status_after_reads: [] as Record<string, number>[] };
  for (let round = 0; round < rounds; round++) {
    for (const phase of ['idle', 'prefetch'] as const) {
      await env.ensureServers();
      await env.unmountRepository();
      await env.wipeCache();
      await env.mountRepository();
      await env.dropCaches();
      for (const p of paths) await stat(p); // catalogs attached: the reads below fetch data only
      const target = phase === 'idle' ? idle : busy;
      if (phase === 'prefetch') busy.answers.push((await env.talk(`prefetch profile /${profilePath}`)).trim());
      const before = await env.link.counters();
      const t0 = performance.now();
      const reads = await readFiles(paths);
      const seconds = (performance.now() - t0) / 1000;
      const after = await env.link.counters();
      if (phase === 'prefetch') busy.status_after_reads.push(await env.prefetchStatus());
      reads.forEach((r, i) => {
        if (r.bytes !== files[i]!.size) throw new Error(`read ${r.bytes} bytes of ${paths[i]}, expected ${files[i]!.size}`);
      });
      target.ms.push(...reads.map((r) => r3(r.ms)));
      target.series_s.push(r3(seconds));
      target.link_bytes.push(after.down - before.down + (after.up - before.up));
      const ms = reads.map((r) => r.ms);
      const st = phase === 'prefetch' ? busy.status_after_reads.at(-1)! : undefined;
      log(
        `  latency ${phase}${rounds > 1 ? ` #${round + 1}` : ''}: median ${percentile(ms, 50).toFixed(1)} ms, p90 ${percentile(ms, 90).toFixed(1)} ms, ${k} reads in ${seconds.toFixed(2)} s` +
          (st
            ? `; ${busy.answers.at(-1)}; after the reads: prefetch ${st.profiles_running ? 'still running' : 'done'}, ${st.profile_objects_done ?? 0}/${st.profile_objects ?? 0} objects, ${((st.prefetch_bytes ?? 0) / 1e6).toFixed(1)} MB, ${st.prefetch_late ?? 0} late`
            : ''),
      );
    }
  }
  await env.unmountRepository();
  await env.wipeCache();

  const summary = (x: { ms: number[] }) => ({
    median_ms: r3(percentile(x.ms, 50)),
    p90_ms: r3(percentile(x.ms, 90)),
    mean_ms: r3(x.ms.reduce((a, b) => a + b, 0) / x.ms.length),
  });
  const idleR: PhaseResult = { ...idle, ...summary(idle) };
  const busyR = { ...busy, ...summary(busy) };
  const ratioMedian = r3(busyR.median_ms / idleR.median_ms);
  const overlapped = busy.status_after_reads.every((s) => (s.profiles_running ?? 0) > 0);
  const result: LatencyResult = {
    date: new Date().toISOString(),
    command: o.command,
    machine: o.machine,
    rate_mbit: env.o.rateMbit,
    rtt_ms: env.o.rttMs,
    image: image.name,
    profile: { path: profilePath, objects: profile.objects.length, bytes: profileBytes },
    files: files.map((f) => ({ path: rel(f.path), size: f.size })),
    candidates: usable.length,
    rounds,
    idle: idleR,
    prefetch: busyR,
    ratio_median: ratioMedian,
    ratio_p90: r3(busyR.p90_ms / idleR.p90_ms),
    target_met: overlapped ? ratioMedian <= 1.2 : null,
  };
  log(
    `latency: idle median ${idleR.median_ms} ms / p90 ${idleR.p90_ms} ms; during prefetch median ${busyR.median_ms} ms / p90 ${busyR.p90_ms} ms; ratio ${result.ratio_median}× (p90 ${result.ratio_p90}×)` +
      (overlapped ? '' : ' — the prefetch had finished before the last read'),
  );
  await writeLatencyReports(result, o.outDir);
  return result;
}

export function latencyMarkdown(r: LatencyResult): string {
  const mb = (b: number) => `${(b / 1e6).toFixed(1)} MB`;
  const L: string[] = [];
  L.push(`# On-demand read latency during a profile prefetch — ${r.date.slice(0, 10)}`);
  L.push('');
  L.push(`${describeMachine(r.machine)}. Link: ${r.rate_mbit} Mbit/s (tc tbf) + ${r.rtt_ms} ms round trip (delaying proxy), as bench/container-start.`);
  L.push(`Command: \`${r.command}\``);
  L.push('');
  L.push(
    `Issue 8's target: on-demand read latency while a prefetch runs ≤ 20% above an idle client's. ${r.files.length} small files (1–64 KiB, ${(r.files.reduce((n, f) => n + f.size, 0) / 1e3).toFixed(0)} kB in all) under usr/share of the ${r.image} image's layers, ` +
      `none with content in its access profile, picked evenly from ${r.candidates} such files (sorted by path); each read = open + read to the end + close, one at a time, by a separate process. ` +
      `Both phases: repository freshly mounted, empty client cache, page cache dropped, the files stat'ed first (catalogs attached). ` +
      `Prefetch phase: \`prefetch profile\` of the image's profile (${r.profile.objects} objects, ${mb(r.profile.bytes)}) sent to the daemon right before the reads. ${r.rounds} round${r.rounds > 1 ? 's, samples pooled' : ''}.`,
  );
  L.push('');
  L.push('| phase | median | p90 | mean | reads took | bytes over link meanwhile |');
  L.push('|---|---|---|---|---|---|');
  const row = (name: string, p: PhaseResult) =>
    L.push(`| ${name} | ${p.median_ms.toFixed(1)} ms | ${p.p90_ms.toFixed(1)} ms | ${p.mean_ms.toFixed(1)} ms | ${p.series_s.map((s) => `${s.toFixed(2)} s`).join(', ')} | ${p.link_bytes.map(mb).join(', ')} |`);
  row('idle', r.idle);
  row('during prefetch', r.prefetch);
  L.push('');
  L.push(`Ratio during prefetch / idle: **median ${r.ratio_median.toFixed(2)}×**, p90 ${r.ratio_p90.toFixed(2)}×. Target (median ≤ 1.2×): ${r.target_met === null ? 'not measured (the prefetch ended before the reads did)' : r.target_met ? 'met' : 'missed'}.`);
  L.push('');
  L.push('After the reads of the prefetch phase (`prefetch status`):');
  L.push('');
  L.push('| round | answer to `prefetch profile` | prefetch running | objects done | prefetched | late | uncovered |');
  L.push('|---|---|---|---|---|---|---|');
  r.prefetch.status_after_reads.forEach((s, i) =>
    L.push(
      `| ${i + 1} | ${r.prefetch.answers[i] ?? ''} | ${s.profiles_running ? 'yes' : 'no'} | ${s.profile_objects_done ?? 0} of ${s.profile_objects ?? 0} | ${mb(s.prefetch_bytes ?? 0)} | ${s.prefetch_late ?? 0} | ${s.reader_misses_uncovered ?? 0} |`,
    ),
  );
  L.push('');
  return L.join('\n');
}

export async function writeLatencyReports(r: LatencyResult, outDir: string): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const files = [join(outDir, 'prefetch-latency.json'), join(outDir, 'prefetch-latency.md')];
  await writeFile(files[0]!, `${JSON.stringify(r, null, 2)}\n`);
  await writeFile(files[1]!, latencyMarkdown(r));
  return files;
}
