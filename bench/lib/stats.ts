/** Small statistics helpers shared by the benches. */

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles of `samples` (any unit; the caller's). Sorts a copy. */
export function summarize(samples: ArrayLike<number>): LatencySummary {
  const n = samples.length;
  if (n === 0) return { count: 0, mean: 0, p50: 0, p90: 0, p99: 0, max: 0 };
  const sorted = Float64Array.from(samples).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i]!;
  const rank = (p: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))]!;
  return { count: n, mean: sum / n, p50: rank(50), p90: rank(90), p99: rank(99), max: sorted[n - 1]! };
}

/** 1234567 → "1.23M", 12345 → "12.3k", 12.345 → "12.3", 0.01234 → "0.0123". */
export function si(v: number, digits = 3): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim((v / 1e9).toPrecision(digits))}G`;
  if (a >= 1e6) return `${trim((v / 1e6).toPrecision(digits))}M`;
  if (a >= 1e4) return `${trim((v / 1e3).toPrecision(digits))}k`;
  if (a >= 1000) return Math.round(v).toString();
  if (a === 0) return '0';
  return trim(v.toPrecision(digits));
}

function trim(s: string): string {
  return s.includes('e') || !s.includes('.') ? s : s.replace(/\.?0+$/, '');
}
