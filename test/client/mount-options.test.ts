/**
 * `cvmfs-ts mount` configuration and lifecycle, end to end: -o overrides beat the files (§5.13),
 * ownership claiming and id maps (§5.4), a fixed root catalog (CVMFS_ROOT_HASH, §5.7/§5.8),
 * unmounting by umount(8), fusermount -u and SIGTERM, --foreground, taking over a stale mount,
 * reading as another user (allow_other) and statfs.
 */
import t, { type Test } from 'tap';
import { readFile, writeFile, mkdir, chmod, chown, stat } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { getAttribute, listAttributes } from '@napi-rs/xattr';
import { publish } from '../../src/publish/publisher';
import { keyFiles, loadPublicKeys } from '../../src/publish/keys';
import { Repository } from '../../src/repository/repository';
import { DirectorySource } from '../../src/repository/object-source';
import { tempDir, testKeys, SHARED } from '../helpers/repo';
import { mountRepository, tryMount, writeConfigRoot, type MountSpec } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';
import { BIN } from '../helpers/cli';

const FQRN = 'options.cvmfs.io';
const OWNER = { uid: 1234, gid: 5678 };
const TEXT = 'Hello, CernVM-FS!\n';

const FIXTURE = join(SHARED, 'fixtures', 'real-small');
const FIXTURE_FQRN = 'fixture.cvmfs.io';
const FIXTURE_KEY = join(FIXTURE, 'keys', `${FIXTURE_FQRN}.pub`);
/** `previous_revision` of the fixture's root catalog (revision 4): the root catalog of revision 3. */
const FIXTURE_REVISION_3 = '41acc9813e1a72f550b88d2346c9ac68e9f3778e';

/** A published repository with files of another owner, served in its own process (shared by all tests). */
const shared = (async () => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(join(src, 'owned-dir'), { recursive: true });
  await writeFile(join(src, 'text.txt'), TEXT);
  await writeFile(join(src, 'owned.txt'), 'owned by someone else\n');
  await writeFile(join(src, 'owned-dir', 'inner.txt'), 'inner\n');
  await writeFile(join(src, 'private.txt'), 'for the owner only\n', { mode: 0o600 });
  await chmod(join(src, 'private.txt'), 0o600);
  for (const p of ['owned.txt', 'owned-dir', join('owned-dir', 'inner.txt')]) await chown(join(src, p), OWNER.uid, OWNER.gid);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: false });
  const server = await serveRepository(t, repoDir);
  return { url: server.url, pub: keyFiles(FQRN, keys).masterPublicKey };
})();

async function spec(extra: Partial<MountSpec> = {}): Promise<MountSpec> {
  const s = await shared;
  return { fqrn: FQRN, serverUrl: s.url, publicKey: s.pub, ...extra };
}

/** The mount points of this mount namespace (field 5 of mountinfo, octal escapes undone). */
function mountPoints(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
}

function isMounted(mountpoint: string): boolean {
  return mountPoints().includes(mountpoint);
}

