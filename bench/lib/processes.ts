/**
 * Processes and system state for the benches: `cvmfs-ts serve` and `cvmfs-ts mount` each in their
 * own process (as in production; the bench process never serves a mount it reads), registered on a
 * Cleanup (./proc), the page-cache drop, and per-process CPU accounting.
 *
 * Nothing here touches a FUSE mountpoint with a synchronous call: mount state comes from
 * /proc/self/mountinfo, the daemon's PID from an (async) xattr read.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { alive, run, sleep, waitExit, type Cleanup, type RunOutput } from './proc';

export const ROOT = resolve(__dirname, '../..');
export const BIN = join(ROOT, 'bin', 'cvmfs-ts');

/** bin/cvmfs-ts runs dist/: fail early with the fix when it was not built. */
export function assertBuilt(): void {
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error(`${join(ROOT, 'dist')} is missing: run \`npm run build\` first`);
}

/** Runs `cvmfs-ts ARGS` in its own process; throws with its stderr unless it exits 0. */
export async function cvmfsTs(args: string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunOutput> {
  const r = await run([process.execPath, BIN, ...args], { env: o.env, timeoutMs: o.timeoutMs ?? 600_000, allowFail: true });
  if (r.code !== 0) throw new Error(`cvmfs-ts ${args[0]} exited with ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

/** User + system CPU seconds a process has used so far (children not included); NaN if gone. */
export async function cpuSeconds(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

export interface ThreadCpu {
  user_s: number;
  sys_s: number;
}

/** Per thread of a FUSE daemon: CPU so far, and where it sleeps now (/proc/PID/task/TID/wchan). */
export type ThreadSnapshot = Map<number, ThreadCpu & { wchan: string }>;

export async function threadSnapshot(pid: number): Promise<ThreadSnapshot> {
  const out: ThreadSnapshot = new Map();
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const wchan = await readFile(`/proc/${pid}/task/${tid}/wchan`, 'utf8').catch(() => '');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(tid), { user_s: Number(f[11]) / CLK_TCK, sys_s: Number(f[12]) / CLK_TCK, wchan });
    } catch {
      // the thread ended
    }
  }
  return out;
}

/**
 * CPU of a Node FUSE daemon's threads between two snapshots, by role: `js` (the main thread, which
 * runs every file system operation), `fuse` (libfuse's loop threads: idle in fuse_dev_do_read at
 * the second snapshot), `other` (V8 and libuv worker threads). Thread names do not help: all are "node".
 */
export function daemonThreadCpu(pid: number, before: ThreadSnapshot, after: ThreadSnapshot): Record<'js' | 'fuse' | 'other', ThreadCpu> {
  const out = { js: { user_s: 0, sys_s: 0 }, fuse: { user_s: 0, sys_s: 0 }, other: { user_s: 0, sys_s: 0 } };
  for (const [tid, a] of after) {
    const b = before.get(tid) ?? { user_s: 0, sys_s: 0 };
    const role = tid === pid ? 'js' : a.wchan.startsWith('fuse_dev') ? 'fuse' : 'other';
    out[role].user_s += Math.max(0, a.user_s - b.user_s);
    out[role].sys_s += Math.max(0, a.sys_s - b.sys_s);
  }
  for (const t of Object.values(out)) {
    t.user_s = Math.round(t.user_s * 100) / 100;
    t.sys_s = Math.round(t.sys_s * 100) / 100;
  }
  return out;
}

/**
 * How often the page cache or the slab caches were dropped so far, by anyone (/proc/vmstat
 * drop_pagecache + drop_slab): on a shared machine, another process dropping caches during a
 * "hot" pass makes it partly cold.
 */
export async function cacheDropCounts(): Promise<{ pagecache: number; slab: number }> {
  const vmstat = await readFile('/proc/vmstat', 'utf8');
  const n = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, 'm').exec(vmstat)?.[1] ?? 0);
  return { pagecache: n('drop_pagecache'), slab: n('drop_slab') };
}

/** Cache drops between two cacheDropCounts() (`echo 3` counts once). */
export function cacheDropsBetween(a: { pagecache: number; slab: number }, b: { pagecache: number; slab: number }): number {
  return Math.max(b.pagecache - a.pagecache, b.slab - a.slab);
}

/** Resident set size of a process in MB (NaN if gone). */
export async function rssMb(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]) / 1024;
  } catch {
    return NaN;
  }
}

/** `sync; echo 3 > /proc/sys/vm/drop_caches`: page cache, dentries and inodes. Returns seconds taken. */
export async function dropCaches(): Promise<number> {
  const t0 = Date.now();
  await run(['sh', '-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
  return (Date.now() - t0) / 1000;
}

export interface MachineInfo {
  cores: number;
  cpu: string;
  memory_gib: number;
  kernel: string;
  node: string;
  /** 1, 5, 15 minute load averages when the bench started and ended. */
  load_start: number[];
  load_end?: number[];
}

export function machineInfo(): MachineInfo {
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    memory_gib: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    node: process.version,
    load_start: loadavg().map((l) => Math.round(l * 100) / 100),
  };
}

export function describeMachine(m: MachineInfo): string {
  return `${m.cores} cores (${m.cpu}), ${m.memory_gib} GiB, Linux ${m.kernel}, Node ${m.node}`;
}

export interface ServedRepository {
  url: string;
  pid: number;
  /** Requests answered so far (access-log lines). */
  requests(): number;
  stop(): Promise<void>;
}

/** `cvmfs-ts serve REPO --port 0 --prefix PREFIX` in its own process. */
export async function startServer(repoDir: string, prefix: string, cleanup: Cleanup): Promise<ServedRepository> {
  const child = spawn(process.execPath, [BIN, 'serve', repoDir, '--port', '0', '--host', '127.0.0.1', '--prefix', prefix], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((done) => child.on('close', () => done()));
  const { run: stop } = cleanup.add(
    'server',
    async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
    () => void child.kill('SIGKILL'),
  );
  let requests = 0;
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d));
  const url = await new Promise<string>((done, fail) => {
    let buffered = '';
    child.stdout.on('data', (d: Buffer) => {
      buffered += d.toString();
      const lines = buffered.split('\n');
      buffered = lines.pop()!;
      for (const l of lines) {
        const m = /^serving .* at (http:\/\/\S+)$/.exec(l);
        if (m) done(m[1]!);
        else if (l) requests++;
      }
    });
    child.on('close', (code) => fail(new Error(`cvmfs-ts serve exited with ${code}: ${stderr.trim()}`)));
  });
  return { url, pid: child.pid!, requests: () => requests, stop };
}

export interface ClientConfig {
  fqrn: string;
  serverUrl: string;
  publicKey: string;
  cacheBase: string;
  /** More PARAM=value lines. */
  params?: Record<string, string | number>;
}

/** A private configuration root (default.local + config.d/FQRN.conf) under `dir`. */
export async function writeConfigRoot(dir: string, c: ClientConfig): Promise<string> {
  const root = join(dir, 'etc-cvmfs');
  await mkdir(join(root, 'config.d'), { recursive: true });
  const params = { CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_CACHE_BASE: c.cacheBase, ...c.params };
  await writeFile(join(root, 'default.local'), Object.entries(params).map(([k, v]) => `${k}=${v}\n`).join(''));
  await writeFile(join(root, 'config.d', `${c.fqrn}.conf`), `CVMFS_SERVER_URL=${c.serverUrl}\nCVMFS_PUBLIC_KEY=${c.publicKey}\n`);
  return root;
}

interface MountinfoEntry {
  mountpoint: string;
  /** major:minor of the mounted file system. */
  device: string;
  fsType: string;
}

async function mountinfo(): Promise<MountinfoEntry[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const unescape = (f: string) => f.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const f = line.split(' ');
      return { mountpoint: unescape(f[4]!), device: f[2]!, fsType: f[f.indexOf('-') + 1] ?? '' };
    });
}

export async function isMounted(mountpoint: string): Promise<boolean> {
  return (await mountinfo()).some((m) => m.mountpoint === mountpoint);
}

export interface MountedRepository {
  mountpoint: string;
  /** The serving daemon's PID. */
  pid: number;
  /** The FUSE connection number (/sys/fs/fuse/connections/N; the kernel's dev_t of the mount). */
  connection: number;
  logFile: string;
  /** umount(8), then waits for the daemon to exit (SIGTERM/SIGKILL if it does not). */
  unmount(): Promise<void>;
}

/** `cvmfs-ts mount FQRN MOUNTPOINT --config-root ROOT --log LOG`: returns once mounted. */
export async function mountRepository(
  o: { fqrn: string; mountpoint: string; configRoot: string; logFile: string; env?: NodeJS.ProcessEnv },
  cleanup: Cleanup,
): Promise<MountedRepository> {
  const mountpoint = resolve(o.mountpoint);
  await mkdir(mountpoint, { recursive: true });
  let pid = 0;
  const lazyUnmount = () => void spawnSync('fusermount', ['-uz', mountpoint], { stdio: 'ignore' });
  const teardown = async (gently: boolean) => {
    if (gently && (await isMounted(mountpoint))) await run(['umount', mountpoint]).catch(() => undefined);
    if (pid && !(await waitExit(pid, gently ? 10_000 : 0))) {
      process.kill(pid, 'SIGTERM'); // the daemon unmounts and exits
      if (!(await waitExit(pid, 5000))) process.kill(pid, 'SIGKILL');
    }
    if (await isMounted(mountpoint)) lazyUnmount();
  };
  const forced = cleanup.add('mount', () => teardown(false), () => {
    lazyUnmount();
    if (pid && alive(pid)) process.kill(pid, 'SIGKILL');
  });
  try {
    await cvmfsTs(['mount', o.fqrn, mountpoint, '--config-root', o.configRoot, '--log', o.logFile], { env: o.env, timeoutMs: 120_000 });
    pid = Number((await getAttribute(mountpoint, 'user.pid'))?.toString());
    const entry = (await mountinfo()).find((m) => m.mountpoint === mountpoint);
    if (!entry || !pid) throw new Error(`${mountpoint}: mounted, but no daemon PID or mountinfo entry`);
    const [major, minor] = entry.device.split(':').map(Number) as [number, number];
    return {
      mountpoint,
      pid,
      connection: (major << 20) | minor,
      logFile: o.logFile,
      unmount: async () => {
        if (!forced.forget()) return; // already torn down
        try {
          await teardown(true); // as users do: umount, the daemon notices and exits
        } catch (e) {
          await teardown(false);
          throw e;
        }
      },
    };
  } catch (e) {
    await forced.run();
    const log = await readFile(o.logFile, 'utf8').catch(() => '');
    throw new Error(`${(e as Error).message}\n${log.split('\n').slice(-10).join('\n')}`);
  }
}
