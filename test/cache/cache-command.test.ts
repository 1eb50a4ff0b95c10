/**
 * `cvmfs-ts cache size|list|evict|pin|unpin|wipe|rebuild` on the cache directory of a running mount:
 * paths resolved through the cached catalogs (nested ones too, chunked files as all their chunks), the
 * daemon's pins respected, and the mount still reading right afterwards.
 */
import t from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, readDirect } from '../helpers/mount';
import { writeNestedTree } from '../helpers/trees';
import { serveRepository } from '../helpers/serve';
import { runCli } from '../helpers/cli';

const FQRN = 'cachecmd.cvmfs.io';

t.test('cache commands on a mounted repository’s cache', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeNestedTree(src);
  const big = pseudoRandomBytes(3 * 1024 * 1024, 77);
  await writeFile(join(src, 'big.bin'), big);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: { min: 256 * 1024, avg: 512 * 1024, max: 1024 * 1024 } });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: ['CVMFS_QUOTA_LIMIT=20', 'CVMFS_SHARED_CACHE=no'],
  });
  const cacheDir = join(m.cacheBase, FQRN);
  const byDir = ['--cache-dir', cacheDir];
  const byConfig = [FQRN, '--config-root', m.configRoot];
  const cli = (...args: string[]) => runCli(['cache', ...args]);
  const objectFile = (hash: string) => join(cacheDir, hash.slice(0, 2), hash.slice(2));

  for (const p of ['a.txt', 'dir/b.txt', 'nested/c.txt', 'big.bin']) await readFile(join(m.mountpoint, p));
  const hashA = await m.xattr('a.txt', 'user.hash');
  const hashC = await m.xattr('nested/c.txt', 'user.hash');
  const rootHash = await m.xattr('', 'user.root_hash');
  const bigChunks = Number(await m.xattr('big.bin', 'user.chunks'));
  t.ok(bigChunks > 2, `big.bin has ${bigChunks} chunks`);
  await new Promise((r) => setTimeout(r, 1500)); // the daemon's batched touches and pins reach the ledger

  // size: by directory (limit as the daemon recorded it) and by configuration.
  for (const where of [byDir, byConfig]) {
    const r = await cli('size', ...where);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, /^Current cache size is \d+MB \(\d+ Bytes\), pinned: \d+MB \(\d+ Bytes\), limit: 20MB, objects: \d+\n$/);
  }
  const sizeJson = JSON.parse((await cli('size', ...byDir, '--json')).stdout) as { bytes: number; objects: number; limitBytes: number };
  t.ok(sizeJson.bytes >= big.length && sizeJson.objects >= 4 + bigChunks, `${sizeJson.objects} objects, ${sizeJson.bytes} bytes`);

  // list: LRU order, catalogs held by the daemon.
  const list = await cli('list', ...byDir);
  t.equal(list.code, 0, list.stderr);
  const lines = list.stdout.trim().split('\n');
  t.equal(lines.length, sizeJson.objects);
  t.ok(lines.some((l) => l.startsWith(`${hashA} 7 regular - a.txt`) || l.startsWith(`${hashA} 7 regular - /a.txt`)), 'a.txt listed');
  const catalogs = (await cli('list', ...byDir, '--catalogs')).stdout.trim().split('\n');
  t.equal(catalogs.length, 2, 'root and nested catalog');
  t.ok(catalogs.every((l) => l.includes(`held:${m.pid}`) && l.includes(' catalog ')), 'both held by the daemon');
  t.ok(catalogs.some((l) => l.startsWith(rootHash)));

  // evict by path: a file, a file in a nested catalog, a chunked file; the mount reads them again.
  let r = await cli('evict', '/a.txt', ...byConfig);
  t.equal(r.stdout, 'evicted /a.txt (1 object(s))\n', r.stderr);
  t.notOk(existsSync(objectFile(hashA)));
  r = await cli('evict', 'nested/c.txt', ...byDir);
  t.equal(r.stdout, 'evicted /nested/c.txt (1 object(s))\n', r.stderr);
  t.notOk(existsSync(objectFile(hashC)));
  r = await cli('evict', '/big.bin', ...byDir);
  t.equal(r.stdout, `evicted /big.bin (${bigChunks} object(s))\n`, r.stderr);
  r = await cli('evict', '/a.txt', ...byDir);
  t.equal(r.stdout, '/a.txt is not in the cache\n');
  t.equal((await readDirect(join(m.mountpoint, 'nested', 'c.txt'))).toString(), 'file c in a nested catalog\n', 'evicted file reads again');
  t.ok(existsSync(objectFile(hashC)), '... downloaded again');
  t.ok((await readDirect(join(m.mountpoint, 'big.bin'))).equals(big));

  // The daemon's catalogs cannot be evicted; paths that are no regular file are refused.
  r = await cli('evict', rootHash, ...byDir);
  t.equal(r.code, 2);
  t.match(r.stderr, /pinned/);
  r = await cli('evict', '/dir', ...byDir);
  t.equal(r.code, 2);
  t.match(r.stderr, /not a regular file/);
  r = await cli('evict', '/no/such/file', ...byDir);
  t.equal(r.code, 1);
  t.match(r.stderr, /no such entry/);

  // pin survives wipe; the daemon's catalogs too (with a warning); unpin lets wipe take it.
  await readDirect(join(m.mountpoint, 'a.txt'));
  r = await cli('pin', '/a.txt', ...byDir);
  t.equal(r.stdout, 'pinned /a.txt (1 object(s))\n', r.stderr);
  t.match((await cli('list', ...byDir, '--pinned')).stdout, new RegExp(`^${hashA} 7 regular pinned `, 'm'));
  r = await cli('wipe', ...byDir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^removed \d+ object\(s\) \(\d+MB\); kept 3 pinned object\(s\)/);
  t.match(r.stderr, new RegExp(`running mounts \\(pid ${m.pid}\\)`));
  t.ok(existsSync(objectFile(hashA)) && existsSync(objectFile(rootHash)), 'pinned and held objects kept');
  t.notOk(existsSync(objectFile(hashC)));
  r = await cli('unpin', '/a.txt', ...byDir);
  t.equal(r.stdout, 'unpinned /a.txt (1 object(s))\n');
  await cli('wipe', ...byDir);
  t.notOk(existsSync(objectFile(hashA)));
  t.equal((await readDirect(join(m.mountpoint, 'a.txt'))).toString(), 'file a\n', 'the mount reads on after a wipe');
  t.ok(existsSync(objectFile(hashA)), '... downloading it again');

  r = await cli('rebuild', ...byDir);
  t.match(r.stdout, /^reconciled .*: \d+ file\(s\), 0 added, 0 missing, 0 damaged removed\n$/);

  // Usage errors.
  r = await cli('size');
  t.equal(r.code, 2);
  t.match(r.stderr, /name a repository \(FQRN\) or give --cache-dir/);
  r = await cli('size', '--cache-dir', join(dir, 'nowhere'));
  t.equal(r.code, 2);
  t.match(r.stderr, /not a cvmfs cache directory/);
  r = await cli('pin', '0000000000000000000000000000000000000000', ...byDir);
  t.equal(r.code, 1);
  t.match(r.stderr, /not in the cache/);
});