/** Whether `pid` is a live process (a zombie waiting for its reaper counts as gone). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Polls `condition` every 100 ms for up to `ms`; whether it became true. */
async function eventually(condition: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const until = Date.now() + ms;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function refused(t: Test, dir: string, s: MountSpec, pattern: RegExp): Promise<void> {
  const r = await tryMount(t, dir, s);
  t.ok('error' in r, 'mount refused');
  if (!('error' in r)) return;
  t.not(r.error.code, 0, 'non-zero exit');
  const lines = r.error.stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line: ${r.error.stderr}`);
  t.match(lines[0], pattern);
  t.notOk(isMounted(join(dir, 'mnt')), 'nothing mounted');
}

t.test('-o overrides beat the configuration files', async (t) => {
  const dir = await tempDir(t);
  const never = ['CVMFS_MAGIC_XATTRS_VISIBILITY=never', 'CVMFS_QUOTA_LIMIT=50'];

  const plain = await mountRepository(t, join(dir, 'files'), await spec({ config: never }));
  t.notOk((await listAttributes(join(plain.mountpoint, 'text.txt'))).includes('user.hash'), 'files say never: not listed on a file');
  t.notOk((await listAttributes(plain.mountpoint)).includes('user.revision'), '... nor on the root');
  t.match(await plain.xattr('text.txt', 'user.hash'), /^[0-9a-f]{40}$/, 'reading works regardless');
  await plain.unmount();

  const m = await mountRepository(t, join(dir, 'override'), await spec({ config: never, options: 'CVMFS_MAGIC_XATTRS_VISIBILITY=always' }));
  const names = await listAttributes(join(m.mountpoint, 'text.txt'));
  t.ok(names.includes('user.hash'), `-o always: user.hash listed on a regular file (${names.join(' ')})`);
  t.ok((await listAttributes(join(m.mountpoint, 'owned-dir'))).includes('user.fqrn'), '... and on a directory');
  t.equal(await readFile(join(m.mountpoint, 'text.txt'), 'utf8'), TEXT);
  await m.unmount();

  // Several overrides at once, quoting as mount(8) passes it.
  const two = await mountRepository(t, join(dir, 'two'), await spec({ config: never, options: `CVMFS_MAGIC_XATTRS_VISIBILITY='always',CVMFS_QUOTA_LIMIT=100` }));
  t.ok((await listAttributes(join(two.mountpoint, 'text.txt'))).includes('user.hash'));
  const blocks = execFileSync('stat', ['-f', '-c', '%b', two.mountpoint], { encoding: 'utf8' }).trim();
  t.equal(blocks, String((100 * 1024 * 1024) / 512), 'CVMFS_QUOTA_LIMIT from -o (100 MB), not the file (50 MB)');
  await two.unmount();
});

t.test('bad -o overrides refuse the mount with one sentence', async (t) => {
  const dir = await tempDir(t);
  await refused(t, join(dir, 'timeout'), await spec({ options: 'CVMFS_TIMEOUT=soon' }), /CVMFS_TIMEOUT.*command line/);
  await refused(t, join(dir, 'visibility'), await spec({ options: 'CVMFS_MAGIC_XATTRS_VISIBILITY=sometimes' }), /CVMFS_MAGIC_XATTRS_VISIBILITY.*command line/);
  await refused(t, join(dir, 'not-cvmfs'), await spec({ options: 'allow_other' }), /unsupported mount option 'allow_other'/);
  await refused(t, join(dir, 'not-cvmfs-value'), await spec({ options: 'CVMFS_TIMEOUT=3,uid=1000' }), /unsupported mount option 'uid=1000'/);
  // The file's bad value is named with its file, not the command line.
  await refused(t, join(dir, 'in-file'), await spec({ config: ['CVMFS_TIMEOUT_DIRECT=later'] }), /CVMFS_TIMEOUT_DIRECT='later' in \S+\.conf is invalid/);
  // ... and a good -o value repairs it.
  const m = await mountRepository(t, join(dir, 'repaired'), await spec({ config: ['CVMFS_TIMEOUT_DIRECT=later'], options: 'CVMFS_TIMEOUT_DIRECT=4' }));
  t.equal(await m.xattr('', 'user.timeout_direct'), '4');
});

t.test('ownership: claimed by default, catalog ids with CVMFS_CLAIM_OWNERSHIP=no, id maps', async (t) => {
  const dir = await tempDir(t);
  const me = { uid: process.getuid!(), gid: process.getgid!() };

  const claimed = await mountRepository(t, join(dir, 'claimed'), await spec());
  for (const p of ['owned.txt', 'owned-dir', 'owned-dir/inner.txt', 'text.txt']) {
    const s = await stat(join(claimed.mountpoint, p));
    t.same({ uid: s.uid, gid: s.gid }, me, `${p}: the daemon's uid/gid (default CVMFS_CLAIM_OWNERSHIP=yes)`);
  }
  await claimed.unmount();

  const own = await mountRepository(t, join(dir, 'no-claim'), await spec({ config: ['CVMFS_CLAIM_OWNERSHIP=no'] }));
  for (const p of ['owned.txt', 'owned-dir', 'owned-dir/inner.txt']) {
    const s = await stat(join(own.mountpoint, p));
    t.same({ uid: s.uid, gid: s.gid }, OWNER, `${p}: the published owner`);
  }
  const root = await stat(join(own.mountpoint, 'text.txt'));
  t.same({ uid: root.uid, gid: root.gid }, { uid: 0, gid: 0 }, 'a root-owned file stays root-owned');
  await own.unmount();

  const maps = join(dir, 'maps');
  await mkdir(maps);
  await writeFile(join(maps, 'uid.map'), '# published uid -> local uid\n1234 42\n');
  await writeFile(join(maps, 'gid.map'), '* 7\n');
  const mapped = await mountRepository(
    t,
    join(dir, 'mapped'),
    await spec({ config: ['CVMFS_CLAIM_OWNERSHIP=no', `CVMFS_UID_MAP=${join(maps, 'uid.map')}`, `CVMFS_GID_MAP=${join(maps, 'gid.map')}`] }),
  );
  for (const p of ['owned.txt', 'owned-dir', 'owned-dir/inner.txt']) {
    const s = await stat(join(mapped.mountpoint, p));
    t.same({ uid: s.uid, gid: s.gid }, { uid: 42, gid: 7 }, `${p}: uid 1234 → 42, gid * → 7`);
  }
  const unmapped = await stat(join(mapped.mountpoint, 'text.txt'));
  t.same({ uid: unmapped.uid, gid: unmapped.gid }, { uid: 0, gid: 7 }, 'uid 0 is not in the uid map; every gid maps to 7');
  const entries = execFileSync('ls', ['-ln', mapped.mountpoint], { encoding: 'utf8' });
  t.match(entries, /\s42\s+7\s.*owned\.txt/, 'readdir answers the mapped ids too');
  await mapped.unmount();

  await refused(
    t,
    join(dir, 'missing-map'),
    await spec({ config: ['CVMFS_CLAIM_OWNERSHIP=no', `CVMFS_UID_MAP=${join(maps, 'no-such.map')}`] }),
    /cannot read CVMFS_UID_MAP file .*no-such\.map/,
  );
});

