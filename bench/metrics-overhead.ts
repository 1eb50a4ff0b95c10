/**
 * bench/metrics-overhead (issue 7): what Prometheus metrics cost on the FUSE path.
 *
 * Run (as root; needs FUSE and a built dist/, i.e. `npm run build` first):
 *   npx ts-node bench/metrics-overhead.ts [--calls N] [--rounds R] [--fuse-calls N] [--out DIR]
 * Writes DIR/metrics-overhead.{json,md} (default bench/results).
 *
 * Part 1, in-process: the FuseAdapter's per-call path (answer(): promise, reply, errno mapping) over
 *   a Filesystem stub answering at once, one call after the other (each answer issues the next), as
 *   the daemon sees them: without an observer; with an observer that does nothing but read the clock
 *   (the price of timing at all); with the mount's recorder (MountMetrics: FastHistogram child and
 *   errno map); and, for comparison, with pre-bound prom-client children (Histogram + Counter).
 *   Rounds alternate the variants; the best round shows the intrinsic cost on a busy machine, the
 *   median what a shared one gives.
 * Part 2, end to end: three mounts of one small repository, each served by its own daemon: two
 *   without metrics (their difference is the noise floor of this machine) and one with
 *   CVMFS_TS_METRICS_LISTEN; getxattr(user.fqrn) on each mount root (it always reaches the daemon:
 *   the kernel caches no xattrs; the binding asks twice, size then value), rounds rotating the order
 *   of the mounts; µs per call.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { getAttributeSync } from '@napi-rs/xattr';
import { Counter, Histogram, Registry } from 'prom-client';
import { FuseAdapter, FUSE_OPS, type FuseObserver, type FuseOp } from '../src/fuse/adapter';
import type { Filesystem, FsStat } from '../src/client/filesystem';
import { MountMetrics } from '../src/metrics/mount-metrics';
import { publish } from '../src/publish/publisher';
import { createKeys, keyFiles } from '../src/publish/keys';

const ROOT = resolve(__dirname, '..');
const BIN = join(ROOT, 'bin', 'cvmfs-ts');
const FQRN = 'bench-metrics.cvmfs-ts.io';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const OUT = (() => {
  const i = process.argv.indexOf('--out');
  return i > 0 ? resolve(process.argv[i + 1]!) : join(ROOT, 'bench', 'results');
})();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

// ---- part 1: in-process ----

type Answer = (op: FuseOp, path: string, cb: (code: number, ...r: unknown[]) => void, run: () => Promise<FsStat>, reply: (v: FsStat) => void) => void;

function adapterAnswer(observe: FuseObserver | undefined): Answer {
  const stat = { mode: 0o100644, size: 1, uid: 0, gid: 0, mtime: new Date(0), atime: new Date(0), ctime: new Date(0), nlink: 1, ino: 2 } as unknown as FsStat;
  const fs = { getattr: async () => stat } as unknown as Filesystem;
  const adapter = new FuseAdapter(fs, { mountpoint: '/nonexistent', kcacheTimeoutS: 60, checkPermissions: false, onIoError: () => undefined, observe });
  // The private per-call path itself: no kernel, no binding.
  const answer = (adapter as unknown as { answer: Answer }).answer.bind(adapter);
  return answer;
}

function promClientObserver(): FuseObserver {
  const registry = new Registry();
  const h = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['op'], buckets: [1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry] });
  const c = new Counter({ name: 'c_total', help: 'c', labelNames: ['op'], registers: [registry] });
  return Object.fromEntries(
    FUSE_OPS.map((op) => {
      const hc = h.labels({ op });
      const cc = c.labels({ op });
      return [op, (started: number) => (hc.observe((performance.now() - started) / 1000), cc.inc())];
    }),
  ) as unknown as FuseObserver;
}

function clockOnlyObserver(): FuseObserver {
  let sink = 0;
  return Object.fromEntries(FUSE_OPS.map((op) => [op, (started: number) => void (sink += performance.now() - started)])) as unknown as FuseObserver;
}

function mountMetricsObserver(): FuseObserver {
  const m = new MountMetrics({ fqrn: FQRN, version: 'bench', fuseOps: FUSE_OPS, processMetrics: false });
  return Object.fromEntries(
    FUSE_OPS.map((op) => {
      const meter = m.fuseOp(op);
      return [op, (started: number, errno: number) => meter.record((performance.now() - started) / 1000, errno)];
    }),
  ) as unknown as FuseObserver;
}

/** ns per call of `calls` getattr answers, each issued when the previous one was answered. */
function runCalls(answer: Answer, calls: number): Promise<number> {
  return new Promise((done) => {
    const stat = {} as FsStat;
    const run = async () => stat;
    let i = 0;
    const t0 = process.hrtime.bigint();
    const next = () => {
      if (++i === calls) return done(Number(process.hrtime.bigint() - t0) / calls);
      answer('getattr', '/some/path', next, run, next);
    };
    answer('getattr', '/some/path', next, run, next);
  });
}

const best = (xs: number[]) => Math.min(...xs);

async function inProcess(calls: number, rounds: number) {
  const variants = {
    none: adapterAnswer(undefined),
    'clock only': adapterAnswer(clockOnlyObserver()),
    'mount metrics': adapterAnswer(mountMetricsObserver()),
    'prom-client children': adapterAnswer(promClientObserver()),
  };
  const ns: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (const a of Object.values(variants)) await runCalls(a, calls); // warm-up (JIT)
  for (let r = 0; r < rounds; r++) for (const [k, a] of Object.entries(variants)) ns[k]!.push(await runCalls(a, calls));
  const [b, m] = [best(ns.none!), median(ns.none!)];
  return Object.fromEntries(
    Object.entries(ns).map(([k, v]) => [k, { bestNs: best(v), bestOverheadNs: best(v) - b, medianNs: median(v), medianOverheadNs: median(v) - m, rounds: v }]),
  );
}

