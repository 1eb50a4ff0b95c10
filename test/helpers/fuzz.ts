/**
 * A small seeded fuzzing kit for the test/fuzz/ files: a fast PRNG, byte and line mutators, and loops
 * that run a property over N mutated inputs within a time bound.
 *
 * Reproducible: case i of a loop draws from a generator seeded by (FUZZ_SEED, loop name, i) only, so
 * a failure report names FUZZ_SEED and FUZZ_CASE, and `FUZZ_SEED=s FUZZ_CASE=i npx tap <file>` runs
 * exactly that case again. Environment:
 *   FUZZ_SEED    base seed (default below)
 *   FUZZ_RUNS    inputs per loop (default 10,000); the loop must reach it
 *   FUZZ_TIME_S  time bound per loop in seconds (default given by each file); reaching it first fails
 *   FUZZ_CASE    run only this case number of every loop (replay)
 * and, per file: catalog.test.ts splits FUZZ_RUNS into 12 % byte and 88 % row mutants; http.test.ts has
 * FUZZ_HTTP_LANES (rigs side by side, default 8) and FUZZ_HTTP_KINDS (only these answer kinds).
 * Network timing still varies between runs, so an HTTP case replays its answers, not always its outcome.
 */
import type { Test } from 'tap';
import { CvmfsError } from '../../src/errors';

export const DEFAULT_SEED = 0x5eed_c0de;
export const DEFAULT_RUNS = 10_000;

