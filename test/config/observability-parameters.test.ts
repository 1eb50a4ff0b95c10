/**
 * The logging and metrics parameters: CVMFS_SYSLOG_LEVEL, CVMFS_DEBUGLOG, CVMFS_TS_METRICS_LISTEN
 * (files or -o), parsed like the others: E_USAGE naming the parameter and where it was set.
 */
import t, { type Test } from 'tap';
import type { ConfigValue, LoadedConfig } from '../../src/config/bash-config';
import { COMMAND_LINE_SOURCE } from '../../src/config/bash-config';
import { KNOWN_PARAMETERS, parseSettings } from '../../src/config/parameters';
import { CvmfsError } from '../../src/errors';

const KEYS_DIR = t.testdir({ 'k.pub': 'key' });
const SRC = '/etc/cvmfs/default.local';

function settings(extra: Record<string, string | [string, string]> = {}) {
  const map = new Map<string, ConfigValue>();
  const values = { CVMFS_SERVER_URL: 'http://s1/cvmfs/r.org', CVMFS_HTTP_PROXY: 'DIRECT', CVMFS_KEYS_DIR: KEYS_DIR, ...extra };
  for (const [k, v] of Object.entries(values)) map.set(k, Array.isArray(v) ? { value: v[0], source: v[1] } : { value: v, source: SRC });
  const config: LoadedConfig = { fqrn: 'r.org', root: '/etc/cvmfs', files: [], values: map, get: (n) => map.get(n)?.value };
  return parseSettings(config);
}

function usageError(t: Test, f: () => unknown, pattern: RegExp): void {
  try {
    f();
    t.fail('expected E_USAGE');
  } catch (e) {
    t.ok(CvmfsError.is(e, 'E_USAGE'), 'E_USAGE');
    t.match((e as Error).message, pattern);
  }
}

t.test('defaults: no metrics, no debug log, level 3', async (t) => {
  const s = settings();
  t.equal(s.metricsListen, undefined);
  t.equal(s.debugLog, undefined);
  t.equal(s.syslogLevel, 3);
  for (const p of ['CVMFS_TS_METRICS_LISTEN', 'CVMFS_SYSLOG_LEVEL', 'CVMFS_DEBUGLOG']) t.ok(KNOWN_PARAMETERS.includes(p), `${p} is known (showconfig)`);
});

t.test('CVMFS_TS_METRICS_LISTEN', async (t) => {
  t.same(settings({ CVMFS_TS_METRICS_LISTEN: '127.0.0.1:9102' }).metricsListen, { kind: 'tcp', host: '127.0.0.1', port: 9102 });
  t.same(settings({ CVMFS_TS_METRICS_LISTEN: ' /run/cvmfs-ts/m.sock ' }).metricsListen, { kind: 'unix', path: '/run/cvmfs-ts/m.sock' });
  t.equal(settings({ CVMFS_TS_METRICS_LISTEN: '' }).metricsListen, undefined, 'empty = unset');
  usageError(t, () => settings({ CVMFS_TS_METRICS_LISTEN: ['9102', COMMAND_LINE_SOURCE] }), /^CVMFS_TS_METRICS_LISTEN='9102' on the command line is invalid: expected HOST:PORT/);
  usageError(t, () => settings({ CVMFS_TS_METRICS_LISTEN: 'metrics.sock' }), /in \/etc\/cvmfs\/default\.local is invalid/);
});

t.test('CVMFS_SYSLOG_LEVEL and CVMFS_DEBUGLOG', async (t) => {
  t.equal(settings({ CVMFS_SYSLOG_LEVEL: '1' }).syslogLevel, 1);
  t.equal(settings({ CVMFS_SYSLOG_LEVEL: '2' }).syslogLevel, 2);
  t.equal(settings({ CVMFS_SYSLOG_LEVEL: '3' }).syslogLevel, 3);
  t.equal(settings({ CVMFS_SYSLOG_LEVEL: '7' }).syslogLevel, 3, 'other numbers: the default, as cvmfs');
  t.equal(settings({ CVMFS_SYSLOG_LEVEL: '-1' }).syslogLevel, 3);
  usageError(t, () => settings({ CVMFS_SYSLOG_LEVEL: 'debug' }), /^CVMFS_SYSLOG_LEVEL='debug'/);
  t.equal(settings({ CVMFS_DEBUGLOG: '/tmp/cvmfs//r.log' }).debugLog, '/tmp/cvmfs/r.log');
  usageError(t, () => settings({ CVMFS_DEBUGLOG: 'r.log' }), /^CVMFS_DEBUGLOG='r\.log' .* expected an absolute path/);
});
