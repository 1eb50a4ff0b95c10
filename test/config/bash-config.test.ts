import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { assignedNames, loadConfig, parseMountOptions, substituteTemplates } from '../../src/config/bash-config';

const FQRN = 'atlas.cern.ch';

t.test('precedence across every kind of file, sources recorded, earlier values visible', async (t) => {
  const labels = ['default.conf', 'd10', 'd20', 'default.local', 'domain.conf', 'domain.local', 'repo.conf', 'repo.local'];
  const body = (label: string): string =>
    [
      `CVMFS_SEEN_${label.replace(/\W/g, '_')}="$CVMFS_LEVEL"`,
      `CVMFS_LEVEL=${label}`,
      `CVMFS_ONLY_${label.replace(/\W/g, '_')}=1`,
      '',
    ].join('\n');
  const root = t.testdir({
    'default.conf': body('default.conf'),
    'default.d': { '10-x.conf': body('d10'), '20-y.conf': body('d20') },
    'default.local': body('default.local'),
    'domain.d': {
      'cern.ch.conf': body('domain.conf'),
      'cern.ch.local': body('domain.local'),
      'egi.eu.conf': 'CVMFS_LEVEL=wrong-domain\n',
    },
    'config.d': {
      'atlas.cern.ch.conf': body('repo.conf'),
      'atlas.cern.ch.local': body('repo.local'),
      'cms.cern.ch.conf': 'CVMFS_LEVEL=wrong-repo\n',
    },
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.fqrn, FQRN);
  t.equal(c.root, root);
  t.equal(c.get('CVMFS_LEVEL'), 'repo.local');
  t.equal(c.values.get('CVMFS_LEVEL')?.source, path.join(root, 'config.d/atlas.cern.ch.local'));
  const files = [
    'default.conf',
    'default.d/10-x.conf',
    'default.d/20-y.conf',
    'default.local',
    'domain.d/cern.ch.conf',
    'domain.d/cern.ch.local',
    'config.d/atlas.cern.ch.conf',
    'config.d/atlas.cern.ch.local',
  ].map((f) => path.join(root, f));
  t.same(c.files, files);
  for (const [i, label] of labels.entries()) {
    const key = label.replace(/\W/g, '_');
    t.equal(c.values.get(`CVMFS_ONLY_${key}`)?.source, files[i], `source of ${label}`);
    t.equal(c.get(`CVMFS_SEEN_${key}`), i === 0 ? '' : labels[i - 1], `${label} sees the previous value`);
  }
});

t.test('one bash process per load', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_A=1\n',
    'default.local': 'CVMFS_B=2\n',
    'config.d': { 'atlas.cern.ch.conf': 'CVMFS_C=3\n' },
    'bash-wrapper': '#!/bin/bash\necho run >> "$(dirname "$0")/count"\nexec bash "$@"\n',
  });
  const wrapper = path.join(root, 'bash-wrapper');
  fs.chmodSync(wrapper, 0o755);
  const c = await loadConfig(FQRN, { root, bash: wrapper });
  t.same([c.get('CVMFS_A'), c.get('CVMFS_B'), c.get('CVMFS_C')], ['1', '2', '3']);
  t.equal(fs.readFileSync(path.join(root, 'count'), 'utf8'), 'run\n');
});

