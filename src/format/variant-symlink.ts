/**
 * Variant symlinks (§5.5, §7.4): `$(NAME)` and `$(NAME:-default)` in a symlink target, expanded
 * at readlink time from the client's environment. Mirrors `SqlDirent::ExpandSymlink`:
 *
 * - scan left to right; a `$` followed by `(` and at least one more character starts a reference
 *   if a `)` follows somewhere after the `(` (the search starts at that next character, so `$()`
 *   is a reference with an empty name);
 * - NAME is the text up to the first `:-` or the `)`; the default is the text between `:-` and `)`;
 * - NAME set in the environment (even to the empty string) → its value, otherwise the default
 *   (empty without `:-`);
 * - a `$(` without a later `)` is copied literally, as is everything else;
 * - no nesting, no recursion: substituted values are not scanned again.
 *
 * The empty NAME never counts as set (glibc's `getenv("")` returns NULL). All markers are ASCII,
 * so scanning UTF-16 code units is the same as the C++ scan over UTF-8 bytes.
 */
export type VariantEnvironment = Readonly<Record<string, string | undefined>>;

export function expandVariantSymlink(target: string, env: VariantEnvironment): string {
  if (!target.includes('$')) return target;
  const end = target.length;
  let result = '';
  let i = 0;
  while (i < end) {
    const c = target[i]!;
    if (c === '$' && i < end - 2 && target[i + 1] === '(') {
      const start = i + 2;
      const close = target.indexOf(')', start);
      if (close < 0) {
        // No right parenthesis anywhere after: nothing later can expand either.
        result += target.slice(i);
        break;
      }
      const separator = target.indexOf(':-', start);
      const hasDefault = separator >= 0 && separator < close;
      const name = target.slice(start, hasDefault ? separator : close);
      const value = lookup(env, name);
      result += value ?? (hasDefault ? target.slice(separator + 2, close) : '');
      i = close + 1;
      continue;
    }
    result += c;
    i++;
  }
  return result;
}

function lookup(env: VariantEnvironment, name: string): string | undefined {
  if (name === '' || !Object.prototype.hasOwnProperty.call(env, name)) return undefined;
  const value = env[name];
  return typeof value === 'string' ? value : undefined;
}

/** True when the target contains a variable reference that `expandVariantSymlink` would replace. */
export function isVariantSymlink(target: string): boolean {
  return /\$\([\s\S]*\)/.test(target);
}