t.test('CVMFS_ROOT_HASH mounts an older revision of the real fixture', async (t) => {
  const dir = await tempDir(t);
  const repoDir = join(FIXTURE, 'repo');
  const repo = await Repository.open(new DirectorySource(repoDir), { fqrn: FIXTURE_FQRN, masterKeys: await loadPublicKeys([FIXTURE_KEY]) });
  const previous = (await repo.rootCatalog()).properties().get('previous_revision');
  await repo.close();
  t.equal(previous, FIXTURE_REVISION_3, "the root catalog's previous_revision");
  const server = await serveRepository(t, repoDir);
  const base: MountSpec = { fqrn: FIXTURE_FQRN, serverUrl: server.url, publicKey: FIXTURE_KEY };

  const current = await mountRepository(t, join(dir, 'current'), base);
  t.equal(await current.xattr('', 'user.revision'), '4');
  await t.rejects(stat(join(current.mountpoint, 'to-delete.txt')), { code: 'ENOENT' }, 'revision 4 deleted to-delete.txt');
  t.match(await current.xattr('', 'user.expires'), /^\d+$/, 'a live root catalog expires');
  await current.unmount();

  const old = await mountRepository(t, join(dir, 'revision-3'), { ...base, options: `CVMFS_ROOT_HASH=${previous}` });
  t.equal(await old.xattr('', 'user.revision'), '3');
  t.equal(await old.xattr('', 'user.root_hash'), previous);
  t.equal(await old.xattr('', 'user.expires'), 'never (fixed root catalog)');
  t.ok((await stat(join(old.mountpoint, 'to-delete.txt'))).isFile(), 'to-delete.txt is still there in revision 3');
  t.ok((await stat(join(old.mountpoint, 'to-delete-dir'))).isDirectory(), '... and to-delete-dir/');
  t.ok((await stat(join(old.mountpoint, 'added', 'new.txt'))).isFile(), 'revision 3 additions are there');
  t.equal((await stat(join(old.mountpoint, 'text.txt'))).size, 67, 'text.txt as modified in revision 3');
  t.match(await old.log(), /mounted revision 3 .*\(fixed root hash\)/);
  await old.unmount();

  await refused(t, join(dir, 'bad-hash'), { ...base, options: 'CVMFS_ROOT_HASH=not-a-hash' }, /CVMFS_ROOT_HASH='not-a-hash' on the command line is invalid/);
});

