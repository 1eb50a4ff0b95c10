import t from 'tap';
import { createHash } from 'node:crypto';
import { pathKey, parentPath, ROOT_PARENT_KEY } from '../../src/format/path-key';
import { Prng } from '../helpers/prng';

// §3.5 test vectors: path → MD5 hex → (md5path_1, md5path_2), both signed little-endian int64.
const VECTORS: [string, string, bigint, bigint][] = [
  ['', 'd41d8cd98f00b204e9800998ecf8427e', 338333539836370388n, 9098107892288553193n],
  ['/foo', '1effb2475fcfba4f9e8b8a1dbc8f3caf', 5745132282796244766n, -5819618580357280866n],
  ['/software', '3cdb59a63a3cd12f868155fa9018f956', 3445601412511816508n, 6267067367417020806n],
  ['/software/v1', 'f6c33f6b3a675852aaf9ceca5a2a888c', 5933606009665733622n, -8320353742129006166n],
  ['/.cvmfs', '43ab2a09bda1a8de0efadacca92b9efd', -2402492567927477437n, -171651727507129842n],
];

t.test('§3.5 vectors', async (t) => {
  for (const [path, md5, p1, p2] of VECTORS) {
    t.equal(createHash('md5').update(path).digest('hex'), md5, `MD5(${JSON.stringify(path)})`);
    const key = pathKey(path);
    t.equal(typeof key.md5path1, 'bigint');
    t.equal(key.md5path1, p1, `md5path_1 of ${JSON.stringify(path)}`);
    t.equal(key.md5path2, p2, `md5path_2 of ${JSON.stringify(path)}`);
    // Buffer input gives the same key.
    t.same(pathKey(Buffer.from(path)), key);
  }
});

t.test('signed values: negative halves exist and stay within int64', async (t) => {
  const foo = pathKey('/foo');
  t.ok(foo.md5path1 > 0n);
  t.ok(foo.md5path2 < 0n);
  const cvmfs = pathKey('/.cvmfs');
  t.ok(cvmfs.md5path1 < 0n && cvmfs.md5path2 < 0n);
  const rng = new Prng(3);
  const bad: string[] = [];
  let negatives = 0;
  for (let i = 0; i < 500; i++) {
    const path = '/' + Array.from({ length: 1 + rng.next(20) }, () => String.fromCharCode(97 + rng.next(26))).join('');
    const key = pathKey(path);
    for (const half of [key.md5path1, key.md5path2]) {
      if (half < -(1n << 63n) || half >= 1n << 63n) bad.push(`${path}: ${half} out of int64 range`);
      if (half < 0n) negatives++;
    }
    // Reassembling the two LE halves gives back the MD5 digest.
    const buf = Buffer.alloc(16);
    buf.writeBigInt64LE(key.md5path1, 0);
    buf.writeBigInt64LE(key.md5path2, 8);
    if (buf.toString('hex') !== createHash('md5').update(path).digest('hex')) bad.push(`${path}: halves do not reassemble`);
  }
  t.same(bad, []);
  t.ok(negatives > 300 && negatives < 700, `about half of the halves are negative (${negatives} of 1000)`);
});

t.test('non-ASCII paths hash their UTF-8 bytes', async (t) => {
  const path = '/ünïcødé-名前-файл.txt';
  const md5 = createHash('md5').update(Buffer.from(path, 'utf8')).digest();
  t.same(pathKey(path), { md5path1: md5.readBigInt64LE(0), md5path2: md5.readBigInt64LE(8) });
  t.same(pathKey(Buffer.from(path, 'utf8')), pathKey(path));
});

t.test('root parent key is (0, 0)', async (t) => {
  t.same(ROOT_PARENT_KEY, { md5path1: 0n, md5path2: 0n });
});

t.test('parentPath', async (t) => {
  t.equal(parentPath(''), undefined);
  t.equal(parentPath('/foo'), '');
  t.equal(parentPath('/.cvmfs'), '');
  t.equal(parentPath('/software/v1'), '/software');
  t.equal(parentPath('/software/v1/bin/ls'), '/software/v1/bin');
  t.equal(parentPath('/dir with space/ñandú'), '/dir with space');
  // Walking up from any path reaches the root "" and then stops.
  const chain: string[] = [];
  for (let p: string | undefined = '/a/b/c'; p !== undefined; p = parentPath(p)) chain.push(p);
  t.same(chain, ['/a/b/c', '/a/b', '/a', '']);
  // The parent key of /software/v1 is the key of /software.
  t.same(pathKey(parentPath('/software/v1')!), pathKey('/software'));
});
