/**
 * bench/fs (issue 6, part 2): file system speed of a cvmfs-ts mount against the same tree on local
 * disk — stat, readdir, small-file reads and big-file sequential reads, each cold, warm and hot.
 *
 * Run (as root; needs FUSE and a built dist/, i.e. `npm run build` first):
 *   npx ts-node bench/fs.ts [--scale F] [--out DIR] [--ops stat,readdir,small,big] [--hot-runs N]
 *                           [--kcache-timeout S] [--no-drop-caches] [--cpu-prof] [--fresh] [--keep]
 * Writes DIR/fs.{json,md,svg} (default bench/results; with --cpu-prof: fs-profile.*, since profiling
 * slows the daemon). The tree and its repository are kept in $BENCH_DIR (default
 * /var/tmp/cvmfs-ts-bench/fs) per parameter set and reused; --fresh makes them again.
 *
 * Modes, for each operation:
 *   local-cold  the source tree on local disk, page cache + dentries + inodes dropped first
 *   local-hot   the same again (everything in the kernel's caches)
 *   cvmfs-cold  a fresh mount on an empty cvmfs-ts cache, page cache dropped after mounting: the
 *               root catalog was fetched by the mount; nested catalogs and file contents are
 *               fetched during the pass from `cvmfs-ts serve` on 127.0.0.1
 *   cvmfs-warm  a fresh mount on the cache the cold pass filled, page cache dropped after mounting
 *   cvmfs-hot   further passes on the warm mount: the kernel's entry/attribute cache
 *               (CVMFS_KCACHE_TIMEOUT, 3600 s here) and kept pages answer what they can
 * Hot passes run --hot-runs times (default 5), local and cvmfs alternating, and report the median
 * run; a pass during which another process dropped the caches (a shared machine) is marked.
 * The server and the mount's daemon run in their own processes, and the passes in a third (the
 * measuring process, bench/lib/fs-measure.ts), the same code for the local tree and the mount.
 */
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadavg } from 'node:os';
import { ensureTree, treeSpec, type FsTree } from './lib/fs-tree';
import { Measurer, OPS, type Op, type OpResult } from './lib/fs-measure';
import {
  assertBuilt,
  cpuSeconds,
  cvmfsTs,
  describeMachine,
  dropCaches,
  machineInfo,
  mountRepository,
  ROOT,
  rssMb,
  startServer,
  writeConfigRoot,
  type MachineInfo,
  cacheDropCounts,
  cacheDropsBetween,
  daemonThreadCpu,
  threadSnapshot,
  type MountedRepository,
  type ThreadCpu,
} from './lib/processes';
import { Cleanup, sleep } from './lib/proc';
import { FuseRequestCounter, fuseTraceUnavailable, type FuseCounts } from './lib/fuse-trace';
import { summarizeCpuProfile, type ProfileSummary } from './lib/cpu-profile';
import { groupedBarChart } from './lib/svg-chart';
import { si } from './lib/stats';

const FQRN = 'bench-fs.cvmfs-ts.io';
const PREFIX = `/cvmfs/${FQRN}`;
const MODES = ['local-cold', 'local-hot', 'cvmfs-cold', 'cvmfs-warm', 'cvmfs-hot'] as const;
type Mode = (typeof MODES)[number];
/**
 * CVMFS_KCACHE_TIMEOUT of the bench mount (default 60 s, in the C++ client too): long, so that the
 * kernel's entry/attribute cache stays valid through the warm pass and every hot pass.
 */
const KCACHE_TIMEOUT_S = 3600;
const PASS_TIMEOUT_MS = 30 * 60_000;
/** Published repositories carry a whitelist valid 30 days: republish (cheap, objects stay) before. */
const REPUBLISH_AFTER_MS = 20 * 24 * 3600_000;

const MODE_INFO: Record<Mode, { baseline?: Mode; color: string; description: string }> = {
  'local-cold': { color: '#1f4e79', description: 'source tree on local disk (ext4), page cache, dentries and inodes dropped before the pass' },
  'local-hot': { color: '#7fb2e5', description: 'source tree on local disk, further passes (all in the kernel caches)' },
  'cvmfs-cold': {
    baseline: 'local-cold',
    color: '#a33c00',
    description:
      'fresh mount on an empty cvmfs-ts cache, page cache dropped after mounting; the mount fetched the root catalog, the pass fetches nested catalogs and data from cvmfs-ts serve on 127.0.0.1',
  },
  'cvmfs-warm': { baseline: 'local-cold', color: '#e69138', description: 'fresh mount on the cache filled by the cold pass, page cache dropped after mounting' },
  'cvmfs-hot': {
    baseline: 'local-hot',
    color: '#f9cb9c',
    description: 'further passes on the warm mount (kernel entry/attribute cache valid for CVMFS_KCACHE_TIMEOUT, pages kept)',
  },
};

