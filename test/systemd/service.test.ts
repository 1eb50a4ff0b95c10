/**
 * The units' commands run by hand, as systemd would run them (systemd is not PID 1 here): the
 * Exec lines are read from systemd/*.service, with /cvmfs and the programs' paths moved into a
 * temporary directory, and a stand-in notification socket ($NOTIFY_SOCKET) checks the Type=notify
 * protocol — READY=1 once the mount or socket is usable, sent as the main process (the pid systemd
 * started), STOPPING=1 on SIGTERM (KillSignal), then exit 0 with everything unmounted.
 * ExecStartPre cleans a stale mount left by a killed daemon and leaves a live one alone.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, readdir, mkdir, stat, open } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir, publishFileMap } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { writeConfigRoot } from '../helpers/mount';
import { BIN } from '../helpers/cli';
import { CHECKOUT, run } from '../helpers/install';
import { startNotifySocket, type NotifySocket } from '../helpers/notify-socket';
import { isMountpoint } from '../../src/system/mounts';
import { SystemdNotifier } from '../../src/system/sd-notify';

const FQRN = 'service.cvmfs-ts.io';
const TEXT = 'served by a systemd unit\n';

/**
 * The Exec lines (`key`) of a unit file, split into words as systemd does (quotes group; our lines
 * use no escapes), with `subst` applied to each line first: %i, /cvmfs, the install paths.
 */
async function execLines(unit: string, key: string, subst: [string | RegExp, string][]): Promise<string[][]> {
  const text = await readFile(join(CHECKOUT, 'systemd', unit), 'utf8');
  const lines: string[][] = [];
  for (const raw of text.split('\n')) {
    if (!raw.startsWith(`${key}=`)) continue;
    let line = raw.slice(key.length + 1);
    for (const [from, to] of subst) line = line.split(from).join(to);
    const words: string[] = [];
    for (const m of line.matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)) words.push(m[1] ?? m[2] ?? m[3]!);
    lines.push(words);
  }
  return lines;
}

/** Runs Exec*Pre/Post lines in order; systemd fails the unit on a non-zero status (no '-' prefix here). */
async function runAll(t: Test, lines: string[][], what: string): Promise<void> {
  for (const argv of lines) {
    const r = await run(argv);
    t.equal(r.code, 0, `${what}: ${argv.join(' ')}`, { stderr: r.stderr });
  }
}

interface Started {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** ExecStart as systemd runs it: its own process (the main pid), NOTIFY_SOCKET set, output to a log. */
async function execStart(t: Test, argv: string[], env: NodeJS.ProcessEnv, logFile: string): Promise<Started> {
  const log = await open(logFile, 'a');
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', log.fd, log.fd] });
  await log.close();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.once('exit', (code, signal) => done({ code, signal })));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  });
  return { child, exited };
}

async function waitReady(t: Test, notify: NotifySocket, main: Started, logFile: string): Promise<void> {
  const ready = await Promise.race([
    notify.waitFor((m) => m.fields.READY === '1' && m.pid === main.child.pid),
    main.exited.then(async (e) => {
      throw new Error(`the service exited (${e.code ?? e.signal}) before READY=1:\n${await readFile(logFile, 'utf8')}`);
    }),
  ]);
  t.ok(ready, `READY=1 from the main process (pid ${main.child.pid}), as systemd requires`);
}

