/**
 * bench/container-start (issue 6): how long until a container's task has printed its output —
 * HelloBench style — for images built from Debian packages, pulled whole (full-pull), started from
 * an unpacked image (local), or started as thin images over a cvmfs-ts repository with a cold, warm
 * or hot client cache, over an emulated link (tc tbf + a delaying proxy between two network
 * namespaces). Per image and mode: median/min/max over --runs runs, bytes over the link and HTTP
 * requests; for the cold thin modes also the daemon's prefetch figures. thin-cold-plain is thin-cold
 * with issue 8's client features off (parallel downloads, chunk readahead, profile and catalog
 * prefetch). Each image's access profile is recorded once (`cvmfs-ts thin record`, kept in the
 * cached repository).
 *
 * Then (latency.ts) issue 8's read-latency target: small files of the largest image read one at a
 * time by an idle client and by one prefetching that image's profile.
 *
 * Run as root after `npm run build`:
 *   npx ts-node bench/container-start/main.ts [--runs 5] [--rate 100] [--rtt 20]
 *       [--images minbase,python,gcc,app[,scipy]]
 *       [--modes full-pull,local,thin-cold-plain,thin-cold,thin-warm,thin-hot]
 *       [--latency | --no-latency] [--latency-files 40] [--latency-rounds 1] [--profile-seconds 90]
 *       [--out bench/results] [--cache /var/tmp/cvmfs-ts-bench] [--note TEXT] [--no-breakdown]
 *   npx ts-node bench/container-start/main.ts --latency     # the latency step alone (app image)
 *   npx ts-node bench/container-start/main.ts --cleanup     # remove what a killed run left behind
 * Without --modes every mode runs, followed by the latency step (unless --no-latency); --latency
 * without --modes runs the latency step alone (no containers, container-start.* left as they are);
 * --modes without --latency runs no latency step. Writes OUT/container-start.{json,md,svg} and
 * OUT/prefetch-latency.{json,md}. For the thin modes each run also records where its time went
 * (breakdown.ts: the mount daemon's and the snapshotter's metrics scraped around the clock; the
 * report's "Where the time goes"); --no-breakdown runs both daemons without metrics. Images are
 * built once into CACHE/images (debootstrap, apt-get: about 8 minutes, needs the Debian mirror);
 * the repository, its keys, the profiles and the registry's storage are kept in
 * CACHE/container-start-cache. The whole bench takes about 20
 * minutes on this 2-core machine when it is quiet (the latency step under a minute; recording a
 * missing profile ~10 s per image, ~1 min for app). One run at a time: namespaces and the work
 * directory have fixed names.
 */
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { loadavg } from 'node:os';
import { assertBuilt, machineInfo } from '../lib/processes';
import { buildDebianImages } from '../lib/debian-image';
import { Cleanup } from '../lib/proc';
import { runBench, type BenchRecord } from './bench';
import { Environment, cleanupLeftovers, type BenchImage } from './environment';
import { IMAGES } from './images';
import { runPrefetchLatency } from './latency';
import { selectModes, type Mode } from './modes';
import { writeReports, type ReportImage } from './report';

export interface ContainerStartOptions {
  readonly images: readonly (BenchImage & { description: string; layers: number })[];
  readonly modes: readonly Mode[];
  readonly runs: number;
  readonly rateMbit: number;
  readonly rttMs: number;
  /** Repository, keys, registry storage (kept). */
  readonly cacheDir: string;
  /** containerd, mounts, client cache, logs (emptied at the start). */
  readonly workDir: string;
  readonly outDir: string;
  readonly prefix: string;
  readonly subnet: string;
  readonly command: string;
  readonly notes?: readonly string[];
  readonly log?: (line: string) => void;
  /** Recording window of `thin record` (default 90 s: the task ends by itself well before). */
  readonly profileSeconds?: number;
  /** Run the read-latency step (latency.ts) on the largest image after the modes. */
  readonly latency?: { readonly files: number; readonly rounds: number };
  /** Per-run breakdown from the daemons' metrics (default true; see breakdown.ts). */
  readonly breakdown?: boolean;
}

