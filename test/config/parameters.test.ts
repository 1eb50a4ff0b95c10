import t from 'tap';
import type { Test } from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ConfigValue, LoadedConfig } from '../../src/config/bash-config';
import { loadConfig } from '../../src/config/bash-config';
import { DEFAULTS, parseIdMap, parseProxyList, parseSettings } from '../../src/config/parameters';

const FQRN = 'atlas.cern.ch';
const SRC = '/etc/cvmfs/default.local';
const SHA1 = 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78';

/** A LoadedConfig without bash: every value from SRC unless given as [value, source]. */
function config(values: Record<string, string | [string, string]>, root = '/etc/cvmfs', fqrn = FQRN): LoadedConfig {
  const map = new Map<string, ConfigValue>();
  for (const [k, v] of Object.entries(values)) {
    map.set(k, Array.isArray(v) ? { value: v[0], source: v[1] } : { value: v, source: SRC });
  }
  return { fqrn, root, files: [], values: map, get: (n) => map.get(n)?.value };
}

const KEYS_DIR = t.testdir({ 'k.pub': 'key' });

/** The minimum a mount needs. */
function base(_t: Test, extra: Record<string, string | [string, string]> = {}): LoadedConfig {
  return config({
    CVMFS_SERVER_URL: 'http://s1/cvmfs/atlas.cern.ch',
    CVMFS_HTTP_PROXY: 'DIRECT',
    CVMFS_KEYS_DIR: KEYS_DIR,
    ...extra,
  });
}

t.test('every default', async (t) => {
  const s = parseSettings(base(t));
  t.equal(s.fqrn, FQRN);
  t.same(s.serverUrls, ['http://s1/cvmfs/atlas.cern.ch']);
  t.same(s.proxyGroups, [['DIRECT']]);
  t.equal(s.cacheBase, '/var/lib/cvmfs');
  t.equal(s.sharedCache, true);
  t.equal(s.cacheDir, '/var/lib/cvmfs/shared');
  t.equal(s.quotaLimitMb, 4000);
  t.equal(s.timeoutS, 5);
  t.equal(s.timeoutDirectS, 10);
  t.equal(s.maxRetries, 1);
  t.equal(s.backoffInitS, 2);
  t.equal(s.backoffMaxS, 10);
  t.equal(s.lowSpeedLimit, 1024);
  t.equal(s.proxyResetAfterS, 300);
  t.equal(s.hostResetAfterS, 1800);
  t.equal(s.kcacheTimeoutS, 60);
  t.equal(s.claimOwnership, true);
  t.equal(s.uidMap, undefined);
  t.equal(s.gidMap, undefined);
  t.equal(s.rootHash, undefined);
  t.equal(s.autoUpdate, true);
  t.same(s.externalUrls, []);
  t.equal(s.magicXattrsVisibility, 'rootonly');
  t.equal(s.checkPermissions, true);
  t.equal(s.maxTtlMinutes, 0);
  t.equal(s.followRedirects, false);
  t.equal(DEFAULTS.CVMFS_KEYS_DIR, '/etc/cvmfs/keys');
});