const TARGETS = [
  { key: 'cold_stat', label: 'cold stat: cvmfs-cold / local-cold', op: 'stat', mode: 'cvmfs-cold', base: 'local-cold', target: 0.27 },
  { key: 'warm_small_read', label: 'warm-cache small-file read: cvmfs-warm / local-cold', op: 'small', mode: 'cvmfs-warm', base: 'local-cold', target: 0.46 },
  { key: 'hot_stat', label: 'hot stat: cvmfs-hot / local-hot', op: 'stat', mode: 'cvmfs-hot', base: 'local-hot', target: 0.9 },
] as const;

const OP_LABEL: Record<Op, string> = { stat: 'stat', readdir: 'readdir', small: 'small-file read', big: 'big-file read' };

interface Args {
  scale: number;
  out: string;
  ops: Op[];
  dropCaches: boolean;
  cpuProf: boolean;
  fresh: boolean;
  keep: boolean;
  hotRuns: number;
  kcacheTimeout: number;
}

const USAGE =
  'usage: npx ts-node bench/fs.ts [--scale F] [--out DIR] [--ops stat,readdir,small,big] [--hot-runs N] [--kcache-timeout S] [--no-drop-caches] [--cpu-prof] [--fresh] [--keep]';

function parseArgs(argv: string[]): Args {
  const a: Args = { scale: 1, out: resolve(__dirname, 'results'), ops: [...OPS], dropCaches: true, cpuProf: false, fresh: false, keep: false, hotRuns: 5, kcacheTimeout: KCACHE_TIMEOUT_S };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new UsageError(`${arg} needs a value`);
      return v;
    };
    if (arg === '--scale') {
      a.scale = Number(value());
      if (!(a.scale > 0 && a.scale <= 10)) throw new UsageError('--scale must be a number in (0, 10]');
    } else if (arg === '--out') a.out = resolve(value());
    else if (arg === '--ops') {
      const ops = value().split(',');
      const bad = ops.find((o) => !(OPS as readonly string[]).includes(o));
      if (bad) throw new UsageError(`--ops: unknown operation ${bad} (${OPS.join(', ')})`);
      a.ops = OPS.filter((o) => ops.includes(o));
    } else if (arg === '--hot-runs') {
      a.hotRuns = Number(value());
      if (!(Number.isInteger(a.hotRuns) && a.hotRuns >= 1)) throw new UsageError('--hot-runs must be a positive integer');
    } else if (arg === '--kcache-timeout') {
      a.kcacheTimeout = Number(value());
      if (!(Number.isInteger(a.kcacheTimeout) && a.kcacheTimeout >= 1)) throw new UsageError('--kcache-timeout must be a positive number of seconds');
    } else if (arg === '--no-drop-caches') a.dropCaches = false;
    else if (arg === '--cpu-prof') a.cpuProf = true;
    else if (arg === '--fresh') a.fresh = true;
    else if (arg === '--keep') a.keep = true;
    else if (arg === '--help' || arg === '-h') {
      process.stdout.write(`${USAGE}\n`);
      process.exit(0);
    } else throw new UsageError(`unknown argument ${arg}`);
  }
  return a;
}

class UsageError extends Error {}

const log = (m: string) => process.stdout.write(`[bench/fs] ${m}\n`);

interface CvmfsPassInfo {
  /** CPU seconds (user + system) of the mount's daemon during the pass. */
  daemon_cpu_s: number;
  /** The same by thread role: the JS thread, libfuse's threads, V8/libuv workers. */
  daemon_threads: Record<'js' | 'fuse' | 'other', ThreadCpu>;
  daemon_rss_mb: number;
  server_cpu_s: number;
  /** Requests the server answered during the pass. */
  http_requests: number;
  /** FUSE requests the kernel sent the daemon during the pass, by opcode (needs perf). */
  fuse_requests?: FuseCounts;
  fuse_requests_per_s?: number;
  /** Daemon CPU per FUSE request (µs). */
  daemon_cpu_us_per_request?: number;
}

interface PassResult extends OpResult {
  mode: Mode;
  /** CPU seconds of the measuring process during the pass (its system time is the kernel's file system work). */
  measurer_cpu_s: number;
  drop_caches_s?: number;
  /**
   * Times another process dropped the page cache or slab caches during this pass — for a hot pass,
   * since the start of the pass that warmed it (a shared machine).
   */
  foreign_cache_drops: number;
  cvmfs?: CvmfsPassInfo;
  /** Hot modes: every run (value = the operation's headline rate); this result is the median run. */
  runs?: { value: number; seconds: number; foreign_cache_drops: number }[];
}

type Results = Record<Mode, Partial<Record<Op, PassResult>>>;

interface Repo {
  repoDir: string;
  publicKey: string;
  published_s?: number;
  revision: number;
}

