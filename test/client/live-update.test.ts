/**
 * Live revision updates (§5.11): a revision published while mounted becomes visible without a
 * remount once the TTL runs out; CVMFS_AUTO_UPDATE=no pins the revision.
 *
 * Not asserted (known limitation): "a file already open keeps reading the bytes it opened". Our
 * handle does keep the old content, but fuse-native's path-based API gives a path one kernel
 * inode for as long as it is open, so old and new opens share its page cache; fixing it needs
 * per-open FOPEN_DIRECT_IO/KEEP_CACHE from a patched binding (see README, failure modes).
 */
import t, { type Test } from 'tap';
import { readFile, writeFile, mkdir, rm, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';

const FQRN = 'live.cvmfs.io';
const TTL_S = 2;

async function setUp(t: Test, config: string[]) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'changing.txt'), 'revision one\n');
  await writeFile(join(src, 'removed.txt'), 'gone in revision two\n');
  await writeFile(join(src, 'sub', 'kept.txt'), 'unchanged\n');
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: ['CVMFS_KCACHE_TIMEOUT=1', ...config],
  });
  const publishRevision2 = async () => {
    await writeFile(join(src, 'changing.txt'), 'revision two, longer than before\n');
    await writeFile(join(src, 'added.txt'), 'new in revision two\n');
    await rm(join(src, 'removed.txt'));
    await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
  };
  return { m, publishRevision2 };
}

async function waitForRevision(m: TestMount, revision: string, withinMs: number): Promise<boolean> {
  for (const end = Date.now() + withinMs; Date.now() < end; ) {
    if ((await m.xattr('', 'user.revision')) === revision) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

t.test('a new revision appears without remount', async (t) => {
  const { m, publishRevision2 } = await setUp(t, []);
  t.equal(await m.xattr('', 'user.revision'), '1');
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision one\n');
  await publishRevision2();
  t.ok(await waitForRevision(m, '2', 15_000), 'revision 2 mounted within the TTL plus the check');
  // The kernel may hold entries for CVMFS_KCACHE_TIMEOUT (1 s here).
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision two, longer than before\n', 'new opens see new bytes');
  t.equal(await readFile(join(m.mountpoint, 'added.txt'), 'utf8'), 'new in revision two\n', 'new files appear');
  t.notOk((await readdir(m.mountpoint)).includes('removed.txt'), 'deleted files disappear');
  await t.rejects(readFile(join(m.mountpoint, 'removed.txt')), { code: 'ENOENT' });
  t.equal(await readFile(join(m.mountpoint, 'sub', 'kept.txt'), 'utf8'), 'unchanged\n');
  t.match(await m.log(), /revision 1 → 2/);
});

t.test('CVMFS_AUTO_UPDATE=no pins the revision', async (t) => {
  const { m, publishRevision2 } = await setUp(t, ['CVMFS_AUTO_UPDATE=no']);
  await publishRevision2();
  t.notOk(await waitForRevision(m, '2', (TTL_S + 3) * 1000), 'still revision 1 after the TTL');
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision one\n');
});