t.test('default.d is read in byte order, only *.conf regular files', async (t) => {
  const root = t.testdir({
    'default.d': {
      '2-b.conf': 'CVMFS_ORDER="$CVMFS_ORDER 2-b"\n',
      '10-a.conf': 'CVMFS_ORDER="$CVMFS_ORDER 10-a"\n',
      '99.conf': 'CVMFS_ORDER="$CVMFS_ORDER 99"\n',
      'B.conf': 'CVMFS_ORDER="$CVMFS_ORDER B"\n',
      'README': 'CVMFS_ORDER=readme\n',
      '50.conf.rpmsave': 'CVMFS_ORDER=rpmsave\n',
      'dir.conf': { 'x.conf': 'CVMFS_ORDER=dir\n' },
    },
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_ORDER'), ' 10-a 2-b 99 B');
  t.equal(c.values.get('CVMFS_ORDER')?.source, path.join(root, 'default.d/B.conf'));
});

t.test('a missing root or missing files are fine', async (t) => {
  const c = await loadConfig(FQRN, { root: path.join(t.testdir({}), 'nope') });
  t.equal(c.values.size, 0);
  t.same(c.files, []);
  const c2 = await loadConfig(FQRN, { root: t.testdir({ 'domain.d': 'not a directory' }) });
  t.equal(c2.values.size, 0);
});

t.test('bash conditionals on CVMFS_FQRN, export, readonly, eval', async (t) => {
  const root = t.testdir({
    // the real default.conf pattern: readonly values in a guard that later files do not re-enter
    'default.conf': [
      'if [ "x$CVMFS_BASE_ENV" = "x" ]; then',
      '  readonly CVMFS_USER=cvmfs',
      '  readonly CVMFS_BASE_ENV=1',
      'fi',
      'export CVMFS_EXPORTED=exported',
      'eval CVMFS_EVALED=evaled',
      '',
    ].join('\n'),
    'domain.d': {
      'cern.ch.conf': [
        'if [ "$CVMFS_FQRN" = "atlas.cern.ch" ]; then',
        '  CVMFS_BRANCH=atlas',
        'else',
        '  CVMFS_BRANCH=other',
        'fi',
        'case "$CVMFS_USE_CDN" in',
        '  yes) CVMFS_SERVER_URL="http://cdn/cvmfs/@fqrn@" ;;',
        '  *)',
        '    CVMFS_SERVER_URL="http://s1/cvmfs/@fqrn@;http://s2/cvmfs/@fqrn@" ;;',
        'esac',
        '',
      ].join('\n'),
    },
    'config.d': { 'atlas.cern.ch.local': 'readonly CVMFS_USER=me\nCVMFS_USE_CDN=yes\n' },
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_USER'), 'me', 'a readonly value of one file does not bind the next');
  t.equal(c.get('CVMFS_BASE_ENV'), '1');
  t.equal(c.get('CVMFS_EXPORTED'), 'exported');
  t.equal(c.get('CVMFS_EVALED'), 'evaled');
  t.equal(c.get('CVMFS_BRANCH'), 'atlas');
  t.equal(c.get('CVMFS_SERVER_URL'), 'http://s1/cvmfs/atlas.cern.ch;http://s2/cvmfs/atlas.cern.ch');
  const cms = await loadConfig('cms.cern.ch', { root });
  t.equal(cms.get('CVMFS_BRANCH'), 'other');
  t.equal(cms.get('CVMFS_USER'), 'cvmfs');
  t.equal(cms.get('CVMFS_FQRN'), undefined, 'CVMFS_FQRN is exported, not a value');
});

t.test('quoting, spaces, separators and newlines survive exactly', async (t) => {
  const root = t.testdir({
    'default.conf': [
      `CVMFS_HTTP_PROXY="http://p1:3128|http://p2:3128;DIRECT"`,
      `CVMFS_SPACES='  two  spaces  '`,
      `CVMFS_STAR="*"`,
      `CVMFS_QUOTES="it's \\"quoted\\" \\$HOME"`,
      `CVMFS_ANSI=$'a\\tb\\nc'`,
      `CVMFS_UTF8="héllo → wörld"`,
      `CVMFS_EMPTY=`,
      `  CVMFS_INDENTED=yes # comment`,
      `# CVMFS_COMMENTED=no`,
      `echo "noise on stdout"; echo "noise on stderr" >&2`,
      '',
    ].join('\n'),
    'default.local': [
      // the values reach the next file unchanged
      'CVMFS_COPY="$CVMFS_SPACES|$CVMFS_QUOTES|$CVMFS_ANSI|$CVMFS_UTF8"',
      '',
    ].join('\n'),
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_HTTP_PROXY'), 'http://p1:3128|http://p2:3128;DIRECT');
  t.equal(c.get('CVMFS_SPACES'), '  two  spaces  ');
  t.equal(c.get('CVMFS_STAR'), '*');
  t.equal(c.get('CVMFS_QUOTES'), `it's "quoted" $HOME`);
  t.equal(c.get('CVMFS_ANSI'), 'a\tb\nc');
  t.equal(c.get('CVMFS_UTF8'), 'héllo → wörld');
  t.equal(c.get('CVMFS_EMPTY'), '');
  t.equal(c.get('CVMFS_INDENTED'), 'yes');
  t.equal(c.get('CVMFS_COMMENTED'), undefined);
  t.equal(c.get('CVMFS_COPY'), `  two  spaces  |it's "quoted" $HOME|a\tb\nc|héllo → wörld`);
});

t.test('cwd is the directory of the file', async (t) => {
  const root = t.testdir({
    'config.d': {
      'common.sh': 'CVMFS_COMMON=from-common\n',
      'atlas.cern.ch.conf': '. ./common.sh\nCVMFS_COMMON="$CVMFS_COMMON"\nCVMFS_HERE=$(pwd)\n',
    },
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_COMMON'), 'from-common');
  t.equal(c.get('CVMFS_HERE'), fs.realpathSync(path.join(root, 'config.d')));
});

t.test('names left unset are not recorded; unsetting removes an earlier value', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_GONE=1\nCVMFS_KEPT=1\n',
    'default.local': [
      'if false; then',
      '  CVMFS_NEVER=1',
      '  CVMFS_KEPT=2',
      'fi',
      'CVMFS_GONE=2',
      'unset CVMFS_GONE',
      '',
    ].join('\n'),
    'config.d': { 'atlas.cern.ch.conf': 'CVMFS_AFTER="${CVMFS_GONE-unset}"\n' },
  });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_NEVER'), undefined);
  t.equal(c.get('CVMFS_GONE'), undefined);
  t.equal(c.get('CVMFS_AFTER'), 'unset', 'later files no longer see it');
  t.equal(c.get('CVMFS_KEPT'), '1');
  // like the real client, a file that mentions a name takes over its source
  t.equal(c.values.get('CVMFS_KEPT')?.source, path.join(root, 'default.local'));
});

t.test('@fqrn@ and @org@ are substituted everywhere, other templates stay', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_SERVER_URL="http://s/cvmfs/@fqrn@;http://t/@org@/@fqrn@"\nCVMFS_OTHER="@foo@ @org@@org@"\n',
  });
  const c = await loadConfig('lhcb.cern.ch', { root });
  t.equal(c.get('CVMFS_SERVER_URL'), 'http://s/cvmfs/lhcb.cern.ch;http://t/lhcb/lhcb.cern.ch');
  t.equal(c.get('CVMFS_OTHER'), '@foo@ lhcbl' + 'hcb');
  t.equal(substituteTemplates('@org@.@fqrn@', 'a.b.c'), 'a.a.b.c');
});

t.test('overrides win, are substituted and come from the command line', async (t) => {
  const root = t.testdir({ 'config.d': { 'atlas.cern.ch.local': 'CVMFS_QUOTA_LIMIT=10\nCVMFS_KEEP=1\n' } });
  const c = await loadConfig(FQRN, {
    root,
    overrides: { CVMFS_QUOTA_LIMIT: '20', CVMFS_SERVER_URL: 'http://x/@fqrn@' },
  });
  t.same(c.values.get('CVMFS_QUOTA_LIMIT'), { value: '20', source: 'command line' });
  t.same(c.values.get('CVMFS_SERVER_URL'), { value: 'http://x/atlas.cern.ch', source: 'command line' });
  t.equal(c.get('CVMFS_KEEP'), '1');
  await t.rejects(loadConfig(FQRN, { root, overrides: { 'NOT A NAME': 'x' } }), { code: 'E_USAGE' });
});

t.test('the caller environment does not leak into the files', async (t) => {
  const root = t.testdir({ 'default.conf': 'CVMFS_LEAK="${CVMFS_TEST_LEAK-none}"\n' });
  process.env.CVMFS_TEST_LEAK = 'leaked';
  try {
    const c = await loadConfig(FQRN, { root });
    t.equal(c.get('CVMFS_LEAK'), 'none');
  } finally {
    delete process.env.CVMFS_TEST_LEAK;
  }
});

t.test('a file that does not parse is E_USAGE naming the file', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_OK=1\n',
    'config.d': { 'atlas.cern.ch.conf': 'CVMFS_A=1\nif then\nCVMFS_B=2\n' },
  });
  const file = path.join(root, 'config.d/atlas.cern.ch.conf');
  await t.rejects(loadConfig(FQRN, { root }), {
    code: 'E_USAGE',
    message: new RegExp(`^configuration file ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not valid bash: line 2: syntax error`),
  });
  const root2 = t.testdir({ 'default.local': 'CVMFS_A="unterminated\n' });
  await t.rejects(loadConfig(FQRN, { root: root2 }), { code: 'E_USAGE', message: /default\.local.*unexpected EOF/ });
});

