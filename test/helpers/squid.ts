/**
 * A real Squid forward proxy on 127.0.0.1 for tests, in its own process (`squid -N`, no daemon), with
 * everything in a private temporary directory: configuration, memory-only cache, access and cache logs,
 * pid file. Never the system squid on port 3128 (scripts/setup.sh stops that one).
 *
 * - only 127.0.0.1 may use it; origins are given as IP addresses, so no name is ever resolved;
 * - objects are cached in memory (no cache_dir) up to 64 MB each, for as long as the origin's
 *   Cache-Control/Expires allows (refresh_pattern without overrides);
 * - the access log is in Squid's native format: `time elapsed client TCP_MISS/200 bytes GET URL ...`.
 *
 * Stopped with SIGTERM (shutdown_lifetime 0 makes that quick) and SIGKILL if it lingers, at teardown.
 */
import { spawn } from 'node:child_process';
import { chown, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { join } from 'node:path';
import type { Test } from 'tap';
import { freePort } from './http';
import { tempDir } from './repo';

export const SQUID = '/usr/sbin/squid';

export interface AccessLogEntry {
  /** e.g. TCP_MISS, TCP_MEM_HIT, TCP_REFRESH_UNMODIFIED. */
  readonly result: string;
  readonly status: number;
  readonly method: string;
  /** The request URL as Squid logged it (absolute for proxy requests). */
  readonly url: string;
  /** e.g. HIER_DIRECT/127.0.0.1, HIER_NONE/-. */
  readonly hierarchy: string;
}

export interface TestSquid {
  /** http://127.0.0.1:PORT, for CVMFS_HTTP_PROXY. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  readonly dir: string;
  /** The access log parsed, oldest first. Squid writes each line as the request completes. */
  accessLog(): Promise<AccessLogEntry[]>;
  stop(): Promise<void>;
}

/** Why squid tests cannot run here, or undefined when they can. */
export function squidMissing(): string | undefined {
  return existsSync(SQUID) ? undefined : `${SQUID} is not installed (apt-get install squid; scripts/setup.sh does)`;
}

/** True for the result codes of a request answered from Squid's cache. */
export function isHit(result: string): boolean {
  return /^TCP_(MEM_|IMS_|INM_)?HIT$/.test(result);
}

function config(dir: string, port: number, user: string | undefined): string {
  return [
    `http_port 127.0.0.1:${port}`,
    'visible_hostname cvmfs-ts-test-squid',
    ...(user ? [`cache_effective_user ${user}`] : []),
    `pid_filename ${join(dir, 'squid.pid')}`,
    `coredump_dir ${dir}`,
    `cache_log ${join(dir, 'cache.log')}`,
    `access_log stdio:${join(dir, 'access.log')} squid`,
    'cache_store_log none',
    'logfile_rotate 0',
    // Memory only: no cache_dir, so there is nothing to initialise with `squid -z`.
    'cache_mem 256 MB',
    'maximum_object_size_in_memory 64 MB',
    'maximum_object_size 64 MB',
    'memory_cache_mode always',
    'acl test_clients src 127.0.0.1/32',
    'http_access allow test_clients',
    'http_access deny all',
    // Heuristic freshness only for objects without Cache-Control/Expires; ours carry both.
    'refresh_pattern . 0 20% 4320',
    'shutdown_lifetime 0 seconds',
    'pinger_enable off',
    'netdb_filename none',
    'client_db off',
    // Only IP addresses are used; a resolver that does not exist keeps Squid from asking anyone.
    'dns_nameservers 127.0.0.1',
    '',
  ].join('\n');
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Parses Squid's native access log format. */
export function parseAccessLog(text: string): AccessLogEntry[] {
  const entries: AccessLogEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 9) continue;
    const [result, status] = f[3].split('/');
    entries.push({ result, status: Number(status), method: f[5], url: f[6], hierarchy: f[8] });
  }
  return entries;
}

/**
 * Starts Squid, waits until it accepts connections, and registers its stop at teardown. Call
 * `squidMissing()` first and skip when it says why not.
 */
export async function startSquid(t: Test): Promise<TestSquid> {
  const dir = await tempDir(t, 'cvmfs-ts-squid-');
  const port = await freePort();
  // As root, Squid drops to an unprivileged user, who must be able to write its files.
  let user: string | undefined;
  if (process.getuid?.() === 0) {
    user = 'proxy';
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    await chown(dir, uid, gid);
  }
  const conf = join(dir, 'squid.conf');
  await writeFile(conf, config(dir, port, user));
  const child = spawn(SQUID, ['-N', '-f', conf], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d));
  child.stderr.on('data', (d: Buffer) => (output += d));
  const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
  child.once('error', (e) => (output += String(e)));
  const pid = child.pid ?? 0;
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(killer);
  };
  t.teardown(stop);

  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      const log = await readFile(join(dir, 'cache.log'), 'utf8').catch(() => '');
      throw new Error(`squid exited (${child.exitCode ?? child.signalCode}) before accepting connections:\n${output}\n${log}`);
    }
    if (await accepts(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`squid did not accept connections on 127.0.0.1:${port} within 20 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pid,
    dir,
    accessLog: async () => parseAccessLog(await readFile(join(dir, 'access.log'), 'utf8').catch(() => '')),
    stop,
  };
}