t.test('values override the defaults; empty values count as unset', async (t) => {
  const s = parseSettings(
    base(t, {
      CVMFS_QUOTA_LIMIT: '-1',
      CVMFS_TIMEOUT: '7',
      CVMFS_TIMEOUT_DIRECT: ' 11 ',
      CVMFS_MAX_RETRIES: '0',
      CVMFS_BACKOFF_INIT: '3',
      CVMFS_BACKOFF_MAX: '30',
      CVMFS_LOW_SPEED_LIMIT: '100',
      CVMFS_PROXY_RESET_AFTER: '0',
      CVMFS_HOST_RESET_AFTER: '60',
      CVMFS_KCACHE_TIMEOUT: '-5',
      CVMFS_MAX_TTL: '15',
      CVMFS_AUTO_UPDATE: 'no',
      CVMFS_FOLLOW_REDIRECTS: 'yes',
      CVMFS_CLAIM_OWNERSHIP: '',
      CVMFS_CHECK_PERMISSIONS: '  ',
      CVMFS_EXTERNAL_URL: 'http://e1/ext/;;http://e2/ext//',
      CVMFS_SERVER_URL: 'http://a/cvmfs/atlas.cern.ch/; http://b/cvmfs/atlas.cern.ch ;',
    }),
  );
  t.equal(s.quotaLimitMb, -1);
  t.equal(s.timeoutS, 7);
  t.equal(s.timeoutDirectS, 11);
  t.equal(s.maxRetries, 0);
  t.equal(s.backoffInitS, 3);
  t.equal(s.backoffMaxS, 30);
  t.equal(s.lowSpeedLimit, 100);
  t.equal(s.proxyResetAfterS, 0);
  t.equal(s.hostResetAfterS, 60);
  t.equal(s.kcacheTimeoutS, 0, 'negative kernel cache timeout clamps to 0');
  t.equal(s.maxTtlMinutes, 15);
  t.equal(s.autoUpdate, false);
  t.equal(s.followRedirects, true);
  t.equal(s.claimOwnership, true);
  t.equal(s.checkPermissions, true);
  t.same(s.externalUrls, ['http://e1/ext', 'http://e2/ext']);
  t.same(s.serverUrls, ['http://a/cvmfs/atlas.cern.ch', 'http://b/cvmfs/atlas.cern.ch']);
});

t.test('every boolean spelling', async (t) => {
  const params = {
    CVMFS_SHARED_CACHE: 'sharedCache',
    CVMFS_CHECK_PERMISSIONS: 'checkPermissions',
    CVMFS_CLAIM_OWNERSHIP: 'claimOwnership',
    CVMFS_AUTO_UPDATE: 'autoUpdate',
    CVMFS_FOLLOW_REDIRECTS: 'followRedirects',
  } as const;
  const spellings: [string, boolean][] = [];
  for (const w of ['yes', 'on', '1', 'true']) for (const v of [w, w.toUpperCase(), w[0].toUpperCase() + w.slice(1)]) spellings.push([v, true]);
  for (const w of ['no', 'off', '0', 'false']) for (const v of [w, w.toUpperCase(), w[0].toUpperCase() + w.slice(1)]) spellings.push([v, false]);
  const keysDir = KEYS_DIR;
  for (const [param, field] of Object.entries(params)) {
    for (const [spelling, expected] of spellings) {
      const s = parseSettings(
        config({ CVMFS_SERVER_URL: 'http://s', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir, [param]: spelling }),
      );
      if (s[field] !== expected) t.fail(`${param}=${spelling} gave ${String(s[field])}`);
    }
    t.throws(
      () => parseSettings(config({ CVMFS_SERVER_URL: 'http://s', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir, [param]: 'maybe' })),
      { code: 'E_USAGE', message: `${param}='maybe' in ${SRC} is invalid: expected yes/on/1/true or no/off/0/false` },
    );
  }
  t.pass(`${spellings.length} spellings for ${Object.keys(params).length} parameters`);
});

t.test('bad integers name the parameter, the value and where it was set', async (t) => {
  const cases: [string, string][] = [
    ['CVMFS_TIMEOUT', 'five'],
    ['CVMFS_TIMEOUT', '-1'],
    ['CVMFS_TIMEOUT_DIRECT', '1.5'],
    ['CVMFS_MAX_RETRIES', '+1'],
    ['CVMFS_BACKOFF_INIT', '2s'],
    ['CVMFS_BACKOFF_MAX', '0x10'],
    ['CVMFS_LOW_SPEED_LIMIT', '1e3'],
    ['CVMFS_MAX_TTL', '99999999999999999999'],
    ['CVMFS_QUOTA_LIMIT', '4 GB'],
    ['CVMFS_KCACHE_TIMEOUT', '--1'],
  ];
  for (const [param, value] of cases) {
    const signed = param === 'CVMFS_QUOTA_LIMIT' || param === 'CVMFS_KCACHE_TIMEOUT';
    t.throws(() => parseSettings(base(t, { [param]: [value, '/etc/cvmfs/config.d/atlas.cern.ch.local'] })), {
      code: 'E_USAGE',
      message: `${param}='${value}' in /etc/cvmfs/config.d/atlas.cern.ch.local is invalid: expected ${signed ? 'an integer' : 'a non-negative integer'}`,
    });
  }
  t.throws(() => parseSettings(base(t, { CVMFS_TIMEOUT: ['x', 'command line'] })), {
    code: 'E_USAGE',
    message: "CVMFS_TIMEOUT='x' on the command line is invalid: expected a non-negative integer",
  });
});

