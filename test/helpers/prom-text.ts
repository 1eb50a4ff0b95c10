/**
 * A strict reader of the Prometheus text exposition format (0.0.4), for tests of /metrics: every
 * line must be empty, a `# HELP`/`# TYPE` line or a valid sample, or parsing throws naming the line.
 * Also checks what a scraper relies on: one TYPE per family, before its samples; no series twice;
 * histogram buckets cumulative and ending in +Inf equal to _count.
 */
import * as http from 'node:http';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Scrape {
  readonly samples: readonly Sample[];
  /** family name → type */
  readonly types: ReadonlyMap<string, string>;
  /** The one sample of `name` whose labels include `labels`; undefined if none (throws if several). */
  get(name: string, labels?: Record<string, string>): number | undefined;
  /** Sum over every sample of `name` whose labels include `labels`. */
  sum(name: string, labels?: Record<string, string>): number;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** As Prometheus reads values (Go's ParseFloat): NaN and [+-]Inf(inity) in any case (prom-client writes `Nan`). */
function parseValue(s: string, where: string): number {
  if (/^nan$/i.test(s)) return NaN;
  const inf = /^([-+]?)inf(inity)?$/i.exec(s);
  if (inf) return inf[1] === '-' ? -Infinity : Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(s)) throw new Error(`${where}: bad value '${s}'`);
  return Number(s);
}

/** `{a="x",b="y"}` starting at text[i] === '{'; returns labels and the index after '}'. */
function parseLabels(text: string, i: number, where: string): { labels: Record<string, string>; end: number } {
  const labels: Record<string, string> = {};
  i++;
  for (;;) {
    if (text[i] === '}') return { labels, end: i + 1 };
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`${where}: label without '='`);
    const name = text.slice(i, eq).trim();
    if (!LABEL.test(name)) throw new Error(`${where}: bad label name '${name}'`);
    if (name in labels) throw new Error(`${where}: label ${name} twice`);
    if (text[eq + 1] !== '"') throw new Error(`${where}: label value not quoted`);
    let v = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const c = text[++j];
        if (c === 'n') v += '\n';
        else if (c === '\\' || c === '"') v += c;
        else throw new Error(`${where}: bad escape \\${c}`);
      } else v += text[j];
    }
    if (j >= text.length) throw new Error(`${where}: unterminated label value`);
    labels[name] = v;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new Error(`${where}: expected ',' or '}' after label ${name}`);
  }
}

/** The family a sample belongs to (histogram/summary suffixes removed when that family exists). */
function familyOf(name: string, types: ReadonlyMap<string, string>): string {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const t = types.get(base);
      if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return base;
    }
  }
  return name;
}

const includes = (labels: Readonly<Record<string, string>>, want: Record<string, string>) =>
  Object.entries(want).every(([k, v]) => labels[k] === v);

export function parsePrometheusText(text: string): Scrape {
  if (text !== '' && !text.endsWith('\n')) throw new Error('exposition does not end with a newline');
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const seenFamilies = new Set<string>();
  const seriesKeys = new Set<string>();
  text.split('\n').forEach((line, n) => {
    const where = `line ${n + 1} '${line}'`;
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(line);
      if (!m) return; // other comments are allowed
      const [, kind, name, rest = ''] = m;
      if (!NAME.test(name)) throw new Error(`${where}: bad metric name`);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new Error(`${where}: bad type`);
        if (types.has(name)) throw new Error(`${where}: second TYPE for ${name}`);
        if (seenFamilies.has(name)) throw new Error(`${where}: TYPE after samples of ${name}`);
        types.set(name, rest);
      } else {
        if (helps.has(name)) throw new Error(`${where}: second HELP for ${name}`);
        if (/\\[^n\\]/.test(rest)) throw new Error(`${where}: bad escape in HELP`);
        helps.add(name);
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (!m) throw new Error(`${where}: no metric name`);
    const name = m[1];
    let i = name.length;
    let labels: Record<string, string> = {};
    if (line[i] === '{') ({ labels, end: i } = parseLabels(line, i, where));
    if (line[i] !== ' ') throw new Error(`${where}: expected a space before the value`);
    const parts = line.slice(i + 1).trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2) throw new Error(`${where}: expected 'value [timestamp]'`);
    const value = parseValue(parts[0], where);
    if (parts[1] !== undefined && !/^-?\d+$/.test(parts[1])) throw new Error(`${where}: bad timestamp`);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seriesKeys.has(key)) throw new Error(`${where}: series twice`);
    seriesKeys.add(key);
    seenFamilies.add(familyOf(name, types));
    samples.push({ name, labels, value });
  });

  // Histograms: per series, buckets non-decreasing in le order, +Inf present and equal to _count.
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const groups = new Map<string, { le: number; v: number }[]>();
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      if (s.labels.le === undefined) throw new Error(`${family}_bucket without le`);
      const { le, ...rest } = s.labels;
      const k = JSON.stringify(Object.entries(rest).sort());
      const list = groups.get(k) ?? [];
      list.push({ le: parseValue(le, `${family} le`), v: s.value });
      groups.set(k, list);
    }
    for (const [k, list] of groups) {
      list.sort((a, b) => a.le - b.le);
      list.forEach((b, i) => {
        if (i > 0 && b.v < list[i - 1].v) throw new Error(`${family}${k}: buckets not cumulative`);
      });
      const inf = list[list.length - 1];
      if (inf.le !== Infinity) throw new Error(`${family}${k}: no +Inf bucket`);
      const labels = Object.fromEntries(JSON.parse(k) as [string, string][]);
      const count = samples.find((s) => s.name === `${family}_count` && JSON.stringify(Object.entries(s.labels).sort()) === k);
      if (!count || count.value !== inf.v) throw new Error(`${family}${JSON.stringify(labels)}: +Inf bucket ${inf.v} != _count ${count?.value}`);
    }
  }

  return {
    samples,
    types,
    get(name, labels = {}) {
      const found = samples.filter((s) => s.name === name && includes(s.labels, labels));
      if (found.length > 1) throw new Error(`${name}${JSON.stringify(labels)}: ${found.length} samples`);
      return found[0]?.value;
    },
    sum(name, labels = {}) {
      return samples.filter((s) => s.name === name && includes(s.labels, labels)).reduce((a, s) => a + s.value, 0);
    },
  };
}

/** GET a URL or `unix:<socket>` + path; resolves with status, content type and body. */
export function httpGet(
  target: { url: string } | { socketPath: string; path: string },
  method = 'GET',
): Promise<{ status: number; contentType: string; body: string }> {
  return new Promise((done, fail) => {
    const cb = (res: http.IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => done({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), body }));
    };
    const req = 'url' in target ? http.request(target.url, { method, agent: false }, cb) : http.request({ socketPath: target.socketPath, path: target.path, method, agent: false }, cb);
    req.on('error', fail);
    req.end();
  });
}

/** Scrapes and parses; fails on anything but 200 with the Prometheus text content type. */
export async function scrape(target: { url: string } | { socketPath: string; path: string }): Promise<Scrape & { text: string }> {
  const r = await httpGet(target);
  if (r.status !== 200) throw new Error(`scrape: HTTP ${r.status}: ${r.body}`);
  if (!/^text\/plain; version=0\.0\.4/.test(r.contentType)) throw new Error(`scrape: content type ${r.contentType}`);
  return { ...parsePrometheusText(r.body), text: r.body };
}