t.test('a runtime failure is not a syntax error; exit is an error', async (t) => {
  const root = t.testdir({ 'default.conf': 'CVMFS_A=1\n[ x -gt 1 ]\n' });
  const c = await loadConfig(FQRN, { root });
  t.equal(c.get('CVMFS_A'), '1');
  const root2 = t.testdir({ 'default.local': 'CVMFS_A=1\nexit 3\n' });
  await t.rejects(loadConfig(FQRN, { root: root2 }), { code: 'E_USAGE', message: /default\.local exits the shell \(status 3\)/ });
  const root3 = t.testdir({ 'default.local': 'CVMFS_A=1\nreturn 0\nCVMFS_B=2\n' });
  const c3 = await loadConfig(FQRN, { root: root3 });
  t.equal(c3.get('CVMFS_A'), '1');
  t.equal(c3.get('CVMFS_B'), undefined);
});

t.test('repository names', async (t) => {
  const root = t.testdir({});
  for (const bad of ['atlas', '', '../etc.x', 'a..b', 'a/b.c', '.a.b', 'a b.c']) {
    await t.rejects(loadConfig(bad, { root }), { code: 'E_USAGE' }, JSON.stringify(bad));
  }
  const root2 = t.testdir({ 'domain.d': { 'b.c.conf': 'CVMFS_D=deep\n' } });
  t.equal((await loadConfig('a.b.c', { root: root2 })).get('CVMFS_D'), 'deep', 'domain drops only the first label');
});

