/**
 * bench/fs end to end at a tiny scale: tree, publish, serve, mount, every mode and operation,
 * cleanup — and sane fs.{json,md,svg}. No timing assertions (the numbers of a tiny tree on a
 * shared machine mean nothing); the page cache is not dropped (--no-drop-caches), so the test does
 * not slow down whatever else runs on the machine.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');
const MODES = ['local-cold', 'local-hot', 'cvmfs-cold', 'cvmfs-warm', 'cvmfs-hot'];
const OPS = ['stat', 'readdir', 'small', 'big'];

interface Latency {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}
interface Pass {
  mode: string;
  op: string;
  count: number;
  seconds: number;
  ops_per_s: number;
  bytes?: number;
  entries?: number;
  latency_us: Latency;
  big_files?: unknown[];
  cvmfs?: { http_requests: number; daemon_cpu_s: number };
}
interface Report {
  bench: string;
  drop_caches: boolean;
  machine: { cores: number; node: string; load_start: number[] };
  tree: { small_files: number; small_bytes: number; directories: number; paths: number; big_files: number; big_file_bytes: number };
  results: Record<string, Record<string, Pass>>;
  ratios: { name: string; value: number; target: number; met: boolean }[];
}

function runBench(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  return new Promise((done) => {
    // Through env(1) without NODE_OPTIONS: tap puts its ESM hooks there for every node it spawns,
    // and they would load bench/fs.ts as an unknown ".ts" module instead of leaving it to ts-node.
    const argv = ['-u', 'NODE_OPTIONS', process.execPath, '-r', 'ts-node/register/transpile-only', join(ROOT, 'bench', 'fs.ts'), ...args];
    const child = spawn('env', argv, {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d));
    child.stderr.on('data', (d: Buffer) => (output += d));
    const timer = setTimeout(() => child.kill('SIGINT'), 420_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      done({ code, output });
    });
  });
}

t.test('bench/fs at a tiny scale writes sane results', { skip: process.getuid?.() !== 0 || !existsSync('/dev/fuse') ? 'needs root and /dev/fuse' : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'cvmfs-ts-bench-fs-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const benchDir = join(dir, 'bench');
  const out = join(dir, 'out');

  const r = await runBench(['--scale', '0.002', '--out', out, '--no-drop-caches', '--hot-runs', '1'], { BENCH_DIR: benchDir });
  if (!t.equal(r.code, 0, 'the bench exits 0')) {
    t.comment(r.output);
    return;
  }

  // Cleaned up: nothing mounted below the bench directory, no run directory left; the tree is kept.
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  t.notOk(mountinfo.includes(dir), 'nothing left mounted');
  const kept = await readdir(benchDir);
  t.ok(kept.length === 1 && kept[0]!.startsWith('tree-'), `only the cached tree is kept (${kept.join(', ')})`);

  const report = JSON.parse(await readFile(join(out, 'fs.json'), 'utf8')) as Report;
  t.equal(report.bench, 'fs');
  t.equal(report.drop_caches, false);
  t.ok(report.machine.cores > 0 && report.machine.node.startsWith('v') && report.machine.load_start.length === 3, 'machine described');
  t.equal(report.tree.small_files, 20, '20 small files at scale 0.002');
  t.equal(report.tree.big_files, 3);
  for (const mode of MODES) {
    for (const op of OPS) {
      const p = report.results[mode]?.[op];
      if (!t.ok(p, `${mode} ${op} measured`) || !p) continue;
      t.ok(p.count > 0 && p.seconds > 0 && Number.isFinite(p.ops_per_s) && p.ops_per_s > 0, `${mode} ${op}: count, time and rate`);
      const l = p.latency_us;
      t.ok(l.count === p.count && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max && l.p50 > 0, `${mode} ${op}: latency percentiles ordered`);
      if (op === 'stat') t.equal(p.count, report.tree.paths, `${mode}: every path stat'ed`);
      if (op === 'readdir') t.equal(p.count, report.tree.directories, `${mode}: every directory listed`);
      if (op === 'small') t.equal(p.bytes, report.tree.small_bytes, `${mode}: every small file read whole`);
      if (op === 'big') t.equal(p.bytes, 3 * report.tree.big_file_bytes, `${mode}: every big file read whole`);
      if (mode.startsWith('cvmfs')) t.ok(p.cvmfs && p.cvmfs.daemon_cpu_s >= 0, `${mode} ${op}: daemon accounted`);
    }
  }
  // The modes mean what they say: a cold pass downloads every file, a warm one nothing.
  t.ok(report.results['cvmfs-cold']!.small!.cvmfs!.http_requests >= report.tree.small_files, 'cvmfs-cold fetched every small file');
  t.equal(report.results['cvmfs-warm']!.small!.cvmfs!.http_requests, 0, 'cvmfs-warm read from the cache only');
  t.equal(report.ratios.length, 3, 'three target ratios');
  for (const ratio of report.ratios) t.ok(Number.isFinite(ratio.value) && ratio.value > 0 && typeof ratio.met === 'boolean', `ratio ${ratio.name}`);

  const md = await readFile(join(out, 'fs.md'), 'utf8');
  t.match(md, /^# bench\/fs/);
  t.match(md, /\| ratio \| cvmfs-ts \| target \|/);
  t.match(md, `| operation | ${MODES.join(' | ')} |`);
  for (const label of ['cold stat: cvmfs-cold / local-cold', 'warm-cache small-file read: cvmfs-warm / local-cold', 'hot stat: cvmfs-hot / local-hot']) t.ok(md.includes(label), `md names ${label}`);
  t.match(md, /page cache NOT dropped/);
  t.notOk(/NaN|undefined/.test(md), 'no NaN/undefined in the table');

  const svg = await readFile(join(out, 'fs.svg'), 'utf8');
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg" width="\d+" height="\d+"/);
  t.ok(svg.trimEnd().endsWith('</svg>'), 'svg closed');
  t.equal((svg.match(/<text /g) ?? []).length, (svg.match(/<\/text>/g) ?? []).length, 'text elements balanced');
  t.ok((svg.match(/<title>/g) ?? []).length >= MODES.length * OPS.length, 'one bar per mode and operation');
  for (const mode of MODES) t.ok(svg.includes(`>${mode}</text>`), `legend names ${mode}`);
  t.notOk(/NaN|undefined/.test(svg), 'no NaN/undefined in the chart');
});
