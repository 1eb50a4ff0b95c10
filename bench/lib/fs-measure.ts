/**
 * The measuring process of bench/fs, and its client. The same code measures the local tree and the
 * cvmfs-ts mount, one operation over the whole tree per pass, one call at a time, timing every
 * call. It runs in a process of its own (forked by the bench): neither the mount's daemon nor the
 * HTTP server shares its event loop, and its synchronous file calls block only itself.
 *
 * Passes (every one checks what it reads against the tree's manifest and fails on a difference):
 * - stat: lstat of every path below the root;
 * - readdir: a listing (getdents) of every directory;
 * - small: open + read (64 KiB buffer, to EOF) + close of every small file;
 * - big: sequential read (1 MiB buffer) of each big file.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { closeSync, lstatSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { summarize, type LatencySummary } from './stats';
import type { FsTreeManifest } from './fs-tree';

export const OPS = ['stat', 'readdir', 'small', 'big'] as const;
export type Op = (typeof OPS)[number];

export interface BigFileResult {
  path: string;
  bytes: number;
  seconds: number;
  mb_per_s: number;
}

export interface OpResult {
  op: Op;
  /** Calls timed: paths stat'ed, directories listed, files read (small), read() calls (big). */
  count: number;
  seconds: number;
  ops_per_s: number;
  /** Directory entries listed (readdir). */
  entries?: number;
  entries_per_s?: number;
  /** Files read (small, big). */
  files?: number;
  files_per_s?: number;
  bytes?: number;
  mb_per_s?: number;
  /** Per call (stat, readdir, small: per file; big: per 1 MiB read()), in µs. */
  latency_us: LatencySummary;
  big_files?: BigFileResult[];
}

const hr = () => process.hrtime.bigint();
const us = (a: bigint, b: bigint) => Number(b - a) / 1e3;
const SMALL_BUFFER = 64 * 1024;
const BIG_BUFFER = 1 << 20;

function measureStat(root: string, m: FsTreeManifest): OpResult {
  const paths = m.paths.map((p) => join(root, p.path));
  const lat = new Float64Array(paths.length);
  const start = hr();
  let prev = start;
  for (let i = 0; i < paths.length; i++) {
    const s = lstatSync(paths[i]!);
    const now = hr();
    lat[i] = us(prev, now);
    prev = now;
    const want = m.paths[i]!.size;
    if (want === undefined ? !s.isDirectory() : s.size !== want) throw new Error(`${paths[i]}: lstat says ${s.isDirectory() ? 'directory' : `size ${s.size}`}, expected ${want ?? 'a directory'}`);
  }
  const seconds = us(start, prev) / 1e6;
  return { op: 'stat', count: paths.length, seconds, ops_per_s: paths.length / seconds, latency_us: summarize(lat) };
}

function measureReaddir(root: string, m: FsTreeManifest): OpResult {
  const dirs = m.dirs.map((d) => join(root, d.path));
  const lat = new Float64Array(dirs.length);
  let entries = 0;
  const start = hr();
  let prev = start;
  for (let i = 0; i < dirs.length; i++) {
    const names = readdirSync(dirs[i]!);
    const now = hr();
    lat[i] = us(prev, now);
    prev = now;
    entries += names.length;
    if (names.length !== m.dirs[i]!.entries) throw new Error(`${dirs[i]}: ${names.length} entries listed, expected ${m.dirs[i]!.entries}`);
  }
  const seconds = us(start, prev) / 1e6;
  return {
    op: 'readdir',
    count: dirs.length,
    seconds,
    ops_per_s: dirs.length / seconds,
    entries,
    entries_per_s: entries / seconds,
    latency_us: summarize(lat),
  };
}

function readToEnd(fd: number, buffer: Buffer, lat?: number[]): number {
  let total = 0;
  for (;;) {
    const t0 = lat ? hr() : 0n;
    const n = readSync(fd, buffer, 0, buffer.length, null);
    if (lat) lat.push(us(t0, hr()));
    if (n === 0) return total;
    total += n;
  }
}

function measureSmall(root: string, m: FsTreeManifest): OpResult {
  const files = m.smallFiles.map((f) => join(root, f.path));
  const buffer = Buffer.allocUnsafe(SMALL_BUFFER);
  const lat = new Float64Array(files.length);
  let bytes = 0;
  const start = hr();
  let prev = start;
  for (let i = 0; i < files.length; i++) {
    const fd = openSync(files[i]!, 'r');
    let n: number;
    try {
      n = readToEnd(fd, buffer);
    } finally {
      closeSync(fd);
    }
    const now = hr();
    lat[i] = us(prev, now);
    prev = now;
    bytes += n;
    if (n !== m.smallFiles[i]!.size) throw new Error(`${files[i]}: read ${n} bytes, expected ${m.smallFiles[i]!.size}`);
  }
  const seconds = us(start, prev) / 1e6;
  return {
    op: 'small',
    count: files.length,
    seconds,
    ops_per_s: files.length / seconds,
    files: files.length,
    files_per_s: files.length / seconds,
    bytes,
    mb_per_s: bytes / 1e6 / seconds,
    latency_us: summarize(lat),
  };
}