t.test('assignment scanning', async (t) => {
  t.same(
    assignedNames(
      [
        'A=1',
        '  export B=2',
        'readonly\tC=3',
        'eval D=4',
        '# E=5',
        'echo F=6',
        'G =7',
        'if [ x ]; then H=8; fi',
        'A=again',
        '__cvmfs_internal=1',
        '_u9=1',
      ].join('\n'),
    ),
    ['A', 'B', 'C', 'D', '_u9'],
  );
});

t.test('parseMountOptions', async (t) => {
  t.same(parseMountOptions('CVMFS_A=1,CVMFS_B=x y'), { CVMFS_A: '1', CVMFS_B: 'x y' });
  t.same(parseMountOptions(''), {});
  t.same(parseMountOptions(',CVMFS_A=1,,'), { CVMFS_A: '1' });
  t.same(parseMountOptions('CVMFS_A=1,CVMFS_A=2'), { CVMFS_A: '2' }, 'later wins');
  t.same(parseMountOptions('CVMFS_P=http://a:3128|http://b:3128;DIRECT'), {
    CVMFS_P: 'http://a:3128|http://b:3128;DIRECT',
  });
  t.same(parseMountOptions('CVMFS_E=,CVMFS_EQ=a=b'), { CVMFS_E: '', CVMFS_EQ: 'a=b' });
  t.same(parseMountOptions(`CVMFS_Q="a,b",CVMFS_S='c,"d"',CVMFS_B=e\\,f`), {
    CVMFS_Q: 'a,b',
    CVMFS_S: 'c,"d"',
    CVMFS_B: 'e,f',
  });
  t.same(parseMountOptions(`CVMFS_D="say \\"hi\\", \\\\ ok"`), { CVMFS_D: 'say "hi", \\ ok' });
  for (const bad of ['ro', 'allow_other,CVMFS_A=1', 'HTTP_PROXY=x', 'CVMFS_=1', 'cvmfs_a=1', 'CVMFS_A="x', "CVMFS_A='x", 'CVMFS_A=x\\']) {
    t.throws(() => parseMountOptions(bad), { code: 'E_USAGE' }, bad);
  }
});
