/**
 * Long-running helper processes of a benchmark (servers, proxies): started with output to a log
 * file, waited for until ready, and stopped by their pid (SIGTERM, then SIGKILL) from a Cleanup.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import type { Cleanup } from './proc';
import { waitFor } from './proc';

export interface Daemon {
  readonly name: string;
  /** The current process (changes with restart). */
  readonly pid: number;
  readonly logFile: string;
  log(): string;
  alive(): boolean;
  /** Starts it again (same command, log appended) if it is not running; resolves when ready. */
  ensureRunning(): Promise<boolean>;
  stop(): Promise<void>;
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((done) => child.once('exit', () => done()));
}

export interface DaemonOptions {
  logFile: string;
  cleanup: Cleanup;
  ready: (log: string) => boolean | Promise<boolean>;
  timeoutMs?: number;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export async function startDaemon(name: string, argv: readonly string[], o: DaemonOptions): Promise<Daemon> {
  const log = () => {
    try {
      return readFileSync(o.logFile, 'utf8');
    } catch {
      return '';
    }
  };
  let child: ChildProcess;
  const alive = () => child.exitCode === null && child.signalCode === null;
  const launch = async () => {
    const fd = openSync(o.logFile, 'a');
    child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', fd, fd], cwd: o.cwd, env: { ...process.env, ...o.env } });
    closeSync(fd);
    const current = child;
    await waitFor(
      `${name} to start (log ${o.logFile})`,
      async () => {
        if (current.exitCode !== null || current.signalCode !== null) throw new Error(`${name} exited with ${current.exitCode ?? current.signalCode}:\n${log().slice(-3000)}`);
        return o.ready(log());
      },
      o.timeoutMs ?? 30_000,
    );
  };
  const stop = async () => {
    if (!alive()) return;
    const current = child;
    current.kill('SIGTERM');
    const killer = setTimeout(() => current.kill('SIGKILL'), 5000);
    await exited(current);
    clearTimeout(killer);
  };
  o.cleanup.add(name, stop);
  await launch();
  return {
    name,
    get pid() {
      return child.pid!;
    },
    logFile: o.logFile,
    log,
    alive,
    async ensureRunning() {
      if (alive()) return false;
      await launch();
      return true;
    },
    stop,
  };
}

/** Lines of a common-log-format access log (`"GET /path HTTP/1.1" 200 …`) in `text`. */
export function countAccessLines(text: string): number {
  return (text.match(/"(?:GET|HEAD|POST|PUT|PATCH|DELETE) \S+ HTTP\/[\d.]+"/g) ?? []).length;
}
