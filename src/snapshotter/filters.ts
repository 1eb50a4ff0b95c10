/**
 * containerd's filter syntax, the part List needs:
 *
 *   filter    := selector ("," selector)*          all selectors must match
 *   selector  := fieldpath [operator value]        no operator: the field is present
 *   fieldpath := field ("." field)*
 *   field     := quoted | [A-Za-z][A-Za-z0-9_]*
 *   operator  := "==" | "!=" | "~="               ~= is a regular expression match
 *   value     := quoted | [^\s,]+
 *   quoted    := "go string" | `raw` | /regexp/
 *
 * containerd itself sends `labels."containerd.io/snapshot.ref"==<chain id>,parent==<key>` when it
 * looks for a snapshot that a remote snapshotter made; several filters in one request are ORed.
 * Snapshot fields are those of containerd's adaptor: name, parent, kind (active, view, committed)
 * and labels.<key> (the key may contain dots).
 */
import type { SnapshotInfo } from './types';
import { invalid } from './errors';

type Operator = 'present' | '==' | '!=' | '~=';

interface Selector {
  readonly path: readonly string[];
  readonly op: Operator;
  readonly value: string;
  readonly regexp?: RegExp;
}

export type Filter = readonly Selector[];

class Scanner {
  pos = 0;
  constructor(readonly text: string) {}
  get done(): boolean {
    return this.pos >= this.text.length;
  }
  peek(): string {
    return this.text[this.pos] ?? '';
  }
  skipSpace(): void {
    while (/\s/.test(this.peek())) this.pos++;
  }
  fail(what: string): never {
    throw invalid(`filter ${JSON.stringify(this.text)}: ${what} at position ${this.pos}`);
  }
  quoted(): string {
    const q = this.peek();
    const start = this.pos++;
    while (!this.done && this.peek() !== q) {
      if (this.peek() === '\\' && q !== '`') this.pos++;
      this.pos++;
    }
    if (this.done) this.fail('unterminated quote');
    this.pos++;
    const body = this.text.slice(start + 1, this.pos - 1);
    if (q === '`') return body;
    if (q === '/') return body.replace(/\\\//g, '/');
    try {
      return JSON.parse(`"${body}"`) as string;
    } catch {
      this.fail('bad quoted string');
    }
  }
  field(): string {
    const c = this.peek();
    if (c === '"' || c === '`' || c === '/') return this.quoted();
    const m = /^[A-Za-z][A-Za-z0-9_]*/.exec(this.text.slice(this.pos));
    if (!m) this.fail('expected a field name');
    this.pos += m[0].length;
    return m[0];
  }
  operator(): Operator | undefined {
    const two = this.text.slice(this.pos, this.pos + 2);
    if (two === '==' || two === '!=' || two === '~=') {
      this.pos += 2;
      return two;
    }
    return undefined;
  }
  value(): string {
    const c = this.peek();
    if (c === '"' || c === '`' || c === '/') return this.quoted();
    const m = /^[^\s,]+/.exec(this.text.slice(this.pos));
    if (!m) this.fail('expected a value');
    this.pos += m[0].length;
    return m[0];
  }
}

export function parseFilter(text: string): Filter {
  const s = new Scanner(text);
  const selectors: Selector[] = [];
  for (;;) {
    s.skipSpace();
    const path = [s.field()];
    while (s.peek() === '.') {
      s.pos++;
      path.push(s.field());
    }
    s.skipSpace();
    const op = s.operator();
    if (op === undefined) {
      selectors.push({ path, op: 'present', value: '' });
    } else {
      s.skipSpace();
      const value = s.value();
      let regexp: RegExp | undefined;
      if (op === '~=') {
        try {
          regexp = new RegExp(value);
        } catch {
          s.fail(`bad regular expression ${JSON.stringify(value)}`);
        }
      }
      selectors.push({ path, op, value, regexp });
    }
    s.skipSpace();
    if (s.done) return selectors;
    if (s.peek() !== ',') s.fail('expected ","');
    s.pos++;
  }
}

/** The value of a field path of a snapshot, as containerd's snapshot filter adaptor gives it. */
function field(info: SnapshotInfo, path: readonly string[]): string | undefined {
  switch (path[0]) {
    case 'name':
      return info.name;
    case 'parent':
      return info.parent;
    case 'kind':
      return info.kind;
    case 'labels': {
      const key = path.slice(1).join('.');
      return Object.prototype.hasOwnProperty.call(info.labels, key) ? info.labels[key] : undefined;
    }
    default:
      return undefined;
  }
}

function matchSelector(info: SnapshotInfo, sel: Selector): boolean {
  const v = field(info, sel.path);
  switch (sel.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v === sel.value;
    case '!=':
      return v !== sel.value;
    case '~=':
      return v !== undefined && sel.regexp!.test(v);
  }
}

/** A predicate for a request's filters: any of them matching (no filters: everything). */
export function compileFilters(texts: readonly string[]): (info: SnapshotInfo) => boolean {
  const filters = texts.filter((t) => t.trim() !== '').map(parseFilter);
  if (filters.length === 0) return () => true;
  return (info) => filters.some((f) => f.every((sel) => matchSelector(info, sel)));
}
