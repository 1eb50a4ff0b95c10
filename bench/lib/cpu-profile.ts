/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`): where the sampled time went, by category
 * (idle, GC, native/binding code, SQLite, the FUSE binding, our code, Node internals), by source
 * file, and the top functions by self time.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Share {
  name: string;
  ms: number;
  /** Percent of the busy (non-idle) time. */
  pct: number;
}

export interface ProfileSummary {
  wall_ms: number;
  idle_ms: number;
  busy_ms: number;
  categories: Share[];
  files: Share[];
  functions: Share[];
  /** cvmfs-ts functions (dist/) by inclusive time: themselves and everything they call. */
  inclusive: Share[];
}

function category(url: string, fn: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'garbage collector';
  if (fn === '(program)') return 'native (V8/libuv/bindings outside JS)';
  if (url.includes('better-sqlite3')) return 'better-sqlite3 (JS side)';
  if (url.includes('fuse-native')) return 'fuse-native (JS side)';
  if (url.includes('lru-cache')) return 'lru-cache';
  if (url.includes('undici')) return 'undici (HTTP)';
  if (url.includes('/dist/')) return 'cvmfs-ts code';
  if (url.startsWith('node:')) {
    const mod = url.replace(/^node:(internal\/)?/, '');
    if (mod.startsWith('fs/') || mod === 'fs') return 'Node fs (file handles, stat, read)';
    if (mod.startsWith('process/task_queues') || mod.startsWith('process/promises')) return 'Node promise/microtask machinery';
    if (mod.startsWith('modules/') || mod === 'vm') return 'Node module loading';
    if (mod.startsWith('zlib') || mod === 'zlib') return 'Node zlib';
    if (mod.startsWith('crypto') || mod === 'crypto') return 'Node crypto';
    if (mod.startsWith('stream') || mod.startsWith('streams/') || mod === 'net') return 'Node streams/net';
    return 'Node other';
  }
  if (url === '') return `native: ${fn}`;
  return 'other JS';
}

/** better-sqlite3's native methods (it is not N-API, so V8 names them right). */
const SQLITE_NATIVE = new Set(['Statement', 'Database', 'all', 'get', 'run', 'iterate', 'exec', 'prepare', 'pluck', 'raw', 'expand', 'bind']);

export async function summarizeCpuProfile(file: string, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0) / 1000);
  const parent = new Map<number, ProfileNode>();
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n);
  }
  // The profiler's own start/stop (bench/lib/cpu-prof-preload.js) is not the daemon's work.
  const own = new Set<number>();
  const isOwn = (n: ProfileNode): boolean => {
    for (let cur: ProfileNode | undefined = n; cur; cur = parent.get(cur.id)) if (cur.callFrame.url.endsWith('cpu-prof-preload.js')) return true;
    return false;
  };
  for (const n of p.nodes) if (isOwn(n)) own.add(n.id);
  const byCategory = new Map<string, number>();
  const byFile = new Map<string, number>();
  const byFunction = new Map<string, number>();
  let idle = 0;
  let total = 0;
  for (const n of p.nodes) {
    const ms = self.get(n.id) ?? 0;
    if (ms === 0 || own.has(n.id)) continue;
    total += ms;
    const { url, lineNumber } = n.callFrame;
    let { functionName } = n.callFrame;
    const caller = parent.get(n.id)?.callFrame.functionName ?? '';
    // Unnamed native code: name it after its caller (under processTicksAndRejections it runs the
    // microtask queue, i.e. promise reactions and async function resumptions).
    if (!url && !functionName) functionName = caller === 'processTicksAndRejections' ? '(microtask queue: promise reactions)' : `(native, called from ${caller || '?'})`;
    let cat = functionName === '(microtask queue: promise reactions)' ? 'Node promise/microtask machinery' : category(url, functionName);
    // Native functions called from JS (better-sqlite3's Statement.get, N-API calls) have no URL;
    // V8 names N-API functions unreliably (they share one entry point).
    if (cat.startsWith('native: ')) cat = SQLITE_NATIVE.has(functionName) ? 'SQLite (better-sqlite3 native calls)' : 'other native calls from JS (N-API: names unreliable)';
    if (cat === 'idle') {
      idle += ms;
      continue;
    }
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + ms);
    const fileName = url ? url.replace(/^.*\/node_modules\//, '').replace(/^.*\/dist\//, 'dist/').replace(/^file:\/\//, '') : `(${functionName || 'native'})`;
    byFile.set(fileName, (byFile.get(fileName) ?? 0) + ms);
    const fnName = `${functionName || '(anonymous)'} ${url ? `${basename(url)}:${lineNumber + 1}` : ''}`.trim();
    byFunction.set(fnName, (byFunction.get(fnName) ?? 0) + ms);
  }
  const busy = total - idle;
  // Inclusive time of our own functions (a function on the stack twice counts once per node).
  const inclusiveOf = new Map<number, number>();
  const inclusive = (n: ProfileNode): number => {
    let t = own.has(n.id) ? 0 : (self.get(n.id) ?? 0);
    for (const c of n.children ?? []) t += inclusive(byId.get(c)!);
    inclusiveOf.set(n.id, t);
    return t;
  };
  for (const n of p.nodes) if (!parent.has(n.id)) inclusive(n);
  const byInclusive = new Map<string, number>();
  for (const n of p.nodes) {
    const { functionName, url, lineNumber } = n.callFrame;
    if (!url.includes('/dist/')) continue;
    let nested = false; // count a function once per stack: skip it below itself
    for (let cur = parent.get(n.id); cur && !nested; cur = parent.get(cur.id)) nested = cur.callFrame.url === url && cur.callFrame.lineNumber === lineNumber;
    if (nested) continue;
    const key = `${functionName || '(anonymous)'} ${basename(url)}:${lineNumber + 1}`;
    byInclusive.set(key, (byInclusive.get(key) ?? 0) + (inclusiveOf.get(n.id) ?? 0));
  }
  const shares = (m: Map<string, number>, limit: number): Share[] =>
    [...m.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, limit)
      .map(([name, ms]) => ({ name, ms: Math.round(ms), pct: busy > 0 ? Math.round((1000 * ms) / busy) / 10 : 0 }));
  return {
    wall_ms: Math.round((p.endTime - p.startTime) / 1000),
    idle_ms: Math.round(idle),
    busy_ms: Math.round(busy),
    categories: shares(byCategory, 20),
    files: shares(byFile, top),
    functions: shares(byFunction, top),
    inclusive: shares(byInclusive, top),
  };
}
