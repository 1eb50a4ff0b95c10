/**
 * bench/container-start results: the JSON list of records, a Markdown report (table, targets,
 * what each mode measures, the images) and an SVG chart (bench/lib/svg-chart.ts).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeMachine, type MachineInfo } from '../lib/processes';
import { groupedBarChart } from '../lib/svg-chart';
import type { BenchRecord } from './bench';
import type { CountSeconds } from './breakdown';
import type { Mode } from './modes';

export interface ReportImage {
  readonly name: string;
  readonly description: string;
  readonly command: readonly string[];
  readonly compressedBytes: number;
  readonly unpackedBytes: number;
  readonly layers: number;
}

export interface ReportMeta {
  readonly date: string;
  readonly machine: MachineInfo;
  readonly command: string;
  readonly rateMbit: number;
  readonly rttMs: number;
  readonly runs: number;
  readonly wallSeconds: number;
  readonly images: readonly ReportImage[];
  readonly modes: readonly Mode[];
  /** Free text, e.g. "the machine was busy with other work". */
  readonly notes?: readonly string[];
}

const MB = (b: number | null | undefined) => (b === null || b === undefined ? '–' : `${(b / 1e6).toFixed(b < 1e7 ? 2 : 1)} MB`);
const S = (s: number | null | undefined) => (s === null || s === undefined ? '–' : `${s.toFixed(s < 10 ? 2 : 1)} s`);

function find(records: readonly BenchRecord[], image: string, mode: string): BenchRecord | undefined {
  return records.find((r) => r.image === image && r.mode === mode && r.median_s !== null);
}

export interface TargetCheck {
  readonly target: string;
  readonly image: string;
  readonly value: string;
  readonly met: boolean | null;
}

/** The issue's targets, per image where they apply; null = not measured. */
export function checkTargets(records: readonly BenchRecord[], images: readonly string[]): TargetCheck[] {
  const out: TargetCheck[] = [];
  const ratio = (a?: BenchRecord, b?: BenchRecord) => (a && b && b.median_s ? a.median_s! / b.median_s : null);
  for (const image of images) {
    const pull = find(records, image, 'full-pull');
    const cold = find(records, image, 'thin-cold');
    const warm = find(records, image, 'thin-warm');
    const hot = find(records, image, 'thin-hot');
    const local = find(records, image, 'local');
    if (image === 'python') {
      const speedup = ratio(pull, cold);
      out.push({ target: 'thin cold ≥ 10× faster than full pull', image, value: speedup === null ? 'not measured' : `${speedup.toFixed(1)}×`, met: speedup === null ? null : speedup >= 10 });
    }
    const share = cold && cold.bytes_over_link !== null ? cold.bytes_over_link / cold.image_compressed_bytes : null;
    out.push({
      target: 'thin cold bytes over the link ≤ 10% of the compressed image',
      image,
      value: share === null ? 'not measured' : `${(share * 100).toFixed(1)}% (${MB(cold!.bytes_over_link)} of ${MB(cold!.image_compressed_bytes)})`,
      met: share === null ? null : share <= 0.1,
    });
    const w = ratio(warm, local);
    out.push({ target: 'thin warm ≤ 1.3× local', image, value: w === null ? 'not measured' : `${w.toFixed(2)}×`, met: w === null ? null : w <= 1.3 });
    const h = ratio(hot, local);
    out.push({ target: 'thin hot ≤ 1.05× local', image, value: h === null ? 'not measured' : `${h.toFixed(2)}×`, met: h === null ? null : h <= 1.05 });
  }
  return out;
}

