/**
 * Process helpers for benchmarks: run a command and get its output, wait for a process to exit, and a
 * cleanup stack that also runs on Ctrl-C / SIGTERM / SIGHUP (then exits 128 + the signal's number), so
 * namespaces, mounts and daemons never outlive a run; what is left at process exit gets its
 * synchronous fallback.
 *
 *   const cleanup = new Cleanup();             // installs SIGINT/SIGTERM/SIGHUP handlers
 *   cleanup.add('registry', () => stop());     // run last-in first-out by cleanup.run()
 *   try { ... } finally { await cleanup.run(); }
 *
 * A Cleanup also quacks like the `t` of tap (`teardown(fn)`), so test helpers that register their
 * teardown on a test (test/helpers/containerd.ts) can be used from a benchmark.
 */
import { spawn, type SpawnOptions } from 'node:child_process';

export interface RunOutput {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Resolve with a failed result instead of rejecting. */
  allowFail?: boolean;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Echo the command and stream its output to our stderr (long builds). */
  verbose?: boolean;
  /** Written to the command's stdin. */
  input?: string;
}

/** Runs argv[0] with the rest as arguments; rejects with the output unless it exits 0 (or allowFail). */
export function run(argv: readonly string[], o: RunOptions = {}): Promise<RunOutput> {
  return new Promise((done, fail) => {
    if (o.verbose) process.stderr.write(`+ ${argv.join(' ')}\n`);
    const options: SpawnOptions = { stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: { ...process.env, ...o.env }, cwd: o.cwd };
    const child = spawn(argv[0]!, argv.slice(1), options);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d;
      if (o.verbose) process.stderr.write(d);
    });
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d;
      if (o.verbose) process.stderr.write(d);
    });
    if (o.input !== undefined) child.stdin!.end(o.input);
    const timer = o.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), o.timeoutMs) : undefined;
    child.on('error', fail);
    child.on('close', (code) => {
      if (timer) clearTimeout(timer);
      const r = { code, stdout, stderr };
      if (code !== 0 && !o.allowFail) {
        const tail = (s: string) => (s.length > 4000 ? `…${s.slice(-4000)}` : s);
        fail(new Error(`${argv.join(' ')} exited with ${code}:\n${tail(stdout)}${tail(stderr)}`));
      } else done(r);
    });
  });
}

/** stdout of a command that must succeed, trimmed. */
export async function output(argv: readonly string[], o: RunOptions = {}): Promise<string> {
  return (await run(argv, o)).stdout.trim();
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 100): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

type Step = { what: string; fn: () => unknown; sync?: () => void };

export class Interrupted extends Error {
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}`);
  }
}

/** Conventional exit statuses (128 + signal number) after a signal's cleanup. */
const SIGNAL_EXIT: Partial<Record<NodeJS.Signals, number>> = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 };

export class Cleanup {
  private readonly steps: Step[] = [];
  private running: Promise<void> | undefined;
  private signalled: NodeJS.Signals | undefined;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    this.signalled = signal;
    this.log(`${signal}: cleaning up…`);
    const code = SIGNAL_EXIT[signal] ?? 130;
    const force = setTimeout(() => process.exit(code), 30_000);
    void this.run().finally(() => {
      clearTimeout(force);
      process.exit(code);
    });
  };
  /** Last resort at process exit (synchronous): the fallbacks of steps that never ran. */
  private readonly onExit = () => {
    for (const step of [...this.steps].reverse()) {
      try {
        step.sync?.();
      } catch {
        // best effort
      }
    }
  };

  constructor(
    private readonly log: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
    handleSignals = true,
  ) {
    if (handleSignals) {
      process.once('SIGINT', this.onSignal);
      process.once('SIGTERM', this.onSignal);
      process.once('SIGHUP', this.onSignal);
      process.once('exit', this.onExit);
    }
  }

  /** The signal that started the cleanup, once one did: long-running work should stop then. */
  get interruptedBy(): NodeJS.Signals | undefined {
    return this.signalled;
  }

  /** Throws once a signal arrived (call between steps of long work). */
  checkInterrupted(): void {
    if (this.signalled) throw new Interrupted(this.signalled);
  }

  /**
   * Registers a step (`sync`: its synchronous fallback should the process exit before it ran).
   * The handle's `run()` runs it now (once), `forget()` drops it unrun.
   */
  add(what: string, fn: () => unknown, sync?: () => void): { run(): Promise<void>; forget(): boolean } {
    const step: Step = { what, fn, sync };
    this.steps.push(step);
    const forget = () => {
      const i = this.steps.indexOf(step);
      if (i >= 0) this.steps.splice(i, 1);
      return i >= 0;
    };
    return {
      run: async () => {
        if (forget()) await step.fn();
      },
      forget,
    };
  }

  /** tap's `t.teardown`, for helpers written for tests. */
  teardown(fn: () => unknown): void {
    this.add('test-helper teardown', fn);
  }

  /** Runs every step once, newest first; a failing step is logged and the rest still run. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length > 0) {
        const step = this.steps.pop()!;
        try {
          await step.fn();
        } catch (e) {
          this.log(`cleanup of ${step.what} failed: ${(e as Error).message}`);
        }
      }
      process.off('SIGINT', this.onSignal);
      process.off('SIGTERM', this.onSignal);
      process.off('SIGHUP', this.onSignal);
      process.off('exit', this.onExit);
    })().finally(() => (this.running = undefined));
    return this.running;
  }
}

/** Whether process `pid` exists (signal 0). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Waits up to `ms` for process `pid` to exit; resolves with whether it did. */
export async function waitExit(pid: number, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (!alive(pid)) return true;
  return !alive(pid);
}
