/**
 * On-demand mounting with autofs, end to end: a private automount(8) in a private mount namespace
 * (test/helpers/install.ts) reads the installed master map entry (moved from /cvmfs to a temporary
 * directory), runs the installed program map, and mounts through mount(8) and /sbin/mount.cvmfs-ts
 * on first access to DIR/FQRN; an unknown name is ENOENT at once; stopping automount unmounts and
 * the daemon exits. Skipped where autofs is not installed (scripts/setup.sh installs it).
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, readdir, writeFile, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { tempDir, publishFileMap } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { processAlive, writeConfigRoot } from '../helpers/mount';
import { defaultLogFile } from '../../src/cli/mount-command';
import { installNamespace, run, stageInstall, type InstallNamespace } from '../helpers/install';

const FQRN = 'autofs.cvmfs-ts.io';
const TEXT = 'mounted on first access\n';

async function until(what: string, check: () => Promise<boolean> | boolean, ms = 20_000): Promise<void> {
  for (const started = Date.now(); !(await check()); ) {
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const automountInstalled = spawnSync('sh', ['-c', 'command -v automount'], { stdio: 'ignore' }).status === 0;

const SKIP = automountInstalled ? false : 'automount(8) is not installed (apt-get install autofs)';

interface Automount {
  dir: string;
  root: string;
  ns: InstallNamespace;
  log(): Promise<string>;
  /** SIGTERM (as `systemctl stop autofs`); resolves with its exit status. */
  stop(): Promise<number | null>;
}

/**
 * A served repository, its configuration, the staged installation (--autofs) and a private
 * automount running `master(root, stage)` in a namespace where the staging is installed.
 */
async function startAutomount(t: Test, master: (root: string, stage: string) => Promise<string>): Promise<Automount> {
  const dir = await tempDir(t);
  // The map entry names no log= option: the daemon logs to its default file.
  t.teardown(() => rm(defaultLogFile(FQRN), { force: true }));
  const repo = await publishFileMap(t, FQRN, new Map([['hello.txt', Buffer.from(TEXT)]]));
  const server = await serveRepository(t, repo.repoDir);
  const configRoot = await writeConfigRoot(dir, { fqrn: FQRN, serverUrl: server.url, publicKey: repo.pub }, join(dir, 'cache'));
  const stage = join(dir, 'stage');
  await stageInstall(stage, ['--autofs']);
  const root = join(dir, 'cvmfs');
  await mkdir(root);
  const masterFile = join(dir, 'auto.master');
  await writeFile(masterFile, await master(root, stage));

  const ns = await installNamespace(t, stage, { privateRun: true });
  const log = await open(join(dir, 'automount.log'), 'a');
  const automount = spawn('nsenter', ['-t', String(ns.pid), '-m', '--', 'automount', '-f', '-v', '-C', '-p', join(dir, 'automount.pid'), masterFile], {
    env: { ...process.env, CVMFS_TS_CONFIG_ROOT: configRoot },
    stdio: ['ignore', log.fd, log.fd],
    // Its own process group, as a service's: autofs never triggers mounts for automount's group
    // (-f does not leave ours), and this test and its commands must trigger them.
    detached: true,
  });
  await log.close();
  const stopped = new Promise<number | null>((done) => automount.once('exit', (code) => done(code)));
  t.teardown(async () => {
    if (automount.exitCode === null && automount.signalCode === null) automount.kill('SIGKILL');
    await stopped;
  });
  await until('automount to mount its maps', async () => /mounted (in)?direct on/.test(await readFile(join(dir, 'automount.log'), 'utf8')));
  return {
    dir,
    root,
    ns,
    log: () => readFile(join(dir, 'automount.log'), 'utf8'),
    stop: () => {
      automount.kill('SIGTERM');
      return stopped;
    },
  };
}

t.test('autofs mounts /cvmfs/FQRN on first access through the program map and mount.cvmfs-ts', { skip: SKIP }, async (t) => {
  // The installed master map entry, moved from /cvmfs to a directory of the test.
  const { root, ns, log: automountLog, stop } = await startAutomount(t, async (root, stage) =>
    (await readFile(join(stage, 'etc/auto.master.d/cvmfs-ts.autofs'), 'utf8')).replace(/^\/cvmfs /m, `${root} `),
  );
  t.equal(await ns.mountType(root), 'autofs', 'automount owns the root');
  t.equal(await ns.mountType(join(root, FQRN)), undefined, 'nothing mounted before the first access');

  // The first access (a process of the namespace, as a user's would be) waits for the mount, then reads.
  const first = await ns.run(['cat', join(root, FQRN, 'hello.txt')]);
  t.equal(first.stdout, TEXT, 'DIR/FQRN/hello.txt reads right on first access', { stderr: first.stderr, log: await automountLog() });
  t.equal(await ns.mountType(join(root, FQRN)), 'fuse.cvmfs-ts', 'mounted by mount.cvmfs-ts');
  const pid = Number((await getAttribute(ns.path(join(root, FQRN)), 'user.pid'))?.toString() ?? 0);
  t.ok(pid > 0 && processAlive(pid), 'a daemon serves it');
  t.match(await automountLog(), new RegExp(`mounted ${root}/${FQRN.replace(/\./g, '\\.')}`), 'automount logged the mount');

  const unknown = await ns.run(['ls', join(root, 'unknown.example.org')]);
  t.match(unknown.stderr, /No such file or directory/, 'an unknown repository is ENOENT');
  t.same(await readdir(ns.path(root)), [FQRN], 'and leaves nothing behind');
  t.equal(await readFile(ns.path(join(root, FQRN, 'hello.txt')), 'utf8'), TEXT, 'once mounted, it is reachable from here too');

  // Stopping autofs unmounts what it mounted; the daemon notices and exits.
  t.equal(await stop(), 0, 'automount stopped cleanly');
  t.equal(await ns.mountType(join(root, FQRN)), undefined, 'unmounted');
  await until('the daemon to exit', () => !processAlive(pid), 10_000);
  t.pass('the daemon exited');
});

t.test(
  'a direct map (the situation of x-systemd.automount): the trigger is a mount on the mount point itself',
  { skip: SKIP, todo: "fuse-native refuses to mount over it ('Mountpoint in use': the mount point's device differs from its parent's)" },
  async (t) => {
    // The program map's own answer, as a direct map's entry for DIR/FQRN.
    const { root, ns, log, stop } = await startAutomount(t, async (root, stage) => {
      const entry = await run([join(stage, 'usr/libexec/cvmfs-ts/auto.cvmfs-ts'), FQRN], { env: { CVMFS_TS_CONFIG_ROOT: join(root, '..', 'etc-cvmfs') } });
      await writeFile(join(root, '..', 'auto.direct'), `${root}/${FQRN} ${entry.stdout}`);
      return `/- ${join(root, '..', 'auto.direct')}\n`;
    });
    const first = await ns.run(['cat', join(root, FQRN, 'hello.txt')]);
    t.equal(first.stdout, TEXT, 'DIR/FQRN/hello.txt reads right on first access', { stderr: first.stderr, log: await log() });
    t.equal(await stop(), 0, 'automount stopped cleanly');
  },
);
