/**
 * End to end: publish a tree with every entry kind, serve it over HTTP, mount it with
 * `cvmfs-ts mount` (its own process), and compare the mount with the source.
 */
import t from 'tap';
import { readFile, open, writeFile, readdir, stat, lstat, readlink, mkdir } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { getAttribute, listAttributes } from '@napi-rs/xattr';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { writeRichTree, SMALL_CHUNKS } from '../helpers/trees';
import { tempDir, testKeys, sourceListing } from '../helpers/repo';
import { mountRepository } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';

const FQRN = 'mount.cvmfs.io';
const BIG = 100 * 1024 * 1024;

t.test('a mounted repository reads back as its source', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeRichTree(src);
  await mkdir(join(src, 'big'));
  await writeFile(join(src, 'big', '.cvmfscatalog'), '');
  await writeFile(join(src, 'big', 'random-100M.bin'), pseudoRandomBytes(BIG, 5));
  execFileSync('touch', ['-h', '-d', '@1600000000', join(src, 'big', 'random-100M.bin'), join(src, 'big', '.cvmfscatalog'), join(src, 'big'), src]);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: { min: 1 << 20, avg: 2 << 20, max: 4 << 20 } });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: ['CVMFS_MAGIC_XATTRS_VISIBILITY=rootonly'],
  });

  t.equal(await m.xattr('', 'user.fqrn'), FQRN);
  t.equal(await m.xattr('', 'user.revision'), '1');
  t.equal(await m.xattr('', 'user.nclg'), '1', 'only the root catalog is loaded after mount');
  await stat(join(m.mountpoint, 'nested')); // a mountpoint's own stat needs no nested catalog
  t.equal(await m.xattr('', 'user.nclg'), '1', 'stat of a nested mountpoint loads nothing');
  await readdir(join(m.mountpoint, 'nested'));
  t.equal(await m.xattr('', 'user.nclg'), '2', 'listing the nested catalog loads it');

  // The whole tree, as the reference tool prints it, equals the source (variant symlink expanded).
  const expected = sourceListing(src).replace('"target": "$(TEST_VAR:-text.txt)"', '"target": "text.txt"');
  const actual = sourceListing(m.mountpoint);
  const withoutMarker = (s: string) => s.split('\n').filter((l) => !l.includes('by-dirtab/a/.cvmfscatalog')).join('\n');
  t.equal(withoutMarker(actual), expected, 'treelist.py on the mount equals the source');

  // Details treelist does not show.
  t.equal(await readlink(join(m.mountpoint, 'link-variant')), 'text.txt');
  // user.rawlink cannot be read through the kernel on a symlink (Linux answers user.* xattrs of
  // symlinks with ENODATA itself), as with the C++ client; the raw target is the catalog's.
  const a = await stat(join(m.mountpoint, 'hardlinks', 'original.txt'));
  const b = await stat(join(m.mountpoint, 'hardlinks', 'second-name.txt'));
  t.equal(a.ino, b.ino, 'hardlinks share an inode');
  t.equal(a.nlink, 2);
  t.not((await stat(join(m.mountpoint, 'hardlinks', 'not-a-link.txt'))).ino, a.ino);
  t.equal((await stat(join(m.mountpoint, 'text.txt'))).ino, (await stat(join(m.mountpoint, 'text.txt'))).ino, 'inode stable');
  t.equal((await lstat(join(m.mountpoint, 'special', 'null-like'))).rdev, (1 << 8) | 3);
  t.same((await listAttributes(join(m.mountpoint, 'xattr.txt'))).sort(), ['user.binary', 'user.color']);
  t.equal((await getAttribute(join(m.mountpoint, 'xattr.txt'), 'user.binary'))!.toString('hex'), '000102feff800a');
  t.ok((await listAttributes(m.mountpoint)).includes('user.revision'), 'magic xattrs listed on the root');
  t.notOk((await listAttributes(join(m.mountpoint, 'text.txt'))).includes('user.hash'), '... and only there (rootonly)');
  t.match(await m.xattr('text.txt', 'user.hash'), /^[0-9a-f]{40}$/);
  t.equal(await m.xattr('text.txt', 'user.chunks'), '1');
  t.equal(await m.xattr('text.txt', 'user.compression'), 'zlib');
  t.match(await m.xattr('', 'user.host'), /^http:\/\/127\.0\.0\.1:/);
  t.equal(await m.xattr('', 'user.proxy'), 'DIRECT');
  for (const name of ['user.root_hash', 'user.pid', 'user.uptime', 'user.expires', 'user.version', 'user.ndownload', 'user.nopen', 'user.rx', 'user.speed', 'user.hitrate', 'user.host_list']) {
    t.not(await m.xattr('', name), '', `${name} answers`);
  }

  // The 100 MB chunked file: whole, and at random offsets across chunk boundaries.
  const bigPath = join(m.mountpoint, 'big', 'random-100M.bin');
  const chunks = Number(await m.xattr('big/random-100M.bin', 'user.chunks'));
  t.ok(chunks > 20, `${chunks} chunks`);
  const source = await readFile(join(src, 'big', 'random-100M.bin'));
  const fh = await open(bigPath, 'r');
  try {
    const list = (await m.xattr('big/random-100M.bin', 'user.chunk_list')).trim().split('\n').slice(1).map((l) => Number(l.split(',')[1]));
    let ok = 0;
    for (let i = 0; i < 40; i++) {
      const boundary = list[1 + (i % (list.length - 1))]!;
      const offset = Math.max(0, boundary - 1000 + ((i * 7919) % 2000));
      const length = 1 + ((i * 104729) % 300_000);
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (buf.subarray(0, bytesRead).equals(source.subarray(offset, offset + length))) ok++;
    }
    t.equal(ok, 40, 'random reads across chunk boundaries match');
  } finally {
    await fh.close();
  }
  t.ok((await readFile(bigPath)).equals(source), '100 MB read whole matches');

  // Read-only.
  await t.rejects(writeFile(join(m.mountpoint, 'new.txt'), 'x'), { code: 'EROFS' });
  await t.rejects(writeFile(join(m.mountpoint, 'text.txt'), 'x'), { code: 'EROFS' });
  await t.rejects(mkdir(join(m.mountpoint, 'newdir')), { code: 'EROFS' });
  await t.rejects(stat(join(m.mountpoint, 'no-such-file')), { code: 'ENOENT' });

  // statfs works (overlayfs needs it) and mount options are those of a system file system.
  const df = execFileSync('df', ['-P', m.mountpoint], { encoding: 'utf8' });
  t.match(df, /cvmfs2/);
  const line = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.includes(` ${m.mountpoint} `))!;
  t.match(line, /\bro\b/);
  t.match(line, /nosuid/);
  t.match(line, /nodev/);
  t.match(line, /allow_other/);

  // Cached objects are served without the network afterwards.
  const before = server.requests().length;
  t.ok((await readFile(bigPath)).equals(source));
  await readdir(join(m.mountpoint, 'nested'));
  t.equal(server.requests().length, before, 'no HTTP request for cached content');
});

t.test('16 parallel readers of one cold file cause one download', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(src);
  const content = pseudoRandomBytes(3 << 20, 9);
  await writeFile(join(src, 'shared.bin'), content);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: false });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, { fqrn: FQRN, serverUrl: server.url, publicKey: keyFiles(FQRN, keys).masterPublicKey });
  const hash = await m.xattr('shared.bin', 'user.hash');
  const readers = Array.from({ length: 16 }, () => readFile(join(m.mountpoint, 'shared.bin')));
  const results = await Promise.all(readers);
  t.ok(results.every((r) => r.equals(content)), 'all 16 read the right bytes');
  const objectRequests = server.requests().filter((l) => l.includes(`/data/${hash.slice(0, 2)}/${hash.slice(2)}`));
  t.equal(objectRequests.length, 1, 'exactly one request for the object');
});