t.test('lifecycle: umount, fusermount -u and SIGTERM stop the daemon', async (t) => {
  const dir = await tempDir(t);
  const stops: [string, (mountpoint: string, pid: number) => void][] = [
    ['umount', (mp) => execFileSync('umount', [mp])],
    ['fusermount -u', (mp) => execFileSync('fusermount', ['-u', mp])],
    ['SIGTERM', (_mp, pid) => process.kill(pid, 'SIGTERM')],
  ];
  for (const [name, stop] of stops) {
    const m = await mountRepository(t, join(dir, name.replace(/\W+/g, '-')), await spec());
    t.ok(running(m.pid), `${name}: daemon ${m.pid} running`);
    t.ok(isMounted(m.mountpoint), `${name}: mounted`);
    stop(m.mountpoint, m.pid);
    t.ok(await eventually(() => !running(m.pid)), `${name}: the daemon exits within 5 s`);
    t.notOk(isMounted(m.mountpoint), `${name}: no longer in mountinfo`);
    t.match(await m.log(), name === 'SIGTERM' ? /unmounting \(SIGTERM\)/ : /unmounting \(mountpoint was unmounted\)/, `${name}: logged`);
  }
});

t.test('--foreground stays attached until SIGTERM, then unmounts and exits 0', async (t) => {
  const dir = await tempDir(t);
  const s = await spec();
  const configRoot = await writeConfigRoot(dir, s, join(dir, 'cache'));
  const mountpoint = join(dir, 'mnt');
  await mkdir(mountpoint);
  const child = spawn(process.execPath, [BIN, 'mount', FQRN, mountpoint, '--foreground', '--config-root', configRoot], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)));
  t.teardown(async () => {
    if (child.exitCode === null) child.kill('SIGKILL');
    spawnSync('fusermount', ['-uz', mountpoint], { stdio: 'ignore' });
  });
  const fqrn = async () => (await getAttribute(mountpoint, 'user.fqrn').catch(() => undefined))?.toString();
  t.ok(await eventually(async () => (await fqrn()) === FQRN || child.exitCode !== null, 30_000), 'user.fqrn readable');
  t.equal(child.exitCode, null, 'still attached once mounted');
  t.equal(Number((await getAttribute(mountpoint, 'user.pid'))!.toString()), child.pid, 'the foreground process serves the mount');
  t.equal(await readFile(join(mountpoint, 'text.txt'), 'utf8'), TEXT);
  t.match(stderr, /cvmfs-ts\[options\.cvmfs\.io\] info: mounted revision 1/, 'logs to stderr');
  child.kill('SIGTERM');
  t.equal(await exited, 0, 'exit status 0');
  t.notOk(isMounted(mountpoint), 'unmounted');
  t.match(stderr, /unmounting \(SIGTERM\)/);
});

t.test('a stale mount of the same mountpoint is taken over', async (t) => {
  const dir = await tempDir(t);
  const first = await mountRepository(t, dir, await spec());
  process.kill(first.pid, 'SIGKILL');
  t.ok(await eventually(() => !running(first.pid)), 'daemon killed');
  // ECONNABORTED while the kernel aborts the connection, ENOTCONN ("Transport endpoint is not connected") after.
  await t.rejects(stat(first.mountpoint), { code: /^(ENOTCONN|ECONNABORTED)$/ }, 'the dead mount fails');
  await t.rejects(stat(first.mountpoint), { code: 'ENOTCONN' }, 'Transport endpoint is not connected');
  t.ok(isMounted(first.mountpoint), 'the dead mount is still in mountinfo');

  const second = await mountRepository(t, dir, await spec());
  t.not(second.pid, first.pid);
  t.equal(await readFile(join(second.mountpoint, 'text.txt'), 'utf8'), TEXT, 'the new mount serves');
  t.equal(mountPoints().filter((p) => p === second.mountpoint).length, 1, 'exactly one mount on the mountpoint');
  await second.unmount();
  t.notOk(isMounted(second.mountpoint), 'unmounted cleanly afterwards');
});