function measureBig(root: string, m: FsTreeManifest): OpResult {
  const buffer = Buffer.allocUnsafe(BIG_BUFFER);
  const lat: number[] = [];
  const big_files: BigFileResult[] = [];
  for (const f of m.bigFiles) {
    const path = join(root, f.path);
    const t0 = hr();
    const fd = openSync(path, 'r');
    let n: number;
    try {
      n = readToEnd(fd, buffer, lat);
    } finally {
      closeSync(fd);
    }
    const seconds = us(t0, hr()) / 1e6;
    if (n !== f.size) throw new Error(`${path}: read ${n} bytes, expected ${f.size}`);
    big_files.push({ path: f.path, bytes: n, seconds, mb_per_s: n / 1e6 / seconds });
  }
  const seconds = big_files.reduce((a, b) => a + b.seconds, 0);
  const bytes = big_files.reduce((a, b) => a + b.bytes, 0);
  return {
    op: 'big',
    count: lat.length,
    seconds,
    ops_per_s: lat.length / seconds,
    files: big_files.length,
    files_per_s: big_files.length / seconds,
    bytes,
    mb_per_s: bytes / 1e6 / seconds,
    latency_us: summarize(lat),
    big_files,
  };
}

export function measure(op: Op, root: string, m: FsTreeManifest): OpResult {
  switch (op) {
    case 'stat':
      return measureStat(root, m);
    case 'readdir':
      return measureReaddir(root, m);
    case 'small':
      return measureSmall(root, m);
    case 'big':
      return measureBig(root, m);
  }
}

interface Request {
  id: number;
  op: Op;
  root: string;
}
type Reply = { id: number; result: OpResult } | { id: number; error: string } | { ready: true };

/** The bench's handle on its measuring process. */
export class Measurer {
  private nextId = 1;
  private readonly pending = new Map<number, { done: (r: OpResult) => void; fail: (e: Error) => void }>();
  private exitError: Error | undefined;

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (msg: Reply) => {
      if ('ready' in msg) return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if ('error' in msg) p?.fail(new Error(msg.error));
      else p?.done(msg.result);
    });
    child.on('exit', (code, signal) => {
      this.exitError = new Error(`the measuring process exited (${signal ?? code})`);
      for (const p of this.pending.values()) p.fail(this.exitError);
      this.pending.clear();
    });
  }

  /** Forks the measuring process (through ts-node when running from source) and waits until it has loaded the manifest. */
  static async start(manifestFile: string, cwd: string): Promise<Measurer> {
    const fromSource = __filename.endsWith('.ts');
    const child = fork(__filename, [manifestFile], {
      cwd,
      execArgv: fromSource ? ['-r', 'ts-node/register/transpile-only'] : [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await new Promise<void>((done, fail) => {
      child.once('message', () => done());
      child.once('exit', (code) => fail(new Error(`the measuring process exited with ${code} before it was ready`)));
    });
    return new Measurer(child);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Runs one pass; kills the measurer if it takes longer than `timeoutMs`. */
  measure(op: Op, root: string, timeoutMs: number): Promise<OpResult> {
    if (this.exitError) return Promise.reject(this.exitError);
    const id = this.nextId++;
    return new Promise<OpResult>((done, fail) => {
      const timer = setTimeout(() => {
        fail(new Error(`${op} pass on ${root} took longer than ${timeoutMs / 1000} s`));
        this.child.kill('SIGKILL');
      }, timeoutMs);
      this.pending.set(id, {
        done: (r) => (clearTimeout(timer), done(r)),
        fail: (e) => (clearTimeout(timer), fail(e)),
      });
      this.child.send({ id, op, root } satisfies Request);
    });
  }

  stop(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

if (require.main === module) {
  const manifest = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as FsTreeManifest;
  process.on('message', (req: Request) => {
    let reply: Reply;
    try {
      reply = { id: req.id, result: measure(req.op, req.root, manifest) };
    } catch (e) {
      reply = { id: req.id, error: (e as Error).message };
    }
    process.send!(reply);
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ ready: true } satisfies Reply);
}