/** Runs the bench in a fresh environment, writes the reports and cleans up (also on failure). */
export async function runContainerStart(o: ContainerStartOptions): Promise<BenchRecord[]> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const cleanup = new Cleanup(log);
  const started = performance.now();
  const machine = machineInfo();
  try {
    const env = await Environment.create({
      cleanup,
      workDir: o.workDir,
      cacheDir: o.cacheDir,
      images: o.images,
      rateMbit: o.rateMbit,
      rttMs: o.rttMs,
      prefix: o.prefix,
      subnet: o.subnet,
      log,
      containers: o.modes.length > 0,
      profileSeconds: o.profileSeconds,
      metrics: o.breakdown ?? true,
    });
    const reportImages: ReportImage[] = o.images.map((i) => ({
      name: i.name,
      description: i.description,
      command: i.command,
      compressedBytes: i.compressedBytes,
      unpackedBytes: i.unpackedBytes,
      layers: i.layers,
    }));
    const meta = () => ({
      date: new Date().toISOString(),
      machine: { ...machine, load_end: loadavg().map((l) => Math.round(l * 100) / 100) },
      command: o.command,
      rateMbit: o.rateMbit,
      rttMs: o.rttMs,
      runs: o.runs,
      wallSeconds: (performance.now() - started) / 1000,
      images: reportImages,
      modes: o.modes,
      notes: o.notes,
    });
    let records: BenchRecord[] = [];
    if (o.modes.length > 0) {
      records = await runBench({
        env,
        images: o.images,
        modes: o.modes,
        runs: o.runs,
        log,
        onRecord: async (rs) => void (await writeReports(rs, meta(), o.outDir)),
      });
      const files = await writeReports(records, meta(), o.outDir);
      log(`wrote ${files.join(', ')} (${((performance.now() - started) / 60000).toFixed(1)} min)`);
    }
    if (o.latency) {
      const image = [...o.images].sort((a, b) => b.unpackedBytes - a.unpackedBytes)[0]!;
      const t0 = performance.now();
      await runPrefetchLatency({ env, image, files: o.latency.files, rounds: o.latency.rounds, outDir: o.outDir, command: o.command, machine, log });
      log(`wrote ${join(o.outDir, 'prefetch-latency.{json,md}')} (latency step ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    }
    return records;
  } finally {
    await cleanup.run();
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const list = (v: string | undefined) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined);

async function main(): Promise<void> {
  const cacheBase = resolve(arg('cache') ?? process.env.BENCH_DIR ?? '/var/tmp/cvmfs-ts-bench');
  const workDir = join(cacheBase, 'container-start-work');
  const prefix = 'cvb';
  if (process.argv.includes('--cleanup')) {
    await cleanupLeftovers(workDir, prefix, (l) => process.stderr.write(`${l}\n`));
    return;
  }
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces, containerd, mounts)');
  assertBuilt();
  const log = (l: string) => process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${l}\n`);
  const modeNames = list(arg('modes'));
  const latencyFlag = process.argv.includes('--latency');
  if (latencyFlag && process.argv.includes('--no-latency')) throw new Error('--latency and --no-latency');
  // No --modes: every mode, then the latency step (unless --no-latency); --latency alone: only it.
  const modes = modeNames ? selectModes(modeNames) : latencyFlag ? [] : selectModes(undefined);
  const latency = latencyFlag || (!modeNames && !process.argv.includes('--no-latency'));
  const wanted = list(arg('images')) ?? (modes.length === 0 ? ['app'] : undefined);
  const specs = IMAGES.filter((i) => (wanted ? wanted.includes(i.name) : i.default));
  if (wanted && specs.length !== wanted.length) throw new Error(`unknown image in --images (known: ${IMAGES.map((i) => i.name).join(', ')})`);
  const t0 = performance.now();
  const built = await buildDebianImages({ cacheDir: join(cacheBase, 'images'), images: specs, log });
  log(`images ready (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
  const images = specs.map((s) => {
    const b = built.get(s.name)!;
    return { ...b, command: s.command, expect: s.expect, description: s.description, layers: b.layers.length };
  });
  await runContainerStart({
    images,
    modes,
    runs: Number(arg('runs') ?? 5),
    rateMbit: Number(arg('rate') ?? 100),
    rttMs: Number(arg('rtt') ?? 20),
    cacheDir: join(cacheBase, 'container-start-cache'),
    workDir,
    outDir: resolve(arg('out') ?? resolve(__dirname, '../results')),
    prefix,
    subnet: '10.213.7',
    command: ['npx ts-node bench/container-start/main.ts', ...process.argv.slice(2).map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`))].join(' '),
    notes: arg('note') ? [arg('note')!] : undefined,
    log,
    profileSeconds: arg('profile-seconds') ? Number(arg('profile-seconds')) : undefined,
    breakdown: !process.argv.includes('--no-breakdown'),
    latency: latency ? { files: Number(arg('latency-files') ?? 40), rounds: Number(arg('latency-rounds') ?? 1) } : undefined,
  });
}

if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`container-start: ${e.stack ?? e.message}\n`);
    process.exitCode = 1;
  });
}