/** Publishes the tree (once per tree; republished when its whitelist gets old). */
async function ensureRepository(tree: FsTree, fresh: boolean): Promise<Repo> {
  const repoDir = join(tree.dir, 'repo');
  const keys = join(tree.dir, 'keys');
  const stamp = join(tree.dir, 'repo.json');
  const publicKey = join(keys, `${FQRN}.pub`);
  let previous: { publishedAt: number; revision: number } | undefined;
  if (!fresh && !tree.generated) previous = JSON.parse(await readFile(stamp, 'utf8').catch(() => 'null')) ?? undefined;
  if (previous && Date.now() - previous.publishedAt < REPUBLISH_AFTER_MS) return { repoDir, publicKey, revision: previous.revision };
  if (!previous) {
    await rm(repoDir, { recursive: true, force: true });
    await rm(keys, { recursive: true, force: true });
    await cvmfsTs(['keys', 'create', FQRN, keys]);
  }
  log(`publishing ${tree.src} to ${repoDir}${previous ? ' (again: renewing the whitelist)' : ''}`);
  const t0 = Date.now();
  await cvmfsTs(['publish', FQRN, tree.src, repoDir, '--keys', keys], { timeoutMs: 3600_000 });
  const published_s = (Date.now() - t0) / 1000;
  const revision = (previous?.revision ?? 0) + 1;
  await writeFile(stamp, JSON.stringify({ publishedAt: Date.now(), revision }));
  return { repoDir, publicKey, published_s, revision };
}

function fmtResult(r: PassResult): string {
  const lat = `p50 ${si(r.latency_us.p50)} µs, p99 ${si(r.latency_us.p99)} µs`;
  const main =
    r.op === 'stat'
      ? `${si(r.ops_per_s)} lstat/s`
      : r.op === 'readdir'
        ? `${si(r.ops_per_s)} dirs/s, ${si(r.entries_per_s!)} entries/s`
        : r.op === 'small'
          ? `${si(r.files_per_s!)} files/s, ${si(r.mb_per_s!)} MB/s`
          : `${si(r.mb_per_s!)} MB/s`;
  const extra = r.cvmfs
    ? `; daemon ${r.cvmfs.daemon_cpu_s.toFixed(2)} s CPU, ${r.cvmfs.fuse_requests ? `${r.cvmfs.fuse_requests.total} FUSE requests, ` : ''}${r.cvmfs.http_requests} HTTP`
    : '';
  return `${r.mode.padEnd(10)} ${r.op.padEnd(7)} ${main} (${r.seconds.toFixed(2)} s; ${lat}${extra})`;
}