export function markdown(records: readonly BenchRecord[], meta: ReportMeta): string {
  const lines: string[] = [];
  lines.push(`# Container start (HelloBench style) — ${meta.date.slice(0, 10)}`);
  lines.push('');
  lines.push(`${describeMachine(meta.machine)}; load ${meta.machine.load_start.join(' ')} at the start${meta.machine.load_end ? `, ${meta.machine.load_end.join(' ')} at the end` : ''}.`);
  lines.push(`Link: ${meta.rateMbit} Mbit/s (tc tbf on both veth ends) + ${meta.rttMs} ms round trip (delaying proxy); ${meta.runs} runs per mode; ${(meta.wallSeconds / 60).toFixed(1)} min in all.`);
  lines.push(`Command: \`${meta.command}\``);
  for (const n of meta.notes ?? []) lines.push(`\n${n}`);
  lines.push('');
  lines.push('The clock starts before `ctr images pull` (full-pull, thin-cold) or `ctr run` and stops when the task\'s expected output appears on the container\'s stdout. Bytes are counted on the server\'s veth (both directions, with TCP/IP headers), requests in the access logs of docker-registry and `cvmfs-ts serve`; both are medians over the runs.');
  lines.push('');
  lines.push('| image | mode | median | min | max | × local | bytes over link | requests (registry + cvmfs) |');
  lines.push('|---|---|---|---|---|---|---|---|');
  for (const r of records) {
    const local = find(records, r.image, 'local');
    const x = local && r.median_s !== null ? `${(r.median_s / local.median_s!).toFixed(2)}×` : '–';
    const req = r.requests === null ? '–' : `${r.requests} (${r.requests_registry} + ${r.requests_cvmfs})`;
    const why = r.error?.split('\n').map((l) => l.trim()).filter(Boolean).pop() ?? '';
    const err = r.error ? ` ⚠ ${r.runs_s.length} of ${meta.runs} runs, then: ${why.replace(/\|/g, '\\|').slice(0, 160)}` : '';
    const notes = [...(r.phases_s?.pull !== undefined ? [`pull ${S(r.phases_s.pull)}`] : []), ...(r.mount_s !== undefined ? [`mount ${S(r.mount_s)} before`] : [])];
    lines.push(`| ${r.image} | ${r.mode}${notes.length ? ` (${notes.join('; ')})` : ''} | ${S(r.median_s)} | ${S(r.min_s)} | ${S(r.max_s)} | ${x} | ${MB(r.bytes_over_link)} | ${req}${err} |`);
  }
  const withPrefetch = records.filter((r) => r.prefetch);
  if (withPrefetch.length > 0) {
    lines.push('');
    lines.push('## Cold-start features (prefetch status)');
    lines.push('');
    lines.push(
      "After each thin-cold / thin-cold-plain run the mount daemon's `prefetch status` is read once its background downloads have settled (the profile's prefetch may outlive the task); **medians over the runs**. " +
        'Prefetch = the access profile the snapshotter asks for at Prepare; unread = bytes it downloaded that no reader asked for (wasted), as % of the prefetched bytes; late = reads that joined a prefetch download still under way; ' +
        'uncovered = reader downloads no prefetch covered; after clock = how long the prefetch still ran after the task\'s output and what crossed the link meanwhile (not in "bytes over link" above).',
    );
    lines.push('');
    lines.push('| image | mode | median | × plain | prefetched | unread (wasted) | hits | late | uncovered | readahead (unread) | after clock |');
    lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
    for (const r of withPrefetch) {
      const p = r.prefetch!;
      const plain = find(records, r.image, 'thin-cold-plain');
      const x = plain && r.median_s !== null && r.mode !== 'thin-cold-plain' ? `${(r.median_s / plain.median_s!).toFixed(2)}×` : '–';
      const pb = p.prefetch_bytes ?? 0;
      const wasted = pb > 0 ? `${MB(p.prefetch_unread_bytes)} (${(((p.prefetch_unread_bytes ?? 0) / pb) * 100).toFixed(1)}%)` : MB(p.prefetch_unread_bytes ?? 0);
      const objects = p.profile_objects ? ` (${p.profile_objects_done ?? 0}/${p.profile_objects} objects)` : '';
      const prefetched = p.prefetch_enabled === 0 ? 'off' : `${MB(pb)}${objects}`;
      const ra = p.readahead_bytes ? `${MB(p.readahead_bytes)} (${MB(p.readahead_unread_bytes)})` : '–';
      const after = `${S(p.settle_s ?? 0)}, ${MB(p.bytes_after_clock ?? 0)}`;
      lines.push(`| ${r.image} | ${r.mode} | ${S(r.median_s)} | ${x} | ${prefetched} | ${wasted} | ${p.prefetch_hits ?? 0} | ${p.prefetch_late ?? 0} | ${p.reader_misses_uncovered ?? 0} | ${ra} | ${after} |`);
    }
  }
  lines.push('');
  lines.push('## Targets');
  lines.push('');
  lines.push('| target | image | measured | met |');
  lines.push('|---|---|---|---|');
  for (const c of checkTargets(records, meta.images.map((i) => i.name))) lines.push(`| ${c.target} | ${c.image} | ${c.value} | ${c.met === null ? '–' : c.met ? 'yes' : 'no'} |`);
  lines.push(...whereTheTimeGoes(records));
  lines.push('');
  lines.push('## Modes');
  lines.push('');
  for (const m of meta.modes) lines.push(`- **${m.name}**: ${m.description}.`);
  lines.push(
    '- Page cache dropped = `sync; echo 3 > /proc/sys/vm/drop_caches`, then `ctr`, `runc`, the shim, `nsenter` and `node` are read again (the runtime\'s own binaries are not what is measured).',
  );
  lines.push('');
  lines.push('## Images');
  lines.push('');
  lines.push('Built offline from Debian bookworm packages (debootstrap --variant=minbase + `apt-get install --no-install-recommends` in an overlay; base layer + application layer, gzip).');
  lines.push('');
  lines.push('| image | layers | compressed | unpacked | task |');
  lines.push('|---|---|---|---|---|');
  for (const i of meta.images) lines.push(`| ${i.name} | ${i.layers} | ${MB(i.compressedBytes)} | ${MB(i.unpackedBytes)} | ${i.description} |`);
  lines.push('');
  return lines.join('\n');
}