// ---- part 2: end to end ----

function waitForLine(child: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((done, fail) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) done(m);
    });
    child.on('exit', (code) => fail(new Error(`exited with ${code}`)));
  });
}

async function endToEnd(dir: string, calls: number, rounds: number) {
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  const keys = join(dir, 'keys');
  await mkdir(src, { recursive: true });
  await writeFile(join(src, 'f.txt'), 'x\n');
  await createKeys(FQRN, keys);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys });
  const server = spawn(process.execPath, [BIN, 'serve', repoDir, '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const mounts: string[] = [];
  try {
    const url = (await waitForLine(server, /serving .* at (http:\/\/\S+)\n/))[1]!;
    const mountpoints: Record<string, string> = {};
    for (const [name, extra] of [
      ['metrics off', ''],
      ['metrics off (2nd daemon)', ''],
      ['metrics on', 'CVMFS_TS_METRICS_LISTEN=127.0.0.1:0\n'],
    ] as const) {
      const base = join(dir, name.replace(/\W+/g, '-'));
      const conf = join(base, 'etc');
      await mkdir(join(conf, 'config.d'), { recursive: true });
      await writeFile(join(conf, 'default.local'), `CVMFS_HTTP_PROXY=DIRECT\nCVMFS_CACHE_BASE=${join(base, 'cache')}\n`);
      await writeFile(join(conf, 'config.d', `${FQRN}.conf`), `CVMFS_SERVER_URL=${url}\nCVMFS_PUBLIC_KEY=${keyFiles(FQRN, keys).masterPublicKey}\n${extra}`);
      const mp = join(base, 'mnt');
      await mkdir(mp, { recursive: true });
      const r = spawnSync(process.execPath, [BIN, 'mount', FQRN, mp, '--config-root', conf, '--log', join(base, 'mount.log')], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`mount failed: ${r.stderr}`);
      mounts.push(mp);
      mountpoints[name] = mp;
    }
    const us: Record<string, number[]> = Object.fromEntries(Object.keys(mountpoints).map((k) => [k, []]));
    const measure = (mp: string) => {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < calls; i++) getAttributeSync(mp, 'user.fqrn');
      return Number(process.hrtime.bigint() - t0) / 1000 / calls;
    };
    for (const mp of Object.values(mountpoints)) measure(mp); // warm-up
    const order = Object.entries(mountpoints);
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < order.length; i++) {
        const [k, mp] = order[(r + i) % order.length]!; // each mount goes first, second, last in turn
        us[k]!.push(measure(mp));
      }
    }
    const [b, m] = [best(us['metrics off']!), median(us['metrics off']!)];
    return Object.fromEntries(
      Object.entries(us).map(([k, v]) => [k, { bestUs: best(v), bestOverheadUs: best(v) - b, medianUs: median(v), medianOverheadUs: median(v) - m, rounds: v }]),
    );
  } finally {
    for (const mp of mounts) spawnSync('umount', [mp]);
    server.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  const calls = arg('calls', 20_000);
  const rounds = arg('rounds', 21);
  const fuseCalls = arg('fuse-calls', 2000);
  const dir = await mkdtemp(join(tmpdir(), 'cvmfs-ts-bench-metrics-'));
  try {
    const part1 = await inProcess(calls, rounds);
    const part2 = await endToEnd(dir, fuseCalls, rounds);
    const result = {
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, model: cpus()[0]?.model, loadavg: loadavg() },
      node: process.version,
      inProcess: { calls, rounds, variants: part1 },
      endToEnd: { op: 'getxattr user.fqrn on the mount root', callsPerRound: fuseCalls, rounds, variants: part2 },
    };
    await mkdir(OUT, { recursive: true });
    await writeFile(join(OUT, 'metrics-overhead.json'), JSON.stringify(result, null, 2) + '\n');
    const md = [
      '# FUSE-path cost of Prometheus metrics',
      '',
      `${result.date}, ${result.machine.cpus} × ${result.machine.model}, load ${result.machine.loadavg.map((l) => l.toFixed(2)).join(' ')}, Node ${result.node}.`,
      '',
      `In-process: FuseAdapter.answer() over a stub, ${calls} sequential getattr calls per round, ${rounds} rounds.`,
      '',
      '| variant | best ns/call | overhead | median ns/call | overhead |',
      '|---|---:|---:|---:|---:|',
      ...Object.entries(part1).map(
        ([k, v]) => `| ${k} | ${v.bestNs.toFixed(0)} | ${v.bestOverheadNs.toFixed(0)} | ${v.medianNs.toFixed(0)} | ${v.medianOverheadNs.toFixed(0)} |`,
      ),
      '',
      `End to end: ${fuseCalls} getxattr(user.fqrn) per round through the kernel, ${rounds} rounds rotating the order; the two mounts without metrics give the noise floor.`,
      '',
      '| mount | best µs/call | overhead | median µs/call | overhead |',
      '|---|---:|---:|---:|---:|',
      ...Object.entries(part2).map(
        ([k, v]) => `| ${k} | ${v.bestUs.toFixed(1)} | ${v.bestOverheadUs.toFixed(1)} | ${v.medianUs.toFixed(1)} | ${v.medianOverheadUs.toFixed(1)} |`,
      ),
      '',
    ].join('\n');
    await writeFile(join(OUT, 'metrics-overhead.md'), md);
    process.stdout.write(md);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

void main().catch((e: unknown) => {
  process.stderr.write(`${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