async function main(): Promise<void> {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`bench/fs: ${e.message}\n${USAGE}\n`);
    process.exit(2);
  }
  if (process.getuid?.() !== 0) throw new Error('bench/fs needs root (FUSE mounts with allow_other, drop_caches)');
  assertBuilt();
  const cleanup = new Cleanup((m) => log(m));
  const started = Date.now();
  const machine = machineInfo();
  log(`machine: ${describeMachine(machine)}; load average ${machine.load_start.join(', ')}`);
  if (machine.load_start[0]! > 0.5 * machine.cores) log(`note: the machine is busy (load ${machine.load_start[0]} on ${machine.cores} cores): timings will be noisy`);
  if (!args.dropCaches) log('note: --no-drop-caches: "cold" passes run with whatever the page cache holds');

  const results: Results = { 'local-cold': {}, 'local-hot': {}, 'cvmfs-cold': {}, 'cvmfs-warm': {}, 'cvmfs-hot': {} };
  const profiles: Record<string, ProfileSummary> = {};
  try {
    const base = resolve(process.env.BENCH_DIR ?? '/var/tmp/cvmfs-ts-bench/fs');
    await mkdir(base, { recursive: true });
    const tree = await ensureTree(base, treeSpec(args.scale), { fresh: args.fresh, log });
    const m = tree.manifest;
    log(
      `tree ${tree.src}${tree.generated ? '' : ' (reused)'}: ${m.smallFiles.length} small files (${si(m.smallBytes / 1e6)} MB) in ${m.dirs.length} directories, ` +
        `${m.bigFiles.length} × ${si(m.spec.bigSize / 2 ** 20)} MiB, ${m.nestedCatalogs} nested catalogs`,
    );
    const repo = await ensureRepository(tree, args.fresh || tree.generated);
    if (repo.published_s !== undefined) log(`published in ${repo.published_s.toFixed(1)} s`);

    const runDir = await mkdtemp(join(base, 'run-'));
    if (!args.keep) cleanup.add('run directory', () => rm(runDir, { recursive: true, force: true }));
    else log(`--keep: leaving ${runDir}`);
    const server = await startServer(repo.repoDir, PREFIX, cleanup);
    const measurer = await Measurer.start(join(tree.dir, 'manifest.json'), ROOT);
    cleanup.add('measuring process', async () => measurer.stop(), () => measurer.stop());
    const cacheBase = join(runDir, 'cache');
    const quotaMb = Math.max(4000, Math.ceil((3 * (m.smallBytes + m.bigBytes)) / 2 ** 20));
    const configRoot = await writeConfigRoot(runDir, {
      fqrn: FQRN,
      serverUrl: server.url,
      publicKey: repo.publicKey,
      cacheBase,
      params: { CVMFS_QUOTA_LIMIT: quotaMb, CVMFS_KCACHE_TIMEOUT: args.kcacheTimeout },
    });
    const profDir = join(runDir, 'cpu-prof');
    const traceUnavailable = await fuseTraceUnavailable();
    if (traceUnavailable) log(`FUSE request counts unavailable: ${traceUnavailable}`);

    const mount = () =>
      mountRepository(
        {
          fqrn: FQRN,
          mountpoint: join(runDir, 'mnt'),
          configRoot,
          logFile: join(runDir, 'mount.log'),
          // Node refuses --cpu-prof in NODE_OPTIONS: a preload starts the profiler in the daemon.
          env: args.cpuProf
            ? { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --require=${join(__dirname, 'lib', 'cpu-prof-preload.js')}`.trim(), CVMFS_TS_BENCH_CPU_PROF_DIR: profDir }
            : undefined,
        },
        cleanup,
      );

    /** Where each pass's drop counting started: a hot pass counts from the start of the pass before it. */
    const dropsAtStart = new Map<PassResult, { pagecache: number; slab: number }>();
    const pass = async (
      mode: Mode,
      op: Op,
      root: string,
      o: { drop?: boolean; mount?: MountedRepository; after?: PassResult } = {},
    ): Promise<PassResult> => {
      const drop_caches_s = o.drop && args.dropCaches ? await dropCaches() : undefined;
      const counter = o.mount ? await FuseRequestCounter.start(o.mount.connection) : undefined;
      const before = {
        measurer: await cpuSeconds(measurer.pid),
        daemon: o.mount ? await cpuSeconds(o.mount.pid) : 0,
        threads: o.mount ? await threadSnapshot(o.mount.pid) : undefined,
        server: await cpuSeconds(server.pid),
        http: server.requests(),
        drops: await cacheDropCounts(),
      };
      const profiling = args.cpuProf && o.mount ? startPassProfile(o.mount.pid) : undefined;
      if (profiling) await sleep(200); // the daemon starts its profiler when its event loop gets to it
      const r = await measurer.measure(op, root, PASS_TIMEOUT_MS);
      // A hot pass relies on what the pass before it left in the caches: count drops since that one started.
      const foreign_cache_drops = cacheDropsBetween((o.after && dropsAtStart.get(o.after)) ?? before.drops, await cacheDropCounts());
      const result: PassResult = { mode, ...r, measurer_cpu_s: (await cpuSeconds(measurer.pid)) - before.measurer, drop_caches_s, foreign_cache_drops };
      if (o.mount) {
        const fuse = await counter?.stop();
        const daemon_cpu_s = (await cpuSeconds(o.mount.pid)) - before.daemon;
        result.cvmfs = {
          daemon_cpu_s,
          daemon_threads: daemonThreadCpu(o.mount.pid, before.threads!, await threadSnapshot(o.mount.pid)),
          daemon_rss_mb: Math.round(await rssMb(o.mount.pid)),
          server_cpu_s: (await cpuSeconds(server.pid)) - before.server,
          http_requests: server.requests() - before.http,
          fuse_requests: fuse,
          fuse_requests_per_s: fuse ? fuse.total / r.seconds : undefined,
          daemon_cpu_us_per_request: fuse && fuse.total > 0 ? (daemon_cpu_s * 1e6) / fuse.total : undefined,
        };
      }
      if (profiling) {
        const file = await profiling.stop();
        if (file) profiles[`${mode} ${OP_LABEL[op]}`] = await summarizeCpuProfile(file);
        else log(`no CPU profile from the daemon for ${mode} ${op}`);
      }
      dropsAtStart.set(result, before.drops);
      log(fmtResult(result));
      return result;
    };

    /** The median run (by the operation's headline rate) of those no other process dropped caches during, if any. */
    const medianRun = (op: Op, runs: PassResult[]): PassResult => {
      const clean = runs.filter((r) => !r.foreign_cache_drops);
      const pool = (clean.length > 0 ? clean : runs).slice().sort((a, b) => headline(op, a)! - headline(op, b)!);
      const chosen = pool[Math.floor((pool.length - 1) / 2)]!;
      chosen.runs = runs.map((r) => ({ value: headline(op, r)!, seconds: r.seconds, foreign_cache_drops: r.foreign_cache_drops }));
      return chosen;
    };

    const record = (r: PassResult) => {
      results[r.mode][r.op] = r;
      if (r.foreign_cache_drops) log(`note: another process dropped the caches during ${r.mode} ${r.op} (${r.foreign_cache_drops}×)`);
      return r;
    };

    /** SIGUSR2 toggles the daemon's profiler (bench/lib/cpu-prof-preload.js); one profile file per pass. */
    const profileCount = new Map<number, number>();
    const startPassProfile = (pid: number) => {
      process.kill(pid, 'SIGUSR2');
      return {
        stop: async (): Promise<string | undefined> => {
          const n = (profileCount.get(pid) ?? 0) + 1;
          profileCount.set(pid, n);
          process.kill(pid, 'SIGUSR2');
          const file = join(profDir, `daemon-${pid}-${n}.cpuprofile`);
          for (let i = 0; i < 100; i++, await sleep(100)) if (await stat(file).then(() => true, () => false)) return file;
          return undefined;
        },
      };
    };

    for (const op of args.ops) {
      const localCold = record(await pass('local-cold', op, tree.src, { drop: true }));

      await rm(cacheBase, { recursive: true, force: true });
      let mounted = await mount();
      record(await pass('cvmfs-cold', op, mounted.mountpoint, { drop: true, mount: mounted }));
      await mounted.unmount();

      mounted = await mount();
      const warmStart = Date.now();
      const warm = record(await pass('cvmfs-warm', op, mounted.mountpoint, { drop: true, mount: mounted }));
      // Hot: local and cvmfs runs alternate, so both see the same (shared, noisy) machine. The drop
      // before the warm pass emptied the local tree's caches too: one unrecorded pass refills them.
      log('local-hot warm-up pass (not recorded):');
      let localPrev = await pass('local-hot', op, tree.src, { after: localCold });
      let cvmfsPrev = warm;
      const localRuns: PassResult[] = [];
      const cvmfsRuns: PassResult[] = [];
      for (let i = 0; i < args.hotRuns; i++) {
        localRuns.push((localPrev = await pass('local-hot', op, tree.src, { after: localPrev })));
        cvmfsRuns.push((cvmfsPrev = await pass('cvmfs-hot', op, mounted.mountpoint, { mount: mounted, after: cvmfsPrev })));
      }
      record(medianRun(op, localRuns));
      record(medianRun(op, cvmfsRuns));
      if ((Date.now() - warmStart) / 1000 > args.kcacheTimeout) {
        log(`note: the warm and hot ${op} passes took longer than CVMFS_KCACHE_TIMEOUT (${args.kcacheTimeout} s): some hot lookups went to the daemon`);
      }
      await mounted.unmount();
    }
    const mountLog = await readFile(join(runDir, 'mount.log'), 'utf8').catch(() => '');
    machine.load_end = loadavg().map((l) => Math.round(l * 100) / 100);

    const report = buildReport({
      args,
      machine,
      tree,
      repo,
      results,
      profiles,
      quotaMb,
      durationS: (Date.now() - started) / 1000,
      fuseNativePatched: !/not the patched build/.test(mountLog),
      fuseCounts: traceUnavailable ? `unavailable: ${traceUnavailable}` : 'perf stat on fuse:fuse_request_send',
    });
    await mkdir(args.out, { recursive: true });
    const name = args.cpuProf ? 'fs-profile' : 'fs';
    await writeFile(join(args.out, `${name}.json`), JSON.stringify(report.json, null, 2) + '\n');
    await writeFile(join(args.out, `${name}.md`), report.md);
    await writeFile(join(args.out, `${name}.svg`), report.svg);
    process.stdout.write(`\n${report.md}\n`);
    log(`wrote ${join(args.out, `${name}.{json,md,svg}`)} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
  } finally {
    await cleanup.run();
  }
}

// ---------------------------------------------------------------------------------------------
// Report: JSON, Markdown, SVG.

interface ReportInput {
  args: Args;
  machine: MachineInfo;
  tree: FsTree;
  repo: Repo;
  results: Results;
  profiles: Record<string, ProfileSummary>;
  quotaMb: number;
  durationS: number;
  fuseNativePatched: boolean;
  fuseCounts: string;
}

/** The number an operation is judged by: lstat/s, entries/s, files/s, MB/s. */
function headline(op: Op, r: PassResult | undefined): number | undefined {
  if (!r) return undefined;
  if (op === 'readdir') return r.entries_per_s;
  if (op === 'small') return r.files_per_s;
  if (op === 'big') return r.mb_per_s;
  return r.ops_per_s;
}

const HEADLINE_UNIT: Record<Op, string> = { stat: 'lstat/s', readdir: 'entries/s', small: 'files/s', big: 'MB/s' };

function ratio(results: Results, op: Op, mode: Mode, base: Mode): number | undefined {
  const a = headline(op, results[mode][op]);
  const b = headline(op, results[base][op]);
  return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
}

const fmtRatio = (r: number | undefined) => (r === undefined ? 'n/a' : `${r < 0.095 ? r.toFixed(3) : r.toFixed(2)}×`);

function buildReport(i: ReportInput): { json: object; md: string; svg: string } {
  const { results, tree, machine } = i;
  const m = tree.manifest;
  const date = new Date().toISOString();
  const ratios = TARGETS.map((t) => {
    const value = ratio(results, t.op, t.mode, t.base);
    return { ...t, value, met: value === undefined ? undefined : value >= t.target };
  });
  const treeInfo = {
    dir: tree.src,
    reused: !tree.generated,
    small_files: m.smallFiles.length,
    small_bytes: m.smallBytes,
    small_sizes: `${m.spec.minSize}–${m.spec.maxSize} bytes`,
    directories: m.dirs.length,
    paths: m.paths.length,
    big_files: m.bigFiles.length,
    big_file_bytes: m.spec.bigSize,
    nested_catalogs: m.nestedCatalogs,
  };
  const json = {
    bench: 'fs',
    date,
    machine,
    scale: i.args.scale,
    drop_caches: i.args.dropCaches,
    cpu_prof: i.args.cpuProf,
    duration_s: Math.round(i.durationS),
    tree: treeInfo,
    repository: { fqrn: FQRN, revision: i.repo.revision, published_s: i.repo.published_s },
    cvmfs: {
      server: 'cvmfs-ts serve on 127.0.0.1 (own process)',
      proxy: 'DIRECT',
      kcache_timeout_s: i.args.kcacheTimeout,
      hot_runs: i.args.hotRuns,
      quota_mb: i.quotaMb,
      fuse_native_patched: i.fuseNativePatched,
      fuse_request_counts: i.fuseCounts,
    },
    modes: Object.fromEntries(MODES.map((mode) => [mode, MODE_INFO[mode].description])),
    results,
    ratios: ratios.map((r) => ({ name: r.label, value: r.value, target: r.target, met: r.met })),
    ...(Object.keys(i.profiles).length ? { cpu_profiles: i.profiles } : {}),
  };

  const ops = i.args.ops;
  const cell = (mode: Mode, op: Op, v: (r: PassResult) => number | undefined, withRatio = false) => {
    const r = results[mode][op];
    const x = r ? v(r) : undefined;
    if (x === undefined) return 'n/a';
    const base = MODE_INFO[mode].baseline;
    const mark = r!.foreign_cache_drops ? ' †' : '';
    return withRatio && base ? `${si(x)} (${fmtRatio(ratio(results, op, mode, base))})${mark}` : `${si(x)}${mark}`;
  };
  const disturbed = MODES.flatMap((mode) => ops.filter((op) => results[mode][op]?.foreign_cache_drops).map((op) => `${mode} ${OP_LABEL[op]}`));
  const md: string[] = [];
  md.push(`# bench/fs — cvmfs-ts vs local disk`);
  md.push('');
  md.push(`${date.slice(0, 10)}, ${describeMachine(machine)}; load average ${machine.load_start.join(', ')} at the start, ${machine.load_end?.join(', ') ?? '?'} at the end${machine.load_start[0]! > 0.5 * machine.cores ? ' (**a busy machine: other work ran alongside, timings are noisy**)' : ''}. Scale ${i.args.scale}, ${Math.round(i.durationS)} s in all${i.args.dropCaches ? '' : '; **page cache NOT dropped** (--no-drop-caches): "cold" is not cold'}${i.args.cpuProf ? '; **daemon under --cpu-prof** (slower)' : ''}.`);
  md.push('');
  md.push(
    `Tree: ${m.smallFiles.length} small files of ${m.spec.minSize / 1024}–${m.spec.maxSize / 1024} KiB (${si(m.smallBytes / 1e6)} MB, about half compressible) in ${m.dirs.length} directories, ` +
      `${m.bigFiles.length} × ${si(m.spec.bigSize / 2 ** 20)} MiB files, ${m.paths.length} paths; ${m.nestedCatalogs} nested catalog${m.nestedCatalogs === 1 ? '' : 's'} (one per top-level directory). ` +
      `cvmfs-ts: \`cvmfs-ts serve\` on 127.0.0.1, proxy DIRECT, CVMFS_KCACHE_TIMEOUT=${i.args.kcacheTimeout} s${i.args.kcacheTimeout === 60 ? '' : ' (default 60; long so hot passes stay hot)'}, quota ${i.quotaMb} MB, fuse-native ${i.fuseNativePatched ? 'patched (per-open page-cache flags)' : 'unpatched (auto_cache)'}.`,
  );
  md.push('');
  md.push('## Targets (what the C++ client reached on this machine)');
  md.push('');
  md.push('| ratio | cvmfs-ts | target | |');
  md.push('|---|---|---|---|');
  for (const r of ratios) md.push(`| ${r.label} | ${fmtRatio(r.value)} | ≥ ${r.target}× | ${r.met === undefined ? 'not measured' : r.met ? 'met' : '**missed**'} |`);
  md.push('');
  md.push('## Throughput (cvmfs columns: ratio to local-cold, hot to local-hot)');
  md.push('');
  md.push(`| operation | ${MODES.join(' | ')} |`);
  md.push(`|---|${MODES.map(() => '---:').join('|')}|`);
  const rows: [Op, string, (r: PassResult) => number | undefined, boolean][] = [
    ['stat', 'stat (lstat/s)', (r) => r.ops_per_s, true],
    ['readdir', 'readdir (dirs/s)', (r) => r.ops_per_s, false],
    ['readdir', 'readdir (entries/s)', (r) => r.entries_per_s, true],
    ['small', 'small-file read (files/s)', (r) => r.files_per_s, true],
    ['small', 'small-file read (MB/s)', (r) => r.mb_per_s, false],
    ['big', 'big-file read (MB/s)', (r) => r.mb_per_s, true],
  ];
  for (const [op, label, v, withRatio] of rows) if (ops.includes(op)) md.push(`| ${label} | ${MODES.map((mode) => cell(mode, op, v, withRatio)).join(' | ')} |`);
  md.push('');
  md.push(`Hot columns: the median of ${i.args.hotRuns} run${i.args.hotRuns === 1 ? '' : 's'} (all runs in the JSON).`);
  if (disturbed.length > 0) {
    md.push(
      `† Another process dropped the page cache during this pass (hot: during every run of it, or the pass before it): ${disturbed.join(', ')}. ` +
        'Hot numbers marked so are partly cold; cold and warm ones are barely affected.',
    );
  }
  md.push('');
  md.push('## Latency per call, µs: p50 / p90 / p99 / max');
  md.push('');
  md.push('Per lstat, per directory listing, per small file (open + read + close), per 1 MiB read() of a big file.');
  md.push('');
  md.push(`| operation | ${MODES.join(' | ')} |`);
  md.push(`|---|${MODES.map(() => '---:').join('|')}|`);
  for (const op of ops) {
    md.push(
      `| ${OP_LABEL[op]} | ${MODES.map((mode) => {
        const l = results[mode][op]?.latency_us;
        return l ? `${si(l.p50)} / ${si(l.p90)} / ${si(l.p99)} / ${si(l.max)}` : 'n/a';
      }).join(' | ')} |`,
    );
  }
  if (ops.includes('big')) {
    md.push('');
    md.push('## Big files, MB/s each');
    md.push('');
    md.push(`| file | ${MODES.join(' | ')} |`);
    md.push(`|---|${MODES.map(() => '---:').join('|')}|`);
    for (const f of m.bigFiles) {
      md.push(`| ${f.path} | ${MODES.map((mode) => si(results[mode].big?.big_files?.find((b) => b.path === f.path)?.mb_per_s ?? NaN)).join(' | ')} |`);
    }
  }
  md.push('');
  md.push('## Where the time goes in cvmfs-ts passes');
  md.push('');
  md.push(
    'FUSE requests the kernel sent the daemon during the pass (`perf stat` on fuse:fuse_request_send, this mount only), CPU seconds (user + system, all threads) of the daemon, the server and the measuring process — ' +
      'time the measurer spends waiting for the daemon is not its CPU time — and the HTTP requests the server answered.',
  );
  md.push('');
  md.push('| pass | wall s | FUSE requests (by opcode) | requests/s | daemon CPU s (% of wall) | daemon CPU µs/request | daemon CPU s by thread: JS / libfuse / V8+libuv (user+sys) | server CPU s | HTTP requests | measurer CPU s |');
  md.push('|---|---:|---|---:|---:|---:|---|---:|---:|---:|');
  for (const op of ops) {
    for (const mode of ['cvmfs-cold', 'cvmfs-warm', 'cvmfs-hot'] as const) {
      const r = results[mode][op];
      if (!r?.cvmfs) continue;
      const c = r.cvmfs;
      const parts = Object.entries(c.fuse_requests ?? {})
        .filter(([k]) => k !== 'total')
        .sort((a, b) => b[1] - a[1])
        .map(([k, v]) => `${k} ${v}`);
      const byOp = c.fuse_requests ? `${c.fuse_requests.total}${parts.length ? `: ${parts.join(', ')}` : ''}` : 'n/a';
      md.push(
        `| ${mode} ${OP_LABEL[op]} | ${r.seconds.toFixed(2)} | ${byOp} | ${c.fuse_requests_per_s !== undefined ? si(c.fuse_requests_per_s) : 'n/a'} | ${c.daemon_cpu_s.toFixed(2)} (${Math.round((100 * c.daemon_cpu_s) / r.seconds)}%) | ${c.daemon_cpu_us_per_request !== undefined ? si(c.daemon_cpu_us_per_request) : 'n/a'} | ${(['js', 'fuse', 'other'] as const).map((k) => `${c.daemon_threads[k].user_s.toFixed(2)}+${c.daemon_threads[k].sys_s.toFixed(2)}`).join(' / ')} | ${c.server_cpu_s.toFixed(2)} | ${c.http_requests} | ${r.measurer_cpu_s.toFixed(2)} |`,
      );
    }
  }
  for (const [label, p] of Object.entries(i.profiles)) {
    md.push('');
    md.push(`### Daemon CPU profile — ${label}`);
    md.push('');
    md.push(`The JS thread was busy ${p.busy_ms} ms of ${p.wall_ms} ms (idle ${p.idle_ms} ms); shares of the busy time:`);
    md.push('');
    md.push(`- by category: ${p.categories.map((c) => `${c.name} ${c.pct}%`).join('; ')}`);
    md.push(`- top self time: ${p.functions.slice(0, 10).map((f) => `${f.pct}% \`${f.name}\``).join(', ')}`);
    md.push(`- cvmfs-ts functions, inclusive: ${p.inclusive.slice(0, 10).map((f) => `${f.pct}% \`${f.name}\``).join(', ')}`);
  }
  md.push('');
  md.push('## Method');
  md.push('');
  for (const mode of MODES) md.push(`- **${mode}**: ${MODE_INFO[mode].description}.`);
  md.push(
    '- Each operation gets its own cold, warm and hot sequence (a fresh mount for cvmfs-cold and cvmfs-warm), so one operation never warms another. ' +
      'Passes run in a separate measuring process, one synchronous call at a time, the same code for both trees; every result is checked against the tree (sizes, entry counts).',
  );
  md.push(
    '- stat: lstat of every path (directories and files, in walk order). readdir: one listing (getdents) of every directory. small-file read: open, read to EOF with a 64 KiB buffer, close, every small file. big-file read: each big file read sequentially with a 1 MiB buffer.',
  );
  md.push('- Cold cvmfs stat means: the root catalog came with the mount (not timed), the nested catalogs are fetched and opened on first use during the pass, every lookup is answered from SQLite (page cache dropped); hot stat is answered by the kernel\'s entry/attribute cache without a FUSE request while CVMFS_KCACHE_TIMEOUT lasts.');
  md.push(
    `- Hot passes run ${i.args.hotRuns} times, local and cvmfs alternating so that both meet the same load, after one unrecorded pass over the local tree (the drop before cvmfs-warm emptied its caches); the median run is shown. A pass during which another process dropped the page cache (\`/proc/vmstat\` drop_pagecache/drop_slab grew; for a hot run: since the start of the pass before it, whose caches it relies on) is marked †; for hot modes, runs without such a drop are preferred.`,
  );
  md.push('');

  const chartGroups = ops.map((op) => ({
    label: OP_LABEL[op],
    unit: HEADLINE_UNIT[op],
    values: Object.fromEntries(MODES.map((mode) => [mode, headline(op, results[mode][op])])),
    notes: Object.fromEntries(
      MODES.map((mode) => {
        const base = MODE_INFO[mode].baseline;
        const mark = results[mode][op]?.foreign_cache_drops ? ' †' : '';
        return [mode, base ? `${fmtRatio(ratio(results, op, mode, base))}${mark}` : mark.trim() || undefined];
      }),
    ),
  }));
  const svg = groupedBarChart({
    title: 'File system speed: cvmfs-ts vs local disk',
    subtitle: `${date.slice(0, 10)} · ${machine.cores} cores, ${machine.memory_gib} GiB, Node ${machine.node} · ${m.smallFiles.length} small files, ${m.bigFiles.length} × ${si(m.spec.bigSize / 2 ** 20)} MiB · load ${machine.load_start[0]}`,
    series: MODES.map((mode) => ({ key: mode, label: mode, color: MODE_INFO[mode].color })),
    groups: chartGroups,
    layout: 'panels',
    columns: 2,
    scale: 'log', // values span three orders of magnitude
    footnotes: [
      'Numbers under cvmfs bars: ratio to local-cold (cvmfs-cold, cvmfs-warm) or to local-hot (cvmfs-hot).',
      `Targets: ${TARGETS.map((t) => `${t.label} ≥ ${t.target}×`).join('; ')}.`,
      ...(i.args.dropCaches ? [] : ['Page cache NOT dropped (--no-drop-caches): cold passes are not cold.']),
      ...(MODES.some((mode) => ops.some((op) => results[mode][op]?.foreign_cache_drops)) ? ['†: another process dropped the page cache during this pass (a shared machine).'] : []),
    ],
  });
  return { json, md: md.join('\n') + '\n', svg };
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/fs: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
