import t from 'tap';
import { expandVariantSymlink, isVariantSymlink, type VariantEnvironment } from '../../src/format/variant-symlink';

/**
 * A literal transcription of `SqlDirent::ExpandSymlink` (cvmfs/catalog_sql.cc, 2.12), pointer for
 * index, to cross-check the implementation on random strings. `getenv("")` is NULL in glibc.
 */
function reference(raw: string, env: VariantEnvironment): string {
  const getenv = (name: string) =>
    name !== '' && Object.prototype.hasOwnProperty.call(env, name) && typeof env[name] === 'string' ? env[name] : undefined;
  const end = raw.length;
  let c = 0;
  for (; c < end; ++c) if (raw[c] === '$') break;
  if (c === end) return raw;
  let result = '';
  for (c = 0; c < end; ++c) {
    if (raw[c] === '$' && c < end - 2 && raw[c + 1] === '(') {
      c += 2;
      let rpar = c;
      let found = false;
      while (rpar < end) {
        if (raw[rpar] === ')') {
          found = true;
          break;
        }
        rpar++;
      }
      if (!found) {
        result += '$(' + raw[c];
        continue;
      }
      let separator = c;
      let defaultValue = rpar;
      while (separator !== rpar) {
        if (raw[separator] === ':' && raw[separator + 1] === '-') {
          defaultValue = separator + 2;
          break;
        }
        separator++;
      }
      const value = getenv(raw.slice(c, separator));
      result += value !== undefined ? value : raw.slice(defaultValue, rpar);
      c = rpar;
      continue;
    }
    result += raw[c];
  }
  return result;
}

const cases: [string, VariantEnvironment, string][] = [
  // plain targets
  ['', {}, ''],
  ['text.txt', { A: 'x' }, 'text.txt'],
  ['/cvmfs/fixture.cvmfs.io/text.txt', {}, '/cvmfs/fixture.cvmfs.io/text.txt'],
  // the fixture's link-variant
  ['$(FIXTURE_VAR:-text.txt)', {}, 'text.txt'],
  ['$(FIXTURE_VAR:-text.txt)', { FIXTURE_VAR: 'one-byte.txt' }, 'one-byte.txt'],
  ['$(FIXTURE_VAR:-text.txt)', { FIXTURE_VAR: '' }, ''], // set but empty wins over the default
  ['$(FIXTURE_VAR:-text.txt)', { FIXTURE_VAR: undefined }, 'text.txt'], // undefined = not set
  // without default
  ['$(A)', {}, ''],
  ['$(A)', { A: 'x' }, 'x'],
  ['$(A)', { A: '' }, ''],
  ['/opt/$(ARCH)/bin', { ARCH: 'x86_64' }, '/opt/x86_64/bin'],
  ['/opt/$(ARCH)/bin', {}, '/opt//bin'],
  ['$(A)$(B)', { A: '1', B: '2' }, '12'],
  ['$(A)/$(B:-b)/$(C:-c)', { A: 'a', C: 'see' }, 'a/b/see'],
  // default forms
  ['$(A:-)', {}, ''],
  ['$(A:-)', { A: 'x' }, 'x'],
  ['$(A:-b:-c)', {}, 'b:-c'], // the first ':-' separates
  ['$(A:-/default/path)', {}, '/default/path'],
  ['$(A:-x-y)', {}, 'x-y'],
  ['$(:-dflt)', {}, 'dflt'], // empty name: never set
  ['$(:-dflt)', { '': 'x' }, 'dflt'],
  // names are everything up to ':-' or ')'
  ['$(A:b)', {}, ''],
  ['$(A:b)', { 'A:b': 'v' }, 'v'],
  ['$(A-b)', { 'A-b': 'v' }, 'v'],
  ['$(A:)', { 'A:': 'v' }, 'v'], // ':' right before ')' is not a separator
  ['$(A -b)', { 'A -b': 'sp' }, 'sp'],
  ['$(A:-b)', { 'A:-b': 'no' }, 'b'],
  // empty references
  ['$()', {}, ''],
  ['$()', { '': 'x' }, ''],
  ['$()x', {}, 'x'],
  ['x$()', {}, 'x'],
  // unterminated: copied literally
  ['$(', {}, '$('],
  ['$(A', { A: 'x' }, '$(A'],
  ['$(A:-b', {}, '$(A:-b'],
  ['a/$(A/b', { A: 'x' }, 'a/$(A/b'],
  ['$(A) $(', { A: 'x' }, 'x $('],
  ['$(A)$(B', { A: 'x', B: 'y' }, 'x$(B'],
  ['a)$(b', {}, 'a)$(b'],
  // lone '$' and '$' not followed by '('
  ['$', {}, '$'],
  ['$$', {}, '$$'],
  ['$A', { A: 'x' }, '$A'],
  ['${A}', { A: 'x' }, '${A}'],
  ['$$(A)', { A: 'x' }, '$x'],
  ['$(A)$', { A: 'x' }, 'x$'],
  ['$(A)(B)', { A: 'x' }, 'x(B)'],
  ['($(A))', { A: 'x' }, '(x)'],
  ['$(A))', { A: 'x' }, 'x)'],
  // no nesting, no recursion
  ['$(A:-$(B))', {}, '$(B)'],
  ['$(A:-$(B))', { B: 'b' }, '$(B)'],
  ['$(A:-$(B))', { A: 'a' }, 'a)'],
  ['$(A)', { A: '$(B)', B: 'no' }, '$(B)'],
  ['$($(A))', { A: 'x' }, ')'], // name is '$(A'
  ['$($(A))', { '$(A': 'odd' }, 'odd)'],
  // non-ASCII around and inside
  ['$(V)/ñandú', { V: '名前' }, '名前/ñandú'],
  ['$(Ü:-ü)', {}, 'ü'],
  ['$(Ü:-ü)', { Ü: 'u' }, 'u'],
  ['😀$(A)😀', { A: '🙂' }, '😀🙂😀'],
  // names that exist on Object.prototype are not set
  ['$(constructor)', {}, ''],
  ['$(toString:-d)', {}, 'd'],
  ['$(__proto__:-p)', {}, 'p'],
];