const MS = (s: number | undefined) => (s === undefined ? '–' : s < 0.0995 ? `${(s * 1000).toFixed(1)} ms` : `${(s * 1000).toFixed(0)} ms`);

/** The `k` entries with the most summed time: `name n× t`. */
function top(c: Readonly<Record<string, CountSeconds>> | undefined, k = 3): string {
  const e = Object.entries(c ?? {}).sort((a, b) => b[1].s - a[1].s || b[1].n - a[1].n);
  if (e.length === 0) return '';
  const shown = e.slice(0, k).map(([name, v]) => `${name} ${v.n}× ${MS(v.s)}`);
  return `${shown.join(', ')}${e.length > k ? ', …' : ''}`;
}

/**
 * The "Where the time goes" section (issue 6: a missed target comes with a profile): per image and
 * mode, the median total split into the pull phase, the snapshotter's calls, the mount daemon's
 * FUSE answers and the rest; downloads and daemon CPU alongside. Empty without breakdowns.
 */
export function whereTheTimeGoes(records: readonly BenchRecord[]): string[] {
  if (!records.some((r) => r.breakdown)) return [];
  const lines: string[] = ['', '## Where the time goes', ''];
  lines.push(
    'For the thin modes the mount daemon (`CVMFS_TS_METRICS_LISTEN`) and our snapshotter (`--metrics-listen`) serve Prometheus metrics on unix sockets; they are scraped right before the clock starts and the moment the task\'s output is seen (before the container is removed), and the difference is kept per run (`breakdown_runs` in the JSON; `breakdown` = median of each field over the runs, which is what is shown here). ' +
      '**snapshotter** = summed answer time of the Snapshots API calls containerd made to our snapshotter (top methods by time); **FUSE** = summed time from a FUSE request reaching the daemon\'s JavaScript thread to its answer (requests in all; top operations by time) — the kernel\'s side (queueing in /dev/fuse, libfuse\'s thread hand-off, overlayfs) is not in it; ' +
      '**downloads** = HTTP attempts of the mount daemon and their summed duration (demand downloads run inside FUSE answers, readahead and prefetch in the background: shown, not subtracted); **CPU** = CPU seconds of the mount daemon + the snapshotter. ' +
      '**rest** = total − pull − snapshotter − FUSE: containerd, `ctr`, the shim, runc, mounting the overlay, the kernel\'s side of FUSE and the task itself. ' +
      'These are sums of durations of requests that may run in parallel (several FUSE requests at once, snapshotter calls during the pull, FUSE requests during a snapshotter call), so they can overlap each other and the pull phase: the rest is then a lower bound and can even come out negative. ' +
      '**rest − local** = how much of the rest is more than the whole local start. For local and full-pull our snapshotter and mount daemon are not involved: total (and pull) only.',
  );
  lines.push('');
  lines.push('| image | mode | total | × local | pull | snapshotter (calls: top 3) | FUSE daemon (requests: top 3) | downloads | CPU mount + snapshotter | rest | rest − local |');
  lines.push('|---|---|---|---|---|---|---|---|---|---|---|');
  const images = [...new Set(records.map((r) => r.image))];
  for (const image of images) {
    const local = find(records, image, 'local');
    for (const r of records.filter((x) => x.image === image && x.median_s !== null)) {
      const total = r.median_s!;
      const x = local ? `${(total / local.median_s!).toFixed(2)}×` : '–';
      const pull = r.phases_s?.pull;
      const b = r.breakdown;
      if (!b) {
        lines.push(`| ${image} | ${r.mode} | ${S(total)} | ${x} | ${pull === undefined ? '–' : S(pull)} | – | – | – | – | – | – |`);
        continue;
      }
      const snap = b.snapshotter_calls === undefined ? '–' : `${MS(b.snapshotter_s)} (${b.snapshotter_calls}: ${top(b.snapshotter_by_method)})`;
      const fuse = b.fuse_ops === undefined ? '–' : `${MS(b.fuse_daemon_s)} (${b.fuse_ops}${b.fuse_ops ? `: ${top(b.fuse_by_op)}` : ''})`;
      const dl = b.downloads === undefined ? '–' : b.downloads === 0 ? 'none' : `${MS(b.download_s)} (${b.downloads}, ${MB(b.download_bytes)})`;
      const cpu = `${MS(b.mount_cpu_s)} + ${MS(b.snapshotter_cpu_s)}`;
      const rest = total - (pull ?? 0) - (b.snapshotter_s ?? 0) - (b.fuse_daemon_s ?? 0);
      const overLocal = local ? MS(rest - local.median_s!) : '–';
      lines.push(`| ${image} | ${r.mode} | ${S(total)} | ${x} | ${pull === undefined ? '–' : S(pull)} | ${snap} | ${fuse} | ${dl} | ${cpu} | ${MS(rest)} | ${overLocal} |`);
    }
  }
  return lines;
}

