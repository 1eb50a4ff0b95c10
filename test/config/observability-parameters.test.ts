/**
 * The logging and metrics parameters: CVMFS_SYSLOG_LEVEL, CVMFS_DEBUGLOG, CVMFS_TS_METRICS_LISTEN
 * (files or -o), parsed like the others: E_USAGE naming the parameter and where it was set.
 */
import t from 'tap';
import { COMMAND_LINE_SOURCE } from '../../src/config/bash-config';
import { KNOWN_PARAMETERS } from '../../src/config/parameters';
import { expectUsageError, settingsWith } from '../helpers/settings';

t.test('defaults: no metrics, no debug log, level 3', async (t) => {
  const s = settingsWith();
  t.equal(s.metricsListen, undefined);
  t.equal(s.debugLog, undefined);
  t.equal(s.syslogLevel, 3);
  for (const p of ['CVMFS_TS_METRICS_LISTEN', 'CVMFS_SYSLOG_LEVEL', 'CVMFS_DEBUGLOG']) t.ok(KNOWN_PARAMETERS.includes(p), `${p} is known (showconfig)`);
});

t.test('CVMFS_TS_METRICS_LISTEN', async (t) => {
  t.same(settingsWith({ CVMFS_TS_METRICS_LISTEN: '127.0.0.1:9102' }).metricsListen, { kind: 'tcp', host: '127.0.0.1', port: 9102 });
  t.same(settingsWith({ CVMFS_TS_METRICS_LISTEN: ' /run/cvmfs-ts/m.sock ' }).metricsListen, { kind: 'unix', path: '/run/cvmfs-ts/m.sock' });
  t.equal(settingsWith({ CVMFS_TS_METRICS_LISTEN: '' }).metricsListen, undefined, 'empty = unset');
  expectUsageError(t, () => settingsWith({ CVMFS_TS_METRICS_LISTEN: ['9102', COMMAND_LINE_SOURCE] }), /^CVMFS_TS_METRICS_LISTEN='9102' on the command line is invalid: expected HOST:PORT/);
  expectUsageError(t, () => settingsWith({ CVMFS_TS_METRICS_LISTEN: 'metrics.sock' }), /in \/etc\/cvmfs\/default\.local is invalid/);
});

t.test('CVMFS_SYSLOG_LEVEL and CVMFS_DEBUGLOG', async (t) => {
  t.equal(settingsWith({ CVMFS_SYSLOG_LEVEL: '1' }).syslogLevel, 1);
  t.equal(settingsWith({ CVMFS_SYSLOG_LEVEL: '2' }).syslogLevel, 2);
  t.equal(settingsWith({ CVMFS_SYSLOG_LEVEL: '3' }).syslogLevel, 3);
  t.equal(settingsWith({ CVMFS_SYSLOG_LEVEL: '7' }).syslogLevel, 3, 'other numbers: the default, as cvmfs');
  t.equal(settingsWith({ CVMFS_SYSLOG_LEVEL: '-1' }).syslogLevel, 3);
  expectUsageError(t, () => settingsWith({ CVMFS_SYSLOG_LEVEL: 'debug' }), /^CVMFS_SYSLOG_LEVEL='debug'/);
  t.equal(settingsWith({ CVMFS_DEBUGLOG: '/tmp/cvmfs//r.log' }).debugLog, '/tmp/cvmfs/r.log');
  expectUsageError(t, () => settingsWith({ CVMFS_DEBUGLOG: 'r.log' }), /^CVMFS_DEBUGLOG='r\.log' .* expected an absolute path/);
});