t.test('table of cases', async (t) => {
  for (const [target, env, expected] of cases) {
    t.equal(expandVariantSymlink(target, env), expected, `${JSON.stringify(target)} with ${JSON.stringify(env)}`);
    t.equal(reference(target, env), expected, `reference agrees on ${JSON.stringify(target)}`);
  }
});

t.test('agrees with a transcription of the C++ loop on random strings', async (t) => {
  // Deterministic LCG so failures reproduce.
  let state = 12345;
  const rand = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  const alphabet = ['$', '(', ')', ':', '-', 'A', 'B', 'x', '/', 'ü'];
  const envs: VariantEnvironment[] = [
    {},
    { A: '1' },
    { A: '', B: 'bee' },
    { A: '$(B)', B: '$(A)' },
    { 'A:': 'colon', 'A-': 'dash', AB: 'ab', '(A': 'paren' },
  ];
  let mismatches = 0;
  for (let i = 0; i < 20000; i++) {
    const len = rand(14);
    let s = '';
    for (let j = 0; j < len; j++) s += alphabet[rand(alphabet.length)];
    const env = envs[rand(envs.length)]!;
    const got = expandVariantSymlink(s, env);
    const want = reference(s, env);
    if (got !== want) {
      mismatches++;
      if (mismatches <= 5) t.equal(got, want, `${JSON.stringify(s)} with ${JSON.stringify(env)}`);
    }
  }
  t.equal(mismatches, 0, 'no mismatches in 20000 random targets');
});

t.test('environment is not modified and results are not re-expanded', async (t) => {
  const env = Object.freeze({ A: '$(A)' });
  t.equal(expandVariantSymlink('$(A)$(A)', env), '$(A)$(A)');
  t.same(env, { A: '$(A)' });
});

t.test('isVariantSymlink', async (t) => {
  t.ok(isVariantSymlink('$(A)'));
  t.ok(isVariantSymlink('x/$(A:-b)/y'));
  t.ok(isVariantSymlink('$()'));
  t.notOk(isVariantSymlink('$(A'));
  t.notOk(isVariantSymlink('$A)'));
  t.notOk(isVariantSymlink('plain/target'));
  t.notOk(isVariantSymlink(')$('));
});
