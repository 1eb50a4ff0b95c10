/**
 * Telling a live process from a dead one whose pid was reused. Several daemons share one cache
 * directory (CVMFS_SHARED_CACHE); what one of them left behind when it was SIGKILLed (pins in the
 * quota database, half-written files in txn/) must be recognisable as abandoned by the others.
 *
 * A process is identified by its pid plus its start time (field 22 of /proc/<pid>/stat, clock ticks
 * since boot): a pid reused by a later process has a different start time. Without /proc (not Linux),
 * the start time is '' and liveness falls back to kill(pid, 0), which cannot detect pid reuse.
 * Processes in another pid namespace are invisible here; they would look dead (document, don't share
 * one cache directory across pid namespaces).
 */
import { readFileSync } from 'node:fs';

/** USER_HZ: /proc/<pid>/stat times are in these ticks (100 on every Linux architecture we run on). */
const TICKS_PER_SECOND = 100;

/** Start time of `pid` in clock ticks since boot, as text; undefined when there is no such process. */
export function processStartTicks(pid: number | 'self'): string | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // A zombie (Z) or dead (X) process has ended: it keeps its /proc entry only until it is reaped,
  // which may be never where PID 1 does not reap (containers).
  if (fields[0] === 'Z' || fields[0] === 'X') return undefined;
  return fields[22 - 3];
}

function hasProc(): boolean {
  return processStartTicks('self') !== undefined;
}

export interface ProcessIdentity {
  readonly pid: number;
  /** Start time in ticks since boot; '' when unknown (no /proc). */
  readonly start: string;
}

export function selfIdentity(): ProcessIdentity {
  return { pid: process.pid, start: processStartTicks('self') ?? '' };
}

/** Whether the process `id` names is still running (not merely some process with its pid). */
export function isAlive(id: ProcessIdentity): boolean {
  if (id.pid === process.pid) return id.start === selfIdentity().start;
  if (hasProc()) {
    // /proc knows: a running process has a start time (zombies do not count, see processStartTicks).
    const start = processStartTicks(id.pid);
    return start !== undefined && (id.start === '' || start === id.start);
  }
  try {
    process.kill(id.pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

let bootTimeMs: number | undefined;

/** When `pid` started, in ms since the epoch; undefined if it is not running or /proc is unavailable. */
export function processStartMs(pid: number): number | undefined {
  const ticks = processStartTicks(pid);
  if (ticks === undefined) return undefined;
  if (bootTimeMs === undefined) {
    try {
      const m = /^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'));
      if (!m) return undefined;
      bootTimeMs = Number(m[1]) * 1000;
    } catch {
      return undefined;
    }
  }
  return bootTimeMs + (Number(ticks) * 1000) / TICKS_PER_SECOND;
}