export interface FuzzConfig {
  readonly seed: number;
  readonly runs: number;
  readonly timeLimitMs: number;
  readonly only: number | undefined;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v} is not a non-negative integer`);
  return n;
}

export function fuzzConfig(defaultTimeS: number): FuzzConfig {
  const time = process.env.FUZZ_TIME_S ? Number(process.env.FUZZ_TIME_S) : defaultTimeS;
  return {
    seed: envInt('FUZZ_SEED') ?? DEFAULT_SEED,
    runs: envInt('FUZZ_RUNS') ?? DEFAULT_RUNS,
    timeLimitMs: time * 1000,
    only: envInt('FUZZ_CASE'),
  };
}

/** splitmix32 step: mixes a 32-bit state into a well-spread output. */
function splitmix32(x: number): number {
  x = (x + 0x9e3779b9) | 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** sfc32: fast, 128-bit state, good enough for test data. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(...seeds: number[]) {
    let s = 0x12345678;
    for (const x of seeds) s = splitmix32(s ^ (x >>> 0)) ^ Math.floor(x / 0x1_0000_0000);
    this.a = splitmix32(s);
    this.b = splitmix32(this.a ^ 0x1);
    this.c = splitmix32(this.b ^ 0x2);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** [0, n) */
  int(n: number): number {
    return n <= 0 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** [lo, hi] */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  bool(p = 0.5): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }

  /** Picks by weight: [[weight, value], ...]. */
  weighted<T>(items: readonly (readonly [number, T])[]): T {
    const total = items.reduce((s, [w]) => s + w, 0);
    let r = this.u32() / 0x1_0000_0000 * total;
    for (const [w, v] of items) {
      if (r < w) return v;
      r -= w;
    }
    return items[items.length - 1]![1];
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** Small counts are likely, large ones possible: 1 + geometric. */
  count(max: number, p = 0.5): number {
    let n = 1;
    while (n < max && this.bool(p)) n++;
    return n;
  }
}

/** A generator for case `i` of loop `name` that depends on nothing else. */
export function caseRng(cfg: FuzzConfig, name: string, i: number): Rng {
  return new Rng(cfg.seed, hashString(name), i);
}

/** Tokens that parsers of this project's text formats care about. */
export const TEXT_TOKENS: readonly string[] = [
  '\n', '\n\n', '--\n', '\n--\n', '--', '\r\n', '\0', ' ', '\t', '#', ':', '|', '-', '/', '//',
  'yes', 'no', '0', '1', '-1', '00', '4294967295', '4294967296', '9007199254740993', '18446744073709551616',
  '9'.repeat(40), '9'.repeat(400), '1e400', 'NaN', 'Infinity', '0x10',
  '-rmd160', '-shake128', '-sha1', 'C', 'X', 'H', 'R', 'N', 'E', 'Vpkcs7', 'Wcachain',
  'd41d8cd98f00b204e9800998ecf8427e', 'da39a3ee5e6b4b0d3255bfef95601890afd80709',
  '\u00e9', '\u540d', '\ufffd', '\ud800', 'A'.repeat(300),
];

const INTERESTING_BYTES = [0x00, 0x01, 0x0a, 0x0d, 0x20, 0x2d, 0x30, 0x39, 0x41, 0x61, 0x66, 0x7f, 0x80, 0xc3, 0xff, 0xfe];

export type ByteMutation =
  | 'flip' | 'byte' | 'interesting' | 'insert' | 'delete' | 'duplicate' | 'truncate' | 'extend'
  | 'token' | 'splice' | 'swap' | 'zero-run';

/** One random edit of `input` (returns a new buffer). `others` are inputs to splice with. */
export function mutateOnce(rng: Rng, input: Buffer, others: readonly Buffer[] = [], tokens = TEXT_TOKENS): Buffer {
  const n = input.length;
  const at = (): number => rng.int(n + 1);
  const kind = rng.weighted<ByteMutation>([
    [20, 'flip'], [8, 'byte'], [10, 'interesting'], [10, 'insert'], [10, 'delete'], [6, 'duplicate'],
    [8, 'truncate'], [4, 'extend'], [10, 'token'], [others.length > 0 ? 6 : 0, 'splice'], [4, 'swap'], [4, 'zero-run'],
  ]);
  switch (kind) {
    case 'flip': {
      if (n === 0) return rng.bytes(1);
      const out = Buffer.from(input);
      const i = rng.int(n);
      out[i] ^= 1 << rng.int(8);
      return out;
    }
    case 'byte':
    case 'interesting': {
      if (n === 0) return rng.bytes(1);
      const out = Buffer.from(input);
      out[rng.int(n)] = kind === 'byte' ? rng.int(256) : rng.pick(INTERESTING_BYTES);
      return out;
    }
    case 'insert': {
      const i = at();
      return Buffer.concat([input.subarray(0, i), rng.bytes(rng.count(16, 0.6)), input.subarray(i)]);
    }
    case 'delete': {
      const i = at();
      const len = rng.bool(0.7) ? rng.count(8) : rng.int(n - i + 1);
      return Buffer.concat([input.subarray(0, i), input.subarray(Math.min(n, i + len))]);
    }
    case 'duplicate': {
      const i = at();
      const len = rng.int(Math.min(64, n - i) + 1);
      const j = at();
      return Buffer.concat([input.subarray(0, j), input.subarray(i, i + len), input.subarray(j)]);
    }
    case 'truncate':
      return Buffer.from(input.subarray(0, at()));
    case 'extend':
      return Buffer.concat([input, rng.bool() ? rng.bytes(rng.count(64, 0.8)) : Buffer.from(rng.pick(tokens))]);
    case 'token': {
      const i = at();
      const replace = rng.bool() ? rng.int(Math.min(8, n - i) + 1) : 0;
      return Buffer.concat([input.subarray(0, i), Buffer.from(rng.pick(tokens)), input.subarray(i + replace)]);
    }
    case 'splice': {
      const other = rng.pick(others);
      return Buffer.concat([input.subarray(0, at()), other.subarray(rng.int(other.length + 1))]);
    }
    case 'swap': {
      const i = at();
      const j = at();
      const [a, b] = i < j ? [i, j] : [j, i];
      const len = Math.min(rng.count(16, 0.7), b - a);
      if (len === 0) return Buffer.from(input);
      return Buffer.concat([
        input.subarray(0, a), input.subarray(b, b + len), input.subarray(a + len, b), input.subarray(a, a + len),
        input.subarray(b + len),
      ]);
    }
    case 'zero-run': {
      const out = Buffer.from(input);
      const i = rng.int(n);
      out.fill(rng.bool() ? 0 : 0xff, i, Math.min(n, i + rng.count(64, 0.8)));
      return out;
    }
  }
}

/** 1..max random edits, each inside [start, end) of the buffer as it evolves (the whole buffer by default). */
export function mutate(
  rng: Rng,
  input: Buffer,
  o: { others?: readonly Buffer[]; tokens?: readonly string[]; max?: number; region?: readonly [number, number] } = {},
): Buffer {
  let out = input;
  const edits = rng.count(o.max ?? 4);
  for (let k = 0; k < edits; k++) {
    if (o.region) {
      const [start, end] = o.region;
      const tailLen = input.length - end; // the part after the region keeps its length
      const s = Math.min(start, out.length);
      const e = Math.max(s, out.length - tailLen);
      const mid = mutateOnce(rng, out.subarray(s, e), o.others, o.tokens);
      out = Buffer.concat([out.subarray(0, s), mid, out.subarray(e)]);
    } else {
      out = mutateOnce(rng, out, o.others, o.tokens);
    }
  }
  return out;
}

/** Line-level edits of a `\n`-terminated text: shuffle, duplicate, drop, swap, replace a value, add a line. */
export function mutateLines(rng: Rng, text: string, tokens = TEXT_TOKENS): string {
  const lines = text.split('\n');
  const last = lines.pop(); // '' when the text ends with \n
  const edits = rng.count(3);
  for (let k = 0; k < edits; k++) {
    const i = rng.int(lines.length);
    switch (rng.int(8)) {
      case 0: // shuffle
        for (let j = lines.length - 1; j > 0; j--) {
          const r = rng.int(j + 1);
          [lines[j], lines[r]] = [lines[r]!, lines[j]!];
        }
        break;
      case 1:
        if (lines.length > 0) lines.splice(i, 0, lines[i]!);
        break;
      case 2:
        lines.splice(i, 1);
        break;
      case 3: {
        const j = rng.int(lines.length);
        if (lines.length > 0) [lines[i], lines[j]] = [lines[j]!, lines[i]!];
        break;
      }
      case 4: // keep the key letter, new value
        if (lines.length > 0) lines[i] = (lines[i]!.slice(0, 1)) + rng.pick(tokens);
        break;
      case 5: // boundary number in place of a digit run
        if (lines.length > 0) lines[i] = lines[i]!.replace(/\d+/, rng.pick(['0', '-1', '4294967296', '9007199254740993', '9'.repeat(30), '9'.repeat(400), '', '1.5']));
        break;
      case 6:
        lines.splice(i, 0, rng.pick(tokens) + rng.pick(tokens));
        break;
      case 7: // key letter changed
        if (lines.length > 0) lines[i] = String.fromCharCode(rng.range(0x20, 0x7e)) + lines[i]!.slice(1);
        break;
    }
  }
  return lines.join('\n') + '\n' + (rng.bool(0.9) ? last ?? '' : rng.pick(tokens));
}

/** What a fuzz property reports when the code under test misbehaved. */
export class FuzzFailure extends Error {}

/** Runs `fn`; a thrown CvmfsError is an allowed outcome, anything else is a finding. */
export function typed<T>(what: string, fn: () => T): { ok: true; value: T } | { ok: false; error: CvmfsError } {
  try {
    return { ok: true, value: fn() };
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (CvmfsError.is(e)) return { ok: false, error: e };
    throw new FuzzFailure(`${what} threw a ${(e as Error)?.constructor?.name ?? typeof e}, not a CvmfsError: ${describe(e)}`, { cause: e });
  }
}

export async function typedAsync<T>(
  what: string,
  fn: () => Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; error: CvmfsError }> {
  try {
    return { ok: true, value: await fn() };
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (CvmfsError.is(e)) return { ok: false, error: e };
    throw new FuzzFailure(`${what} threw a ${(e as Error)?.constructor?.name ?? typeof e}, not a CvmfsError: ${describe(e)}`, { cause: e });
  }
}

function describe(e: unknown): string {
  if (e instanceof Error) return `${e.message}\n${e.stack?.split('\n').slice(1, 6).join('\n') ?? ''}`;
  return String(e);
}

export function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new FuzzFailure(message);
}

/** A short printable form of an input for failure reports. */
export function show(input: Buffer | string): string {
  const b = Buffer.isBuffer(input) ? input : Buffer.from(input);
  const head = b.subarray(0, 160).toString('base64');
  return `${b.length} bytes, base64 ${head}${b.length > 160 ? '…' : ''}`;
}

export interface LoopResult {
  readonly cases: number;
  readonly failures: number;
  readonly ms: number;
}

const MAX_REPORTED = 5;

function report(t: Test, cfg: FuzzConfig, name: string, r: LoopResult): void {
  const rate = Math.round((r.cases / Math.max(1, r.ms)) * 1000);
  t.comment(`${name}: ${r.cases} inputs in ${(r.ms / 1000).toFixed(1)} s (${rate}/s), seed ${cfg.seed}`);
  if (cfg.only !== undefined) return;
  t.ok(r.cases >= cfg.runs, `${name}: ${r.cases} of ${cfg.runs} inputs within ${cfg.timeLimitMs / 1000} s`, {
    seed: cfg.seed,
  });
}

function fail(t: Test, cfg: FuzzConfig, name: string, i: number, e: unknown): void {
  const msg = e instanceof FuzzFailure ? e.message : `harness error: ${describe(e)}`;
  t.fail(`${name} case ${i}: ${msg}`, { replay: `FUZZ_SEED=${cfg.seed} FUZZ_CASE=${i}` });
}

/**
 * Runs `body(rng, i)` for cases 0..runs-1 (or only FUZZ_CASE) until the count or the time bound is
 * reached; reports failures with the seed and case number, and asserts the count.
 */
export function fuzzLoop(t: Test, cfg: FuzzConfig, name: string, body: (rng: Rng, i: number) => void): LoopResult {
  const start = performance.now();
  let cases = 0;
  let failures = 0;
  const first = cfg.only ?? 0;
  const end = cfg.only !== undefined ? cfg.only + 1 : cfg.runs;
  for (let i = first; i < end; i++) {
    if (performance.now() - start > cfg.timeLimitMs) break;
    try {
      body(caseRng(cfg, name, i), i);
    } catch (e) {
      if (++failures <= MAX_REPORTED) fail(t, cfg, name, i, e);
    }
    cases++;
  }
  const r = { cases, failures, ms: performance.now() - start };
  report(t, cfg, name, r);
  return r;
}

/**
 * The async form; each case must settle within `caseTimeoutMs` (else it counts as a hang). With `lanes`
 * above 1, that many workers take the next case number in turn; `body` gets its lane, so that each lane
 * can have state of its own (a server, a cache) and cases of different lanes cannot disturb each other.
 */
export async function fuzzLoopAsync(
  t: Test,
  cfg: FuzzConfig,
  name: string,
  caseTimeoutMs: number,
  body: (rng: Rng, i: number, lane: number) => Promise<void>,
  lanes = 1,
): Promise<LoopResult> {
  const start = performance.now();
  let cases = 0;
  let failures = 0;
  let stop = false;
  const end = cfg.only !== undefined ? cfg.only + 1 : cfg.runs;
  let next = cfg.only ?? 0;
  const worker = async (lane: number): Promise<void> => {
    while (!stop && next < end) {
      if (performance.now() - start > cfg.timeLimitMs) break;
      const i = next++;
      let timer: NodeJS.Timeout | undefined;
      const hang = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new FuzzFailure(`no result after ${caseTimeoutMs} ms (hang)`)), caseTimeoutMs);
      });
      try {
        await Promise.race([body(caseRng(cfg, name, i), i, lane), hang]);
      } catch (e) {
        if (++failures <= MAX_REPORTED) fail(t, cfg, name, i, e);
        if (e instanceof FuzzFailure && /\(hang\)/.test(e.message)) stop = true; // the case still runs: stop here
      } finally {
        clearTimeout(timer);
      }
      cases++;
    }
  };
  await Promise.all(Array.from({ length: cfg.only !== undefined ? 1 : lanes }, (_, lane) => worker(lane)));
  const r = { cases, failures, ms: performance.now() - start };
  report(t, cfg, name, r);
  return r;
}

/** Counts outcomes (error codes, 'ok', …) for the test log: shows what the mutants reached. */
export class Tally {
  private readonly counts = new Map<string, number>();
  add(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  /** Records a `typed` result under its error code or 'ok'. */
  outcome(prefix: string, r: { ok: true } | { ok: false; error: CvmfsError }): void {
    this.add(`${prefix}:${r.ok ? 'ok' : r.error.code}`);
  }
  toString(): string {
    return [...this.counts].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => `${k}=${v}`).join(' ');
  }
}