/** The chart: median start time per image and mode (log scale), with "N× local" under each bar. */
export function chart(records: readonly BenchRecord[], meta: ReportMeta): string {
  const images = [...new Set(records.map((r) => r.image))];
  const modes = meta.modes.map((m) => m.name).filter((m) => records.some((r) => r.mode === m));
  return groupedBarChart({
    title: 'Container start time (median)',
    subtitle: `${meta.rateMbit} Mbit/s, ${meta.rttMs} ms RTT, ${meta.runs} runs — ${meta.date.slice(0, 10)}, ${meta.machine.cores} cores`,
    series: modes.map((m) => ({ key: m, label: m })),
    groups: images.map((image) => {
      const local = find(records, image, 'local');
      const values: Record<string, number | null> = {};
      const notes: Record<string, string | undefined> = {};
      for (const m of modes) {
        const r = find(records, image, m);
        values[m] = r?.median_s ?? null;
        if (r && local && m !== 'local') notes[m] = `${(r.median_s! / local.median_s!).toFixed(1)}×`;
      }
      return { label: image, values, notes };
    }),
    scale: 'log',
    unit: 'seconds (log scale)',
    formatValue: (v) => (v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)),
    footnotes: ['Notes under the bars: median relative to local (image already unpacked).', 'Clock stops when the task\'s expected output appears on stdout.'],
  });
}

export async function writeReports(records: readonly BenchRecord[], meta: ReportMeta, outDir: string, base = 'container-start'): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const files = [join(outDir, `${base}.json`), join(outDir, `${base}.md`), join(outDir, `${base}.svg`)];
  await writeFile(files[0]!, JSON.stringify(records, null, 2) + '\n');
  await writeFile(files[1]!, markdown(records, meta));
  await writeFile(files[2]!, chart(records, meta));
  return files;
}
