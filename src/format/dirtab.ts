/**
 * `.cvmfsdirtab` rules (§7.5): which directories become nested catalog roots at publish time.
 * Positive rules are absolute paths whose `*` stays within one component; negative rules (`!`)
 * veto, and their `*` may cross `/`. `?` matches one character except `/` in both.
 */
import { FormatError } from '../errors';

export interface Dirtab {
  readonly positive: readonly RegExp[];
  readonly negative: readonly RegExp[];
}

function globToRegExp(glob: string, starCrossesSlash: boolean): RegExp {
  let re = '';
  for (const ch of glob) {
    if (ch === '*') re += starCrossesSlash ? '.*' : '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 'u');
}

export function parseDirtab(text: string): Dirtab {
  const positive: RegExp[] = [];
  const negative: RegExp[] = [];
  const seen = new Map<string, boolean>();
  for (const raw of text.split('\n')) {
    const line = raw.trim().replace(/\/+$/, '');
    if (line === '' || line.startsWith('#')) continue;
    const isNegative = line.startsWith('!');
    const rule = isNegative ? line.slice(1).trim() : line;
    if (rule === '') continue;
    if (!isNegative && !rule.startsWith('/')) throw new FormatError(`.cvmfsdirtab rule '${rule}' is not an absolute path`);
    if (seen.has(rule) && seen.get(rule) !== isNegative) {
      throw new FormatError(`.cvmfsdirtab rule '${rule}' is both positive and negative`);
    }
    seen.set(rule, isNegative);
    (isNegative ? negative : positive).push(globToRegExp(rule, isNegative));
  }
  return { positive, negative };
}

/** Whether the directory at repository path `path` (e.g. "/software/v1") is a catalog root. */
export function dirtabMatches(dirtab: Dirtab, path: string): boolean {
  return dirtab.positive.some((r) => r.test(path)) && !dirtab.negative.some((r) => r.test(path));
}
