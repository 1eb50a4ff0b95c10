/**
 * scripts/install.sh into a staging directory (DESTDIR), and a private mount namespace in which the
 * staged files are overlaid onto /usr/bin, /sbin (/usr/sbin) and /usr/libexec: tests run mount(8),
 * systemd-analyze and the helpers exactly as installed, and the machine itself never gets a
 * /sbin/mount.cvmfs-ts (which mount(8) only looks for there) nor a mount it could see.
 *
 * One sleeping process holds the namespace; commands run in it through nsenter, and its mounts are
 * reached from this process through /proc/PID/root. At teardown every process in the namespace (the
 * mount daemons started there) gets SIGTERM — so it unmounts — then SIGKILL, and the namespace
 * goes away with its last process.
 */
import { spawn, execFile } from 'node:child_process';
import { readdir, readFile, readlink, realpath } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Test } from 'tap';
import { waitForExit } from './mount';

export const CHECKOUT = resolve(__dirname, '../..');
export const INSTALL_SH = join(CHECKOUT, 'scripts', 'install.sh');

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function run(argv: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((done) => {
    execFile(argv[0]!, argv.slice(1), { env: { ...process.env, ...o.env }, timeout: o.timeoutMs ?? 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : null) : 0;
      done({ code, stdout, stderr: stderr || (err && code === null ? String(err) : '') });
    });
  });
}

/** Runs scripts/install.sh with DESTDIR=`stage` (plus `args`); fails the test if it fails. */
export async function stageInstall(stage: string, args: string[] = []): Promise<RunResult> {
  const r = await run(['bash', INSTALL_SH, ...args], { env: { DESTDIR: stage } });
  if (r.code !== 0) throw new Error(`install.sh ${args.join(' ')} exited with ${r.code}: ${r.stderr}`);
  return r;
}

export interface InstallNamespace {
  readonly pid: number;
  /** `p` (absolute, as seen inside the namespace) from this process. */
  path(p: string): string;
  /** Runs `argv` inside the namespace. */
  run(argv: readonly string[], o?: { env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<RunResult>;
  /** Whether `p` is a mount point inside the namespace, and of which type. */
  mountType(p: string): Promise<string | undefined>;
  stop(): Promise<void>;
}

async function mountNamespaceOf(pid: number): Promise<string | undefined> {
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => undefined);
}

/** The processes (other than `holder`) living in `holder`'s mount namespace. */
async function processesIn(holder: number): Promise<number[]> {
  const ns = await mountNamespaceOf(holder);
  if (!ns) return [];
  const pids: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === holder) continue;
    if ((await mountNamespaceOf(Number(name))) === ns) pids.push(Number(name));
  }
  return pids;
}

/** `privateRun`: a tmpfs on /run too (automount keeps its fifos and flag file there). */
export async function installNamespace(t: Test, stage: string, o: { privateRun?: boolean } = {}): Promise<InstallNamespace> {
  const overlays: [string, string][] = [
    [join(stage, 'usr/bin'), '/usr/bin'],
    [join(stage, 'sbin'), await realpath('/sbin')],
    [join(stage, 'usr/libexec'), '/usr/libexec'],
  ];
  const lines = ['set -e'];
  for (const [from, onto] of overlays) {
    // A read-only overlay (two lower layers, no upper): the staged files over the real directory.
    if (existsSync(from)) lines.push(`mount -t overlay cvmfs-ts-stage -o 'lowerdir=${from}:${onto}' '${onto}'`);
  }
  // libmount keeps userspace mount options (_netdev, helper=…) in /run/mount/utab: a private one.
  if (o.privateRun) lines.push('mount -t tmpfs cvmfs-ts-run /run');
  else if (existsSync('/run/mount')) lines.push('mount -t tmpfs cvmfs-ts-utab /run/mount');
  lines.push('echo ready', 'exec sleep infinity');
  const holder = spawn('unshare', ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', lines.join('\n')], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((done) => holder.once('exit', () => done()));
  const pid = holder.pid!;
  const stop = async () => {
    for (const signal of ['SIGTERM', 'SIGKILL'] as const) {
      const inside = await processesIn(pid);
      for (const p of inside) {
        try {
          process.kill(p, signal);
        } catch {
          // gone already
        }
      }
      await waitForExit(inside);
    }
    if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
    await exited;
  };
  t.teardown(stop);
  await new Promise<void>((ready, fail) => {
    let out = '';
    let err = '';
    holder.stdout.on('data', (d: Buffer) => {
      out += d;
      if (out.includes('ready')) ready();
    });
    holder.stderr.on('data', (d: Buffer) => (err += d));
    void exited.then(() => fail(new Error(`the namespace holder exited: ${err}`)));
  });
  return {
    pid,
    path: (p) => `/proc/${pid}/root${p}`,
    run: (argv, o) => run(['nsenter', '-t', String(pid), '-m', '--', ...argv], o),
    async mountType(p) {
      let type: string | undefined; // the last one mounted there is the one on top
      for (const line of (await readFile(`/proc/${pid}/mountinfo`, 'utf8')).split('\n')) {
        const f = line.split(' ');
        const dash = f.indexOf('-');
        if (dash > 0 && f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) === p) type = f[dash + 1];
      }
      return type;
    },
    stop,
  };
}