t.test('required server URL and proxy', async (t) => {
  const keysDir = KEYS_DIR;
  t.throws(() => parseSettings(config({ CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir })), {
    code: 'E_USAGE',
    message: /^CVMFS_SERVER_URL is not set for atlas\.cern\.ch/,
  });
  t.throws(() => parseSettings(config({ CVMFS_SERVER_URL: ' ; ', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir })), {
    code: 'E_USAGE',
    message: /^CVMFS_SERVER_URL is not set/,
  });
  t.throws(() => parseSettings(config({ CVMFS_SERVER_URL: 'not a url', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: keysDir })), {
    code: 'E_USAGE',
    message: /CVMFS_SERVER_URL='not a url' in .* is not a URL/,
  });
  for (const proxy of [undefined, '', ';|;']) {
    const values: Record<string, string> = { CVMFS_SERVER_URL: 'http://s', CVMFS_KEYS_DIR: keysDir };
    if (proxy !== undefined) values.CVMFS_HTTP_PROXY = proxy;
    t.throws(() => parseSettings(config(values)), {
      code: 'E_USAGE',
      message: 'CVMFS_HTTP_PROXY is not set; use DIRECT for no proxy',
    });
  }
});

t.test('proxy syntax', async (t) => {
  t.same(parseProxyList('http://p1:3128|http://p2:3128;p3:3128;DIRECT'), [
    ['http://p1:3128', 'http://p2:3128'],
    ['http://p3:3128'],
    ['DIRECT'],
  ]);
  t.same(parseProxyList(' a | https://b ;; | ;socks5://c:1080'), [['http://a', 'https://b'], ['socks5://c:1080']]);
  t.same(parseProxyList('direct'), [['http://direct']], 'DIRECT is case-sensitive, as in the real client');
  t.throws(() => parseProxyList('auto;DIRECT'), { code: 'E_USAGE' });

  const s = (proxy: string, fallback?: string) =>
    parseSettings(base(t, fallback === undefined ? { CVMFS_HTTP_PROXY: proxy } : { CVMFS_HTTP_PROXY: proxy, CVMFS_FALLBACK_PROXY: fallback }))
      .proxyGroups;
  t.same(s('p1|p2;DIRECT'), [['http://p1', 'http://p2'], ['DIRECT']]);
  t.same(s('p1|DIRECT;DIRECT', 'f1|f2;f3'), [['http://p1'], ['http://f1', 'http://f2'], ['http://f3']], 'fallback removes DIRECT');
  t.same(s('DIRECT', 'f1'), [['http://f1']], 'only the fallback remains');
  t.same(s('p1;DIRECT', 'DIRECT'), [['http://p1'], ['DIRECT']], 'a fallback of only DIRECT is no fallback');
  t.same(s('p1;DIRECT', ''), [['http://p1'], ['DIRECT']], 'an empty fallback is no fallback');
  t.throws(() => s('auto'), { code: 'E_USAGE', message: /^CVMFS_HTTP_PROXY='auto' in .* is invalid: automatic proxy discovery/ });
  t.throws(() => s('p1', 'auto'), { code: 'E_USAGE', message: /^CVMFS_FALLBACK_PROXY='auto'/ });
});