t.test('cvmfs-ts@.service: start, stale mount after a crash, restart, stop', async (t) => {
  const dir = await tempDir(t);
  const repo = await publishFileMap(t, FQRN, new Map([['hello.txt', Buffer.from(TEXT)]]));
  const server = await serveRepository(t, repo.repoDir);
  const configRoot = await writeConfigRoot(dir, { fqrn: FQRN, serverUrl: server.url, publicKey: repo.pub }, join(dir, 'cache'));
  const cvmfs = join(dir, 'cvmfs');
  await mkdir(cvmfs);
  const mountpoint = join(cvmfs, FQRN);
  const subst: [string | RegExp, string][] = [
    ['%i', FQRN],
    ['/usr/bin/cvmfs-ts', BIN],
    ['/cvmfs/', `${cvmfs}/`],
  ];
  const unit = 'cvmfs-ts@.service';
  const pre = await execLines(unit, 'ExecStartPre', subst);
  const [start] = await execLines(unit, 'ExecStart', subst);
  const post = await execLines(unit, 'ExecStopPost', subst);
  t.same(start, [BIN, 'mount', FQRN, mountpoint, '--foreground'], 'ExecStart is the foreground daemon');
  t.same(post, [pre[0]], 'ExecStopPost is the stale-mount cleanup of ExecStartPre (tested on a stale mount below)');
  const notify = await startNotifySocket(t, dir);
  const env = { NOTIFY_SOCKET: notify.path, CVMFS_TS_CONFIG_ROOT: configRoot };
  const logFile = join(dir, 'service.log');
  t.teardown(() => run(['umount', '-l', mountpoint]));

  // First start: the mount point does not exist yet.
  await runAll(t, pre, 'ExecStartPre');
  t.ok((await stat(mountpoint)).isDirectory(), 'ExecStartPre made the mount point');
  let main = await execStart(t, start!, env, logFile);
  await waitReady(t, notify, main, logFile);
  t.equal(await readFile(join(mountpoint, 'hello.txt'), 'utf8'), TEXT, 'mounted once READY=1 came');
  t.match(notify.messages().find((m) => m.fields.READY === '1')!.fields.STATUS, new RegExp(`serving ${FQRN.replace(/\./g, '\\.')}`), 'STATUS for systemctl status');
  await runAll(t, pre, 'ExecStartPre on a live mount');
  t.equal(await readFile(join(mountpoint, 'hello.txt'), 'utf8'), TEXT, 'the stale-mount cleanup leaves a live mount alone');

  // A crash: the kernel keeps the mount, which answers ENOTCONN. Restart=on-failure runs
  // ExecStopPost, then ExecStartPre and ExecStart again.
  main.child.kill('SIGKILL');
  await main.exited;
  // (A listing: stat could still be answered from the kernel's attribute cache.)
  await t.rejects(readdir(mountpoint), { code: 'ENOTCONN' }, 'a killed daemon leaves a stale mount');
  await runAll(t, post, 'ExecStopPost after the crash');
  t.notOk(await isMountpoint(mountpoint), 'ExecStopPost detached the stale mount');
  await runAll(t, pre, 'ExecStartPre after the crash');
  main = await execStart(t, start!, env, logFile);
  await waitReady(t, notify, main, logFile);
  t.equal(await readFile(join(mountpoint, 'hello.txt'), 'utf8'), TEXT, 'mounted again after the restart');

  // systemctl stop: KillSignal=SIGTERM to the main process.
  main.child.kill('SIGTERM');
  const stopping = await notify.waitFor((m) => m.fields.STOPPING === '1' && m.pid === main.child.pid);
  t.ok(stopping, 'STOPPING=1 from the main process');
  const exit = await main.exited;
  t.same(exit, { code: 0, signal: null }, 'exit status 0: a clean stop, no restart');
  t.notOk(await isMountpoint(mountpoint), 'unmounted');
  await runAll(t, post, 'ExecStopPost after a clean stop');
  t.ok((await stat(mountpoint)).isDirectory(), 'the empty mount point stays');
});

t.test('cvmfs-ts-snapshotter.service: READY=1 once the socket listens, STOPPING=1 and exit 0 on SIGTERM', async (t) => {
  const dir = await tempDir(t, 'snap-');
  const runDir = join(dir, 'run');
  const unit = 'cvmfs-ts-snapshotter.service';
  const [start] = await execLines(unit, 'ExecStart', [
    ['/usr/bin/cvmfs-ts', BIN],
    ['/run/cvmfs-ts/', `${runDir}/`],
    ['/var/lib/cvmfs-ts/', `${dir}/state/`],
    [' $CVMFS_TS_SNAPSHOTTER_ARGS', ` --cvmfs-root ${dir}/cvmfs`], // EnvironmentFile= words; none by default
  ]);
  await mkdir(runDir); // RuntimeDirectory=cvmfs-ts
  await mkdir(join(dir, 'cvmfs'));
  const notify = await startNotifySocket(t, dir);
  const logFile = join(dir, 'snapshotter.log');
  const main = await execStart(t, start!, { NOTIFY_SOCKET: notify.path }, logFile);
  await waitReady(t, notify, main, logFile);
  t.ok(existsSync(join(runDir, 'snapshotter.sock')), 'the socket exists when READY=1 comes');
  main.child.kill('SIGTERM');
  t.ok(await notify.waitFor((m) => m.fields.STOPPING === '1' && m.pid === main.child.pid), 'STOPPING=1 from the main process');
  t.same(await main.exited, { code: 0, signal: null }, 'exit status 0');
});

t.test('SystemdNotifier: takes NOTIFY_SOCKET out of the environment, one line per field, errors', async (t) => {
  const dir = await tempDir(t);
  const notify = await startNotifySocket(t, dir);
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: notify.path, OTHER: 'x' };
  const n = SystemdNotifier.fromEnvironment(env)!;
  t.same(env, { OTHER: 'x' }, 'children started from here on do not inherit the socket');
  t.equal(SystemdNotifier.fromEnvironment(env), undefined, 'no socket, no notifier (not started by systemd)');
  await n.status('line one\nline two');
  t.same(notify.messages().at(-1), { pid: process.pid, fields: { STATUS: 'line one line two' } }, 'a newline cannot smuggle in another field; sent as this process');
  const missing = SystemdNotifier.fromEnvironment({ NOTIFY_SOCKET: join(dir, 'nothing-here.sock') })!;
  await t.rejects(missing.ready('x'), { code: 'E_UNAVAILABLE', message: /systemd-notify .*failed/ }, 'a socket that is not there is an error to log');
  const noCommand = SystemdNotifier.fromEnvironment({ NOTIFY_SOCKET: notify.path }, join(dir, 'no-such-command'))!;
  await t.rejects(noCommand.ready('x'), { code: 'E_UNAVAILABLE', message: /cannot run/ });
});