const NOBODY = ['--reuid=65534', '--regid=65534', '--clear-groups'];

function asNobody(...command: string[]) {
  return spawnSync('setpriv', [...NOBODY, ...command], { encoding: 'utf8' });
}

t.test('another user reads the mount (allow_other), subject to permissions', async (t) => {
  const dir = await tempDir(t);
  await chmod(dir, 0o755); // mkdtemp makes it 0700
  await mkdir(join(dir, 'mnt'), { recursive: true });
  const probe = asNobody('test', '-x', join(dir, 'mnt'));
  if (probe.error || probe.status !== 0) {
    t.plan(0, `uid 65534 cannot reach ${dir}/mnt (${probe.error?.message ?? `status ${probe.status}`}): a parent directory is not traversable`);
    return;
  }
  const m = await mountRepository(t, dir, await spec());
  const cat = asNobody('cat', join(m.mountpoint, 'text.txt'));
  t.equal(cat.status, 0, `cat as uid 65534: ${cat.stderr}`);
  t.equal(cat.stdout, TEXT);
  const ls = asNobody('ls', join(m.mountpoint, 'owned-dir'));
  t.equal(ls.stdout, 'inner.txt\n', 'listing as uid 65534');
  const secret = asNobody('cat', join(m.mountpoint, 'private.txt'));
  t.not(secret.status, 0, 'a 0600 file of another owner is refused (CVMFS_CHECK_PERMISSIONS=yes)');
  t.match(secret.stderr, /Permission denied/);
  t.equal(await readFile(join(m.mountpoint, 'private.txt'), 'utf8'), 'for the owner only\n', 'root reads it');
});

t.test('statfs: stat -f and df', async (t) => {
  const dir = await tempDir(t);
  const m = await mountRepository(t, dir, await spec({ config: ['CVMFS_QUOTA_LIMIT=1000'] }));
  const fields = execFileSync('stat', ['-f', '-c', '%S %b %f %a %c', m.mountpoint], { encoding: 'utf8' }).trim().split(' ').map(Number);
  const [bsize, blocks, bfree, bavail, files] = fields as [number, number, number, number, number];
  t.equal(bsize, 512, 'fundamental block size 512');
  t.equal(blocks, (1000 * 1024 * 1024) / 512, 'blocks: the quota limit in 512-byte blocks');
  t.ok(bfree <= blocks && bavail === bfree, `free ${bfree}, available ${bavail}`);
  const counters = await m.xattr('', 'user.repo_counters');
  t.ok(files > 0, `${files} inodes`);
  t.match(counters, /regular/, `repository counters: ${counters.replace(/\n/g, ' ')}`);
  t.match(execFileSync('stat', ['-f', m.mountpoint], { encoding: 'utf8' }), /Type: fuse/, 'stat -f names a FUSE file system');
  const df = execFileSync('df', ['-P', m.mountpoint], { encoding: 'utf8' }).trim().split('\n');
  t.equal(df.length, 2, df.join('\n'));
  t.match(df[1], new RegExp(`^cvmfs2\\s+${blocks / 2}\\s.*\\s${m.mountpoint.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`), 'df shows the mount, its size in KiB');
  t.ok(execFileSync('df', ['-P'], { encoding: 'utf8' }).includes(m.mountpoint), 'df without arguments lists it');
  const inodes = execFileSync('df', ['-i', m.mountpoint], { encoding: 'utf8' });
  t.match(inodes, new RegExp(`\\s${files}\\s`), 'df -i shows the inode count');
});