t.test('external data has its own proxies (default DIRECT) and timeouts (default the main ones)', async (t) => {
  const d = parseSettings(base(t, { CVMFS_HTTP_PROXY: 'p1;DIRECT', CVMFS_TIMEOUT: '7', CVMFS_TIMEOUT_DIRECT: '9' }));
  t.same(d.externalProxyGroups, [['DIRECT']], 'not CVMFS_HTTP_PROXY');
  t.equal(d.externalTimeoutS, 7);
  t.equal(d.externalTimeoutDirectS, 9);
  const s = parseSettings(
    base(t, {
      CVMFS_EXTERNAL_HTTP_PROXY: 'e1|e2;DIRECT',
      CVMFS_EXTERNAL_FALLBACK_PROXY: 'f1',
      CVMFS_EXTERNAL_TIMEOUT: '20',
      CVMFS_EXTERNAL_TIMEOUT_DIRECT: '30',
    }),
  );
  t.same(s.externalProxyGroups, [['http://e1', 'http://e2'], ['http://f1']], 'fallback removes DIRECT');
  t.same(s.proxyGroups, [['DIRECT']], 'the main proxies are untouched');
  t.equal(s.externalTimeoutS, 20);
  t.equal(s.externalTimeoutDirectS, 30);
  t.same(parseSettings(base(t, { CVMFS_EXTERNAL_FALLBACK_PROXY: 'f1' })).externalProxyGroups, [['http://f1']]);
  t.throws(() => parseSettings(base(t, { CVMFS_EXTERNAL_HTTP_PROXY: 'auto' })), { code: 'E_USAGE', message: /^CVMFS_EXTERNAL_HTTP_PROXY='auto'/ });
  t.throws(() => parseSettings(base(t, { CVMFS_EXTERNAL_TIMEOUT: 'x' })), { code: 'E_USAGE', message: /^CVMFS_EXTERNAL_TIMEOUT='x'/ });
});

t.test('public keys: CVMFS_PUBLIC_KEY wins over CVMFS_KEYS_DIR', async (t) => {
  const dir = t.testdir({
    keys: { 'b.pub': 'b', 'a.pub': 'a', 'c.pem': 'c', 'sub.pub': {} },
    empty: {},
    'x.pub': 'x',
    'y.pub': 'y',
  });
  const keys = path.join(dir, 'keys');
  const url = { CVMFS_SERVER_URL: 'http://s', CVMFS_HTTP_PROXY: 'DIRECT' };
  t.same(parseSettings(config({ ...url, CVMFS_KEYS_DIR: keys })).publicKeyFiles, [
    path.join(keys, 'a.pub'),
    path.join(keys, 'b.pub'),
  ]);
  t.same(
    parseSettings(config({ ...url, CVMFS_KEYS_DIR: keys, CVMFS_PUBLIC_KEY: `${dir}/y.pub::${dir}/x.pub` })).publicKeyFiles,
    [path.join(dir, 'y.pub'), path.join(dir, 'x.pub')],
  );
  t.throws(() => parseSettings(config({ ...url, CVMFS_PUBLIC_KEY: `${dir}/x.pub:${dir}/missing.pub` })), {
    code: 'E_KEY',
    message: new RegExp(`missing\\.pub \\(CVMFS_PUBLIC_KEY in ${SRC}\\) is not a readable file`),
  });
  t.throws(() => parseSettings(config({ ...url, CVMFS_KEYS_DIR: path.join(dir, 'empty') })), {
    code: 'E_KEY',
    message: /holds no readable \*\.pub file/,
  });
  t.throws(() => parseSettings(config({ ...url, CVMFS_KEYS_DIR: path.join(dir, 'nope') })), {
    code: 'E_KEY',
    message: /keys directory .*nope cannot be read/,
  });
  // unset: <root>/keys for a non-standard configuration root
  t.same(parseSettings(config({ ...url }, dir)).publicKeyFiles, [path.join(dir, 'keys/a.pub'), path.join(dir, 'keys/b.pub')]);
});

