import t from 'tap';
import { parseDirtab, dirtabMatches } from '../../src/format/dirtab';

// §7.5 example.
const EXAMPLE = '/software/*\n/software/*/*\n! */common\n';

function matching(text: string, paths: string[]): string[] {
  const dirtab = parseDirtab(text);
  return paths.filter((p) => dirtabMatches(dirtab, p));
}

t.test('§7.5 example', async (t) => {
  const d = parseDirtab(EXAMPLE);
  t.equal(d.positive.length, 2);
  t.equal(d.negative.length, 1);
  t.ok(dirtabMatches(d, '/software/a'));
  t.ok(dirtabMatches(d, '/software/a/b'));
  t.ok(dirtabMatches(d, '/software/v1.2-x86_64/lib'));
  t.notOk(dirtabMatches(d, '/software/a/common'), 'negative rule crosses /');
  t.notOk(dirtabMatches(d, '/software/common'), 'negative rule vetoes at any depth');
  t.notOk(dirtabMatches(d, '/software/a/b/c'), 'positive * stays within one component');
  t.notOk(dirtabMatches(d, '/other'));
  t.notOk(dirtabMatches(d, '/other/a'));
  t.notOk(dirtabMatches(d, '/software'));
  t.notOk(dirtabMatches(d, ''));
  t.ok(dirtabMatches(d, '/software/commonx'), 'negative rule is anchored');
  t.ok(dirtabMatches(d, '/software/a/uncommon'));
  t.notOk(dirtabMatches(d, '/software/a/common/x'), 'not matched by any positive rule');
});

t.test('comments, blank lines, leading whitespace, CRLF, trailing slashes', async (t) => {
  const text = [
    '# nested catalogs for the software area',
    '',
    '   /software/*',
    '\t/data/*/',
    '   # indented comment',
    '  !   */tmp',
    '/lib/x\r',
    '',
  ].join('\n');
  const d = parseDirtab(text);
  t.equal(d.positive.length, 3);
  t.equal(d.negative.length, 1);
  t.same(
    matching(text, ['/software/a', '/data/b', '/data/b/', '/software/tmp', '/data/tmp', '/lib/x', '/lib/y', '/# nested catalogs for the software area']),
    ['/software/a', '/data/b', '/lib/x'],
  );
  // An empty or comment-only file matches nothing.
  t.same(matching('', ['/a', '/software/a']), []);
  t.same(matching('# only\n\n   \n', ['/a']), []);
  // A lone "!" is ignored.
  t.same(parseDirtab('!\n/a\n').negative, []);
});

t.test('invalid rules are FormatErrors', async (t) => {
  t.throws(() => parseDirtab('software/*\n'), { code: 'E_FORMAT', name: 'FormatError' }, 'relative positive rule');
  t.throws(() => parseDirtab('/a\n*/b\n'), { code: 'E_FORMAT' }, 'relative positive rule later in the file');
  t.throws(() => parseDirtab('/software/*\n!/software/*\n'), { code: 'E_FORMAT' }, 'identical positive and negative');
  t.throws(() => parseDirtab('! /software/*\n/software/*\n'), { code: 'E_FORMAT' }, 'negative first, then positive');
  t.throws(() => parseDirtab('/software/*/\n!/software/*\n'), { code: 'E_FORMAT' }, 'identical after trailing slash removal');
  // Relative negative rules are fine; repeating a rule with the same sign is fine.
  t.doesNotThrow(() => parseDirtab('/a/*\n! */b\n! */b\n/a/*\n'));
});

t.test('? matches one character except /', async (t) => {
  const text = '/v?\n/sw/?/x\n';
  t.same(matching(text, ['/v1', '/va', '/v', '/v10', '/v/']), ['/v1', '/va']);
  t.same(matching(text, ['/sw/a/x', '/sw/ab/x', '/sw//x', '/sw/a/b/x']), ['/sw/a/x']);
  // In negative rules too, ? does not match /.
  t.same(matching('/a/*\n/a/*/*\n! /a/?\n', ['/a/b', '/a/bc', '/a/b/c']), ['/a/bc', '/a/b/c']);
  t.same(matching('/a/*/*\n! /a?b/c\n', ['/a/b/c']), ['/a/b/c'], 'negative ? does not cross /');
});

t.test('other characters are literal', async (t) => {
  const text = '/sw.x/a+b/(c)/[d]/$e^/{f}|g\\h\n';
  t.same(matching(text, ['/sw.x/a+b/(c)/[d]/$e^/{f}|g\\h']), ['/sw.x/a+b/(c)/[d]/$e^/{f}|g\\h']);
  t.same(matching('/sw.x\n', ['/swAx', '/sw.x']), ['/sw.x']);
  t.same(matching('/ünï/*\n', ['/ünï/名前', '/uni/a']), ['/ünï/名前']);
  // "*" in a positive rule matches an empty component name too, but never crosses "/".
  t.same(matching('/a/*\n', ['/a/', '/a/b', '/a/b/c']), ['/a/', '/a/b']);
  t.same(matching('/a/*b\n', ['/a/b', '/a/xyzb', '/a/x/b']), ['/a/b', '/a/xyzb']);
});
