/**
 * Counts the FUSE requests the kernel sends to one mount, by opcode, while a pass runs: `perf stat`
 * on the fuse:fuse_request_send tracepoint (Linux ≥ 6.x), filtered on the mount's connection so
 * other FUSE mounts on the machine do not count. Optional: without perf or the tracepoint, the
 * counter is simply unavailable.
 */
import { spawn, type ChildProcess } from 'node:child_process';

/** The opcodes worth telling apart for a read-only file system (others count in `total` only). */
export const FUSE_OPCODES: Readonly<Record<number, string>> = {
  1: 'LOOKUP',
  3: 'GETATTR',
  14: 'OPEN',
  15: 'READ',
  18: 'RELEASE',
  22: 'GETXATTR',
  25: 'FLUSH',
  27: 'OPENDIR',
  28: 'READDIR',
  29: 'RELEASEDIR',
  44: 'READDIRPLUS',
  52: 'STATX',
};

export type FuseCounts = Record<string, number> & { total: number };

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

let available: Promise<string | undefined> | undefined;

/** undefined when counting works here, else why not. */
export function fuseTraceUnavailable(): Promise<string | undefined> {
  available ??= new Promise((done) => {
    const child = spawn('perf', ['stat', '-x', ',', '-e', 'fuse:fuse_request_send', '--', 'true'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d));
    child.on('error', (e) => done(`perf: ${e.message}`));
    child.on('close', (code) => done(code === 0 && /fuse:fuse_request_send/.test(err) && !/not supported|unknown/i.test(err) ? undefined : `perf stat -e fuse:fuse_request_send failed: ${err.trim().split('\n')[0]}`));
  });
  return available;
}

export class FuseRequestCounter {
  private constructor(
    private readonly child: ChildProcess,
    private readonly closed: Promise<string>,
    private readonly names: string[],
  ) {}

  /** Starts counting the requests of FUSE connection `connection`; undefined if perf cannot. */
  static async start(connection: number): Promise<FuseRequestCounter | undefined> {
    if (await fuseTraceUnavailable()) return undefined;
    const args = ['stat', '-a', '-x', ','];
    const names: string[] = [];
    for (const [code, name] of Object.entries(FUSE_OPCODES)) {
      args.push('-e', 'fuse:fuse_request_send', '--filter', `connection == ${connection} && opcode == ${code}`);
      names.push(name);
    }
    args.push('-e', 'fuse:fuse_request_send', '--filter', `connection == ${connection}`);
    names.push('total');
    const child = spawn('perf', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d));
    const closed = new Promise<string>((done) => {
      child.on('close', () => done(err));
      child.on('error', () => done(''));
    });
    // perf stat has no "ready" signal; opening a few dozen tracepoint events takes well under this.
    await sleep(400);
    if (child.exitCode !== null) return undefined;
    return new FuseRequestCounter(child, closed, names);
  }

  /** Stops counting; counts by opcode name (and `total`), or undefined if perf failed. */
  async stop(): Promise<FuseCounts | undefined> {
    this.child.kill('SIGINT');
    const out = await this.closed;
    const lines = out.split('\n').filter((l) => l.includes('fuse:fuse_request_send'));
    if (lines.length !== this.names.length) return undefined;
    const counts = { total: 0 } as FuseCounts;
    lines.forEach((l, i) => {
      const n = Number(l.split(',')[0]);
      if (Number.isFinite(n) && (n > 0 || this.names[i] === 'total')) counts[this.names[i]!] = n;
    });
    return counts;
  }
}