t.test('uid and gid maps', async (t) => {
  const m = parseIdMap('# comment\n\n 137  1000\n138\t1000\n101 5\n5 101\n* 0\n\n', '/x');
  t.same([...m.entries()], [
    [137, 1000],
    [138, 1000],
    [101, 5],
    [5, 101],
    ['*', 0],
  ]);
  t.same([...parseIdMap('* 1\n* 2\n', '/x')], [['*', 2]], 'the last default wins');
  for (const bad of ['1', '1 2 3', 'a 1', '1 *', '-1 2', '1 4294967296', '1 2 # trailing comment']) {
    t.throws(() => parseIdMap(`# ok\n${bad}\n`, '/etc/cvmfs/uid.map'), {
      code: 'E_USAGE',
      message: /^line 2 of id map \/etc\/cvmfs\/uid\.map is not/,
    }, bad);
  }
  const dir = t.testdir({ 'uid.map': '0 1000\n* 65534\n', 'gid.map': '100 200\n' });
  const s = parseSettings(base(t, { CVMFS_UID_MAP: path.join(dir, 'uid.map'), CVMFS_GID_MAP: path.join(dir, 'gid.map') }));
  t.same(s.uidMap && [...s.uidMap], [[0, 1000], ['*', 65534]]);
  t.same(s.gidMap && [...s.gidMap], [[100, 200]]);
  t.throws(() => parseSettings(base(t, { CVMFS_GID_MAP: path.join(dir, 'missing.map') })), {
    code: 'E_IO',
    message: new RegExp(`^cannot read CVMFS_GID_MAP file ${dir}/missing\\.map \\(set in ${SRC}\\)`),
  });
});

t.test('cache directory variants', async (t) => {
  t.equal(parseSettings(base(t)).cacheDir, '/var/lib/cvmfs/shared');
  t.equal(parseSettings(base(t, { CVMFS_SHARED_CACHE: 'no' })).cacheDir, '/var/lib/cvmfs/atlas.cern.ch');
  const b = parseSettings(base(t, { CVMFS_CACHE_BASE: '/srv/cache/', CVMFS_SHARED_CACHE: 'off' }));
  t.equal(b.cacheBase, '/srv/cache');
  t.equal(b.cacheDir, '/srv/cache/atlas.cern.ch');
  t.equal(parseSettings(base(t, { CVMFS_CACHE_BASE: '/srv/cache' })).cacheDir, '/srv/cache/shared');
  const d = parseSettings(base(t, { CVMFS_CACHE_BASE: '/srv/cache', CVMFS_CACHE_DIR: '/fast//mine/' }));
  t.equal(d.cacheDir, '/fast/mine');
  t.equal(d.cacheBase, '/srv/cache');
  t.throws(() => parseSettings(base(t, { CVMFS_CACHE_DIR: 'relative/dir' })), {
    code: 'E_USAGE',
    message: /^CVMFS_CACHE_DIR='relative\/dir' in .* is invalid: expected an absolute path/,
  });
  t.throws(() => parseSettings(base(t, { CVMFS_CACHE_BASE: 'x' })), { code: 'E_USAGE' });
});

t.test('magic xattrs visibility', async (t) => {
  const v = (extra: Record<string, string>) => parseSettings(base(t, extra)).magicXattrsVisibility;
  t.equal(v({}), 'rootonly');
  t.equal(v({ CVMFS_HIDE_MAGIC_XATTRS: 'yes' }), 'never');
  t.equal(v({ CVMFS_HIDE_MAGIC_XATTRS: 'no' }), 'always', 'as the real client: explicitly not hidden');
  t.equal(v({ CVMFS_HIDE_MAGIC_XATTRS: 'yes', CVMFS_MAGIC_XATTRS_VISIBILITY: 'RootOnly' }), 'rootonly');
  t.equal(v({ CVMFS_MAGIC_XATTRS_VISIBILITY: 'always' }), 'always');
  t.equal(v({ CVMFS_MAGIC_XATTRS_VISIBILITY: 'NEVER' }), 'never');
  t.throws(() => v({ CVMFS_MAGIC_XATTRS_VISIBILITY: 'sometimes' }), { code: 'E_USAGE', message: /expected always, rootonly or never/ });
  t.throws(() => v({ CVMFS_HIDE_MAGIC_XATTRS: 'hidden' }), { code: 'E_USAGE' });
});

