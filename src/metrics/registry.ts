/**
 * One metrics registry per process: a prom-client Registry (never prom-client's global one, so two
 * services in one process, as in tests, do not share counters) plus families that render
 * themselves (FastHistogram), for instruments on paths too hot for prom-client's per-call label
 * handling. `text()` is the whole scrape in the Prometheus text format (version 0.0.4).
 */
import { Registry, collectDefaultMetrics } from 'prom-client';

/** A family that writes its own `# HELP`/`# TYPE` and sample lines, each ending in '\n'. */
export interface ExpositionSource {
  render(): string;
}

export interface MetricsRegistryOptions {
  /**
   * prom-client's process and Node.js metrics (process_cpu_seconds_total, nodejs_eventloop_lag_*,
   * …) under their usual names, so standard dashboards work. Off for in-process test services.
   */
  readonly processMetrics?: boolean;
}

export class MetricsRegistry {
  readonly prom = new Registry();
  private readonly sources: ExpositionSource[] = [];

  constructor(o: MetricsRegistryOptions = {}) {
    if (o.processMetrics ?? true) collectDefaultMetrics({ register: this.prom });
  }

  add(source: ExpositionSource): void {
    this.sources.push(source);
  }

  get contentType(): string {
    return this.prom.contentType;
  }

  async text(): Promise<string> {
    const parts = [await this.prom.metrics()];
    for (const s of this.sources) parts.push(s.render());
    // prom-client separates families by a blank line; the format allows them, so do the same.
    return parts.join('\n');
  }
}

/** A label value or HELP text escaped as the text format requires. */
export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** One labelled series of a FastHistogram: plain numbers, nothing allocated per observation. */
export class HistogramChild {
  /** Observations per bucket (not cumulative); the last slot is the +Inf bucket. */
  private readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    private readonly bounds: readonly number[],
    /** `name="value",...` already escaped, for rendering. */
    readonly labelText: string,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    // Linear: the fast buckets come first and most observations land there.
    while (i < b.length && value > b[i]) i++;
    this.counts[i]++;
    this.sum += value;
    this.count++;
  }

  /** Cumulative counts per upper bound, +Inf last. */
  cumulative(): number[] {
    const out: number[] = [];
    let acc = 0;
    for (const c of this.counts) out.push((acc += c));
    return out;
  }
}

/**
 * A histogram family whose children are bound once (e.g. one per FUSE operation) and then observe
 * with a bucket search and three additions: ~10 ns, where a prom-client child costs ~350 ns and
 * allocates per call (measured, bench/metrics-overhead.ts).
 */
export class FastHistogram implements ExpositionSource {
  private readonly children: HistogramChild[] = [];
  private readonly bounds: readonly number[];

  constructor(
    readonly name: string,
    readonly help: string,
    buckets: readonly number[],
  ) {
    this.bounds = [...buckets].sort((a, b) => a - b);
  }

  /** A new series with these labels; bind once and keep it. */
  child(labels: Readonly<Record<string, string>>): HistogramChild {
    const text = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`)
      .join(',');
    const c = new HistogramChild(this.bounds, text);
    this.children.push(c);
    return c;
  }

  render(): string {
    const n = this.name;
    const lines = [`# HELP ${n} ${escapeHelp(this.help)}`, `# TYPE ${n} histogram`];
    const les = [...this.bounds.map(String), '+Inf'];
    for (const c of this.children) {
      const sep = c.labelText === '' ? '' : ',';
      const cumulative = c.cumulative();
      les.forEach((le, i) => lines.push(`${n}_bucket{${c.labelText}${sep}le="${le}"} ${cumulative[i]}`));
      const braces = c.labelText === '' ? '' : `{${c.labelText}}`;
      lines.push(`${n}_sum${braces} ${c.sum}`, `${n}_count${braces} ${c.count}`);
    }
    return lines.join('\n') + '\n';
  }
}
