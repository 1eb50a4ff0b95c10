/**
 * The daemon's logs: one line per event naming the repository; CVMFS_SYSLOG_LEVEL sets the priority
 * of ordinary messages as cvmfs does (1 debug, 2 info, 3/unset notice; warnings and errors keep
 * theirs) and stderr, like a `*.info` syslog rule, drops debug priority; CVMFS_DEBUGLOG receives
 * every event including debug ones (HTTP attempts, FUSE calls, catalog loads). Unit tests of the
 * logger, then real mounts (`cvmfs-ts mount`, its own process).
 */
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../../src/client/log';
import { CvmfsError } from '../../src/errors';
import { publishFileMap, tempDir } from '../helpers/repo';
import { mountRepository, tryMount } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';

const FQRN = 'logs.cvmfs.io';
const LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z cvmfs-ts\[logs\.cvmfs\.io\] (debug|info|warning|error): \S/;

function capture(journal = false) {
  const lines: string[] = [];
  const log = createLogger(FQRN, { write: (l) => lines.push(l), journal });
  return { log, lines };
}

t.test('CVMFS_SYSLOG_LEVEL: which lines reach stderr, at which priority', async (t) => {
  const emitAll = (log: ReturnType<typeof capture>['log']) => {
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
  };
  const unset = capture();
  emitAll(unset.log);
  t.same(
    unset.lines.map((l) => l.replace(/^\S+ /, '')),
    [`cvmfs-ts[${FQRN}] info: i\n`, `cvmfs-ts[${FQRN}] warning: w\n`, `cvmfs-ts[${FQRN}] error: e\n`],
    'default (3): ordinary messages, warnings and errors; no debug',
  );
  for (const l of unset.lines) t.match(l, LINE);
  t.notOk(unset.log.debugEnabled);

  const quiet = capture();
  quiet.log.configure({ syslogLevel: 1 });
  emitAll(quiet.log);
  t.same(quiet.lines.map((l) => l.split(' ')[2]), ['warning:', 'error:'], '1: ordinary messages become debug priority and are dropped');

  for (const [level, priority] of [
    [1, undefined],
    [2, '<6>'],
    [3, '<5>'],
  ] as const) {
    const j = capture(true);
    j.log.configure({ syslogLevel: level });
    emitAll(j.log);
    const prefixes = j.lines.map((l) => /^<\d>/.exec(l)?.[0]);
    t.same(prefixes, priority ? [priority, '<4>', '<3>'] : ['<4>', '<3>'], `journald priorities with level ${level}`);
  }

  const multi = capture();
  multi.log.error('first\nsecond');
  t.equal(multi.lines.length, 1);
  t.match(multi.lines[0], /error: first\\nsecond\n$/, 'one event, one line');
});

t.test('CVMFS_DEBUGLOG receives every event', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'debug.log');
  const { log, lines } = capture();
  log.configure({ syslogLevel: 1, debugLog: file });
  t.ok(log.debugEnabled);
  log.debug('a debug line');
  log.info('an ordinary line');
  log.warn('a warning');
  log.close();
  log.debug('after close: nowhere');
  const text = await readFile(file, 'utf8');
  t.same(
    text.split('\n').filter(Boolean).map((l) => l.replace(/^\S+ /, '')),
    [`cvmfs-ts[${FQRN}] debug: a debug line`, `cvmfs-ts[${FQRN}] info: an ordinary line`, `cvmfs-ts[${FQRN}] warning: a warning`],
  );
  t.equal(lines.length, 1, 'only the warning on stderr (level 1)');
  let error: unknown;
  try {
    capture().log.configure({ syslogLevel: 3, debugLog: join(dir, 'no', 'such', 'dir.log') });
  } catch (e) {
    error = e;
  }
  t.ok(CvmfsError.is(error, 'E_IO'), 'a debug log that cannot be opened is E_IO');
});

t.test('a mount with CVMFS_DEBUGLOG and CVMFS_SYSLOG_LEVEL', async (t) => {
  const files = new Map([
    ['hello.txt', Buffer.from('hello\n')],
    ['dir/other.txt', Buffer.from('other\n'.repeat(100))],
  ]);
  const fx = await publishFileMap(t, FQRN, files);
  const server = await serveRepository(t, fx.repoDir);
  const dir = await tempDir(t);
  const debugLog = join(dir, 'debug-@fqrn@.log');
  const m = await mountRepository(t, join(dir, 'quiet'), {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: fx.pub,
    config: [`CVMFS_DEBUGLOG=${debugLog}`, 'CVMFS_SYSLOG_LEVEL=1'],
  });
  t.equal(await readFile(join(m.mountpoint, 'hello.txt'), 'utf8'), 'hello\n');
  await readFile(join(m.mountpoint, 'no-such-file')).catch(() => undefined);
  const debug = await readFile(join(dir, `debug-${FQRN}.log`), 'utf8');
  const lines = debug.split('\n').filter(Boolean);
  for (const l of lines) t.match(l, LINE, 'every line: time, repository, level');
  t.ok(lines.some((l) => / debug: download http:\/\/127\.0\.0\.1:\d+\S*\/data\/\S+: ok, \d+ bytes in /.test(l)), 'HTTP attempts');
  t.ok(lines.some((l) => / debug: loading catalog \/ /.test(l)), 'catalog loads');
  t.ok(lines.some((l) => / debug: fuse open \/hello\.txt \(/.test(l)), 'FUSE calls');
  t.ok(lines.some((l) => / debug: fuse getattr \/no-such-file: ENOENT/.test(l)), 'FUSE errors with their errno');
  t.ok(lines.some((l) => / info: mounted revision 1 /.test(l)), 'ordinary messages too');
  t.notMatch(await m.log(), /mounted revision/, 'CVMFS_SYSLOG_LEVEL=1: ordinary messages are not on stderr');
  t.notMatch(await m.log(), / debug: /, 'debug lines never are');

  // Level 2: ordinary messages on stderr again; no debug file, so no debug lines anywhere.
  const loud = await mountRepository(t, join(dir, 'loud'), { fqrn: FQRN, serverUrl: server.url, publicKey: fx.pub, config: ['CVMFS_SYSLOG_LEVEL=2'] });
  await readFile(join(loud.mountpoint, 'hello.txt'));
  t.match(await loud.log(), new RegExp(`cvmfs-ts\\[${FQRN.replace(/\./g, '\\.')}\\] info: mounted revision 1 `));
  t.notMatch(await loud.log(), / debug: /);

  // A debug log that cannot be opened fails the mount (cvmfs aborts as well).
  const bad = await tryMount(t, join(dir, 'bad'), {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: fx.pub,
    config: [`CVMFS_DEBUGLOG=${join(dir, 'missing', 'x.log')}`],
  });
  t.ok('error' in bad, 'mount refused');
  if ('error' in bad) t.match(bad.error.stderr, /cannot open CVMFS_DEBUGLOG file .*missing\/x\.log/);
});
