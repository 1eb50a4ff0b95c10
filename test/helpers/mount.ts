/**
 * Mounting repositories in tests the way users do: `cvmfs-ts mount` in its own process, with a
 * private configuration root and cache; always unmounted (and the daemon stopped) at teardown.
 */
import { mkdir, open, writeFile, readFile } from 'node:fs/promises';
import { constants } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import type { Test } from 'tap';
import { runCli, type CliResult } from './cli';

export interface TestMount {
  mountpoint: string;
  configRoot: string;
  cacheBase: string;
  logFile: string;
  pid: number;
  /** Magic or catalog xattr of a path inside the mount, as text. */
  xattr(path: string, name: string): Promise<string>;
  log(): Promise<string>;
  unmount(): Promise<void>;
}

export interface MountSpec {
  fqrn: string;
  serverUrl: string;
  publicKey: string;
  /** Extra lines for config.d/<fqrn>.conf. */
  config?: string[];
  /** -o overrides. */
  options?: string;
  /** Reuse a cache base (e.g. to test warm caches, breadcrumbs, offline mode). */
  cacheBase?: string;
  /** Where to mount (default <dir>/mnt). */
  mountpoint?: string;
}

export async function writeConfigRoot(dir: string, s: MountSpec, cacheBase: string): Promise<string> {
  const root = join(dir, 'etc-cvmfs');
  await mkdir(join(root, 'config.d'), { recursive: true });
  await writeFile(
    join(root, 'default.local'),
    ['CVMFS_HTTP_PROXY=DIRECT', `CVMFS_CACHE_BASE=${cacheBase}`, 'CVMFS_TIMEOUT=3', 'CVMFS_TIMEOUT_DIRECT=3', 'CVMFS_BACKOFF_INIT=0', 'CVMFS_BACKOFF_MAX=0', ''].join('\n'),
  );
  await writeFile(
    join(root, 'config.d', `${s.fqrn}.conf`),
    [`CVMFS_SERVER_URL=${s.serverUrl}`, `CVMFS_PUBLIC_KEY=${s.publicKey}`, ...(s.config ?? []), ''].join('\n'),
  );
  return root;
}

/** Runs a cleanup command, ignoring failure (nothing mounted, already gone). */
export function quietly(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    // not mounted / already gone
  }
}

function unmountQuietly(mountpoint: string): void {
  quietly('fusermount', ['-uz', mountpoint]);
}

/** The pid of the daemon serving a cvmfs-ts mount (its user.pid xattr), or 0 when it is not mounted. */
export async function mountDaemonPid(mountpoint: string): Promise<number> {
  return getAttribute(mountpoint, 'user.pid').then((v) => Number(v?.toString() ?? 0), () => 0);
}

/**
 * Teardown of a repository mount, also of one a test did not make itself (started on demand by thin
 * mount or the snapshotter): lazy unmount, then wait for its daemon `pid` to exit, killing it after 5 s.
 */
export async function unmountDaemon(mountpoint: string, pid: number): Promise<void> {
  unmountQuietly(mountpoint);
  if (pid > 0 && !(await waitForExit([pid]))) process.kill(pid, 'SIGKILL');
}

/** Whether process `pid` exists (signal 0). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits up to `ms` for every one of `pids` to exit; resolves with whether they all did. */
export async function waitForExit(pids: readonly number[], ms = 5000): Promise<boolean> {
  for (let i = 0; i < ms / 100 && pids.some(processAlive); i++) await new Promise((r) => setTimeout(r, 100));
  return !pids.some(processAlive);
}

/** Reads a whole file through to the daemon (O_DIRECT: not from the kernel's page cache of the file). */
export async function readDirect(path: string): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECT);
  try {
    const out = Buffer.alloc((await fh.stat()).size);
    let done = 0;
    while (done < out.length) {
      const { bytesRead } = await fh.read(out, done, out.length - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return out.subarray(0, done);
  } finally {
    await fh.close();
  }
}

/** Mounts or fails the test with the CLI's message. */
export async function mountRepository(t: Test, dir: string, s: MountSpec): Promise<TestMount> {
  const r = await tryMount(t, dir, s);
  if ('error' in r) throw new Error(`mount failed (${r.error.code}): ${r.error.stderr}\n${await readFile(join(dir, 'mount.log'), 'utf8').catch(() => '')}`);
  return r.mount;
}

export async function tryMount(t: Test, dir: string, s: MountSpec): Promise<{ mount: TestMount } | { error: CliResult }> {
  const cacheBase = s.cacheBase ?? join(dir, 'cache');
  const configRoot = await writeConfigRoot(dir, s, cacheBase);
  const mountpoint = s.mountpoint ?? join(dir, 'mnt');
  // A stale mount (its daemon killed) answers ENOTCONN; `cvmfs-ts mount` takes it over.
  await mkdir(mountpoint, { recursive: true }).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOTCONN') throw e;
  });
  const logFile = join(dir, 'mount.log');
  let pid = 0;
  const unmount = () => unmountDaemon(mountpoint, pid);
  t.teardown(unmount);
  const args = ['mount', s.fqrn, mountpoint, '--config-root', configRoot, '--log', logFile];
  if (s.options) args.push('-o', s.options);
  const r = await runCli(args, { timeoutMs: 60_000 });
  if (r.code !== 0) return { error: r };
  const xattr = async (path: string, name: string) => {
    const v = await getAttribute(join(mountpoint, path), name);
    return v ? v.toString() : '';
  };
  pid = Number(await xattr('', 'user.pid'));
  return {
    mount: {
      mountpoint,
      configRoot,
      cacheBase,
      logFile,
      pid,
      xattr,
      log: () => readFile(logFile, 'utf8'),
      unmount,
    },
  };
}