t.test('root hash', async (t) => {
  t.equal(parseSettings(base(t, { CVMFS_ROOT_HASH: SHA1 })).rootHash, SHA1);
  t.equal(parseSettings(base(t, { CVMFS_ROOT_HASH: `${SHA1}-rmd160` })).rootHash, `${SHA1}-rmd160`);
  for (const bad of ['abc', `${SHA1}C`, SHA1.toUpperCase(), `${SHA1}-md5`]) {
    t.throws(() => parseSettings(base(t, { CVMFS_ROOT_HASH: bad })), {
      code: 'E_USAGE',
      message: new RegExp(`^CVMFS_ROOT_HASH='${bad}' in ${SRC} is invalid: expected a content hash`),
    }, bad);
  }
});

t.test('parameters carry every value; unknown keys are ignored', async (t) => {
  const s = parseSettings(base(t, { CVMFS_WHATEVER: 'x', OTHER: 'y' }));
  t.equal(s.parameters.get('CVMFS_WHATEVER'), 'x');
  t.equal(s.parameters.get('OTHER'), 'y');
  t.equal(s.parameters.get('CVMFS_HTTP_PROXY'), 'DIRECT');
  t.equal(s.parameters.has('CVMFS_QUOTA_LIMIT'), false, 'defaults are not parameters');
});

t.test('from bash files to settings', async (t) => {
  const root = t.testdir({
    'default.conf': 'CVMFS_CACHE_BASE=/var/lib/cvmfs\nCVMFS_QUOTA_LIMIT=4000\nCVMFS_KEYS_DIR=/etc/cvmfs/keys\n',
    keys: { 'cern.ch': { 'cern-it1.cern.ch.pub': 'k1', 'cern-it4.cern.ch.pub': 'k4' } },
    'domain.d': {
      'cern.ch.conf':
        'CVMFS_SERVER_URL="http://s1/cvmfs/@fqrn@;http://s2/@org@/@fqrn@"\nCVMFS_KEYS_DIR="$(cd .. && pwd)/keys/cern.ch"\n',
    },
    'config.d': { 'atlas.cern.ch.local': 'CVMFS_HTTP_PROXY="squid:3128;DIRECT"\nCVMFS_SHARED_CACHE=no\n' },
  });
  const c = await loadConfig(FQRN, { root, overrides: { CVMFS_QUOTA_LIMIT: '8000' } });
  const s = parseSettings(c);
  const keys = path.join(fs.realpathSync(root), 'keys/cern.ch');
  t.same(s.serverUrls, ['http://s1/cvmfs/atlas.cern.ch', 'http://s2/atlas/atlas.cern.ch']);
  t.same(s.proxyGroups, [['http://squid:3128'], ['DIRECT']]);
  t.same(s.publicKeyFiles, [path.join(keys, 'cern-it1.cern.ch.pub'), path.join(keys, 'cern-it4.cern.ch.pub')]);
  t.equal(s.cacheDir, '/var/lib/cvmfs/atlas.cern.ch');
  t.equal(s.quotaLimitMb, 8000);
  t.throws(
    () => parseSettings(loadedWith(c, 'CVMFS_TIMEOUT', 'soon')),
    { code: 'E_USAGE', message: `CVMFS_TIMEOUT='soon' in ${path.join(root, 'default.conf')} is invalid: expected a non-negative integer` },
  );
});

function loadedWith(c: LoadedConfig, name: string, value: string): LoadedConfig {
  const values = new Map(c.values);
  values.set(name, { value, source: path.join(c.root, 'default.conf') });
  return { ...c, values, get: (n) => values.get(n)?.value };
}

t.test('a directory named *.pub is not a key', async (t) => {
  const dir = t.testdir({ keys: { 'd.pub': {} } });
  t.throws(() => parseSettings(config({ CVMFS_SERVER_URL: 'http://s', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: path.join(dir, 'keys') })), {
    code: 'E_KEY',
  });
});
