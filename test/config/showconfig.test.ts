import t from 'tap';
import * as path from 'node:path';
import { loadConfig } from '../../src/config/bash-config';
import { KNOWN_PARAMETERS, parseSettings } from '../../src/config/parameters';
import { formatShowConfig, shellQuote } from '../../src/config/showconfig';

t.test('shell quoting like EscapeShell', async (t) => {
  t.equal(shellQuote('/var/lib/cvmfs'), '/var/lib/cvmfs');
  t.equal(shellQuote('http://a:3128,b-c_d.e'), 'http://a:3128,b-c_d.e');
  t.equal(shellQuote(''), '');
  t.equal(shellQuote('p1|p2;DIRECT'), "'p1|p2;DIRECT'");
  t.equal(shellQuote("it's"), `'it'\\''s'`);
});

t.test('showconfig lists the repository, the parameters sorted with sources, the cache dir', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_QUOTA_LIMIT=4000\nCVMFS_CACHE_BASE=/var/lib/cvmfs\nNOT_CVMFS=hidden\n',
    keys: { 'a.pub': 'k' },
    'domain.d': { 'cern.ch.conf': 'CVMFS_SERVER_URL="http://s1/cvmfs/@fqrn@;http://s2/cvmfs/@fqrn@"\n' },
    'config.d': { 'atlas.cern.ch.local': "CVMFS_HTTP_PROXY='http://p:3128|DIRECT'\nCVMFS_ZZZ=last\nCVMFS_AAA=first\n" },
  });
  const c = await loadConfig('atlas.cern.ch', { root, overrides: { CVMFS_TIMEOUT: '3' } });
  const s = parseSettings(c);
  const f = (rel: string) => path.join(root, rel);

  const short = formatShowConfig(c, s, { short: true });
  t.equal(
    short,
    [
      'CVMFS_REPOSITORY_NAME=atlas.cern.ch',
      `CVMFS_AAA=first    # from ${f('config.d/atlas.cern.ch.local')}`,
      `CVMFS_CACHE_BASE=/var/lib/cvmfs    # from ${f('default.conf')}`,
      'CVMFS_CACHE_DIR=/var/lib/cvmfs/shared',
      `CVMFS_HTTP_PROXY='http://p:3128|DIRECT'    # from ${f('config.d/atlas.cern.ch.local')}`,
      `CVMFS_QUOTA_LIMIT=4000    # from ${f('default.conf')}`,
      `CVMFS_SERVER_URL='http://s1/cvmfs/atlas.cern.ch;http://s2/cvmfs/atlas.cern.ch'    # from ${f('domain.d/cern.ch.conf')}`,
      'CVMFS_TIMEOUT=3    # from command line',
      `CVMFS_ZZZ=last    # from ${f('config.d/atlas.cern.ch.local')}`,
      '',
    ].join('\n'),
  );

  const full = formatShowConfig(c, s).split('\n');
  t.equal(full[0], 'CVMFS_REPOSITORY_NAME=atlas.cern.ch');
  t.equal(full.at(-1), '');
  const names = full.slice(1, -1).map((l) => l.slice(0, l.indexOf('=')));
  t.same(names, [...names].sort(), 'sorted');
  for (const known of KNOWN_PARAMETERS) t.ok(names.includes(known), known);
  t.ok(full.includes('CVMFS_ROOT_HASH='), 'unset known parameters show empty');
  t.notOk(full.some((l) => l.startsWith('NOT_CVMFS')), 'only CVMFS_ parameters');
});

t.test('a configured cache dir shows its source', async (t) => {
  const root = t.testdir({
    keys: { 'a.pub': 'k' },
    'default.local': 'CVMFS_SERVER_URL=http://s\nCVMFS_HTTP_PROXY=DIRECT\nCVMFS_CACHE_DIR=/tmp/my\\ cache/\n',
  });
  const c = await loadConfig('a.b.c', { root });
  const out = formatShowConfig(c, parseSettings(c), { short: true });
  t.match(out, `\nCVMFS_CACHE_DIR='/tmp/my cache'    # from ${path.join(root, 'default.local')}\n`);
});
