/**
 * mount(8) with the installed helper, for real: `mount -t cvmfs-ts FQRN DIR`, an fstab line
 * (`mount --fstab FILE DIR`), `umount DIR` (and the daemon noticing and exiting), against a published
 * repository served in its own process. scripts/install.sh is staged and overlaid in a private
 * mount namespace (test/helpers/install.ts), so mount(8) finds /sbin/mount.cvmfs-ts there and the
 * mounts stay in that namespace; the test reads them through /proc/PID/root.
 */
import t, { type Test } from 'tap';
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { tempDir, publishFileMap, type PublishedFiles } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { writeConfigRoot } from '../helpers/mount';
import { installNamespace, stageInstall, type InstallNamespace } from '../helpers/install';

const FQRN = 'helper.cvmfs-ts.io';
const FILES = new Map<string, Buffer>([
  ['hello.txt', Buffer.from('Hello through mount(8)!\n')],
  ['dir/inner.txt', Buffer.from('inner\n'.repeat(1000))],
]);

interface Fixture {
  repo: PublishedFiles;
  url: string;
  ns: InstallNamespace;
  dir: string;
}

let fixture: Promise<Fixture> | undefined;

/** One repository, server and namespace for every test (mount points differ). */
function setUp(): Promise<Fixture> {
  return (fixture ??= (async () => {
    const repo = await publishFileMap(t, FQRN, FILES);
    const server = await serveRepository(t, repo.repoDir);
    const dir = await tempDir(t);
    await stageInstall(join(dir, 'stage'));
    const ns = await installNamespace(t, join(dir, 'stage'));
    return { repo, url: server.url, ns, dir };
  })());
}

async function config(t: Test, fx: Fixture): Promise<{ root: string; mountpoint: string; log: string }> {
  const dir = await tempDir(t);
  const root = await writeConfigRoot(dir, { fqrn: FQRN, serverUrl: fx.url, publicKey: fx.repo.pub }, join(dir, 'cache'));
  const mountpoint = join(dir, 'mnt');
  await mkdir(mountpoint);
  return { root, mountpoint, log: join(dir, 'mount.log') };
}

/** The daemon's pid (user.pid) seen through the namespace, 0 if not mounted. */
async function daemonPid(ns: InstallNamespace, mountpoint: string): Promise<number> {
  return getAttribute(ns.path(mountpoint), 'user.pid').then((v) => Number(v?.toString() ?? 0), () => 0);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function exits(pid: number, ms = 10_000): Promise<boolean> {
  for (let waited = 0; alive(pid) && waited < ms; waited += 100) await new Promise((r) => setTimeout(r, 100));
  return !alive(pid);
}

/** The repository's files read through the namespace's mount. */
async function checkFiles(t: Test, ns: InstallNamespace, mountpoint: string): Promise<void> {
  for (const [rel, data] of FILES) t.same(await readFile(ns.path(join(mountpoint, rel))), data, `${rel} reads right`);
}

/** umount(8) as a user would; the daemon notices (mountinfo) and exits. */
async function umountAndWait(t: Test, ns: InstallNamespace, mountpoint: string, pid: number): Promise<void> {
  const r = await ns.run(['umount', mountpoint]);
  t.equal(r.code, 0, `umount ${mountpoint}`, { stderr: r.stderr });
  t.equal(await ns.mountType(mountpoint), undefined, 'no longer mounted');
  t.ok(await exits(pid), 'the daemon exited after umount');
}

t.test('mount -t cvmfs-ts FQRN DIR, with the configuration root from the environment; umount', async (t) => {
  const fx = await setUp();
  const c = await config(t, fx);
  const r = await fx.ns.run(['mount', '-t', 'cvmfs-ts', FQRN, c.mountpoint, '-o', `CVMFS_KCACHE_TIMEOUT=5,log=${c.log}`], {
    env: { CVMFS_TS_CONFIG_ROOT: c.root },
  });
  t.equal(r.code, 0, 'mount -t cvmfs-ts exits 0', { stderr: r.stderr, log: await readFile(c.log, 'utf8').catch(() => '') });
  t.equal(await fx.ns.mountType(c.mountpoint), 'fuse.cvmfs-ts', 'mounted in the namespace');
  const pid = await daemonPid(fx.ns, c.mountpoint);
  t.ok(pid > 0, 'a daemon serves it');
  t.equal(await getAttribute(fx.ns.path(c.mountpoint), 'user.fqrn').then(String), FQRN);
  t.equal((await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').includes(`CVMFS_TS_CONFIG_ROOT=${c.root}`), true, 'CVMFS_TS_CONFIG_ROOT reached the daemon through mount(8)');
  t.match(await readFile(c.log, 'utf8'), /mounted revision/, 'log= chose the log file');
  await checkFiles(t, fx.ns, c.mountpoint);
  await umountAndWait(t, fx.ns, c.mountpoint, pid);
});

t.test('an fstab line: FQRN DIR cvmfs-ts defaults,_netdev,nodev,config_root=… 0 0', async (t) => {
  const fx = await setUp();
  const c = await config(t, fx);
  const fstab = join(await tempDir(t), 'fstab');
  await writeFile(fstab, `# private fstab for the test\n${FQRN} ${c.mountpoint} cvmfs-ts defaults,_netdev,nodev,config_root=${c.root},log=${c.log} 0 0\n`);
  // No CVMFS_TS_CONFIG_ROOT in the environment: the line names the configuration.
  const r = await fx.ns.run(['mount', '--fstab', fstab, c.mountpoint], { env: { CVMFS_TS_CONFIG_ROOT: '' } });
  t.equal(r.code, 0, 'mount --fstab exits 0', { stderr: r.stderr, log: await readFile(c.log, 'utf8').catch(() => '') });
  t.equal(await fx.ns.mountType(c.mountpoint), 'fuse.cvmfs-ts', 'mounted');
  const pid = await daemonPid(fx.ns, c.mountpoint);
  await checkFiles(t, fx.ns, c.mountpoint);
  // A remount (mount -o remount, as after editing fstab) changes nothing and starts no second daemon.
  const again = await fx.ns.run(['mount', '--fstab', fstab, '-o', 'remount', c.mountpoint]);
  t.equal(again.code, 0, 'remount by the fstab line is accepted', { stderr: again.stderr });
  t.equal(await daemonPid(fx.ns, c.mountpoint), pid, 'still the same daemon');
  await umountAndWait(t, fx.ns, c.mountpoint, pid);
});

t.test('failures come back through mount(8) as one sentence and status 32', async (t) => {
  const fx = await setUp();
  const c = await config(t, fx);
  const r = await fx.ns.run(['mount', '-t', 'cvmfs-ts', 'unknown.cvmfs-ts.io', c.mountpoint, '-o', `log=${c.log}`], { env: { CVMFS_TS_CONFIG_ROOT: c.root } });
  t.equal(r.code, 32, 'mount failure');
  t.match(r.stderr, /mount\.cvmfs-ts: .*unknown\.cvmfs-ts\.io/, 'the helper says why, naming the repository');
  t.equal(await fx.ns.mountType(c.mountpoint), undefined, 'nothing mounted');
  const bad = await fx.ns.run(['mount', '-t', 'cvmfs-ts', FQRN, c.mountpoint, '-o', 'noexec'], { env: { CVMFS_TS_CONFIG_ROOT: c.root } });
  t.equal(bad.code, 1, 'an option we cannot honour is an incorrect invocation');
  t.match(bad.stderr, /unsupported mount option 'noexec'/);
});
