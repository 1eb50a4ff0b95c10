import t from 'tap';
import { ContentHash, HashAlgorithm, parseFingerprint } from '../../src/format/hash';
import { objectPath, cachePath } from '../../src/format/object-name';

const ZLIB_EMPTY = Buffer.from('789c030000000001', 'hex');

t.test('zlib("") object name (§9)', async (t) => {
  const h = ContentHash.compute(HashAlgorithm.Sha1, ZLIB_EMPTY);
  t.equal(h.toString(), 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78');
  t.equal(objectPath(h), 'data/e8/ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78');
  t.equal(objectPath(h, 'C'), 'data/e8/ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78C');
  t.equal(cachePath(h), 'e8/ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78');
});

t.test('algorithm ids and parsing', async (t) => {
  const r = ContentHash.compute(HashAlgorithm.Rmd160, '');
  t.equal(r.toString(), '9c1185a5c5e9fc54612808977ee8f548b2258d31-rmd160');
  const s = ContentHash.compute(HashAlgorithm.Shake128, '');
  t.equal(s.toString(), '7f9c2ba4e88f827d616045507605853ed73b8093-shake128');
  t.equal(objectPath(r, 'P'), 'data/9c/1185a5c5e9fc54612808977ee8f548b2258d31-rmd160P');
  for (const h of [r, s, ContentHash.compute(HashAlgorithm.Sha1, 'x')]) {
    t.ok(ContentHash.parse(h.toString()).equals(h));
    const p = ContentHash.parseWithSuffix(h.withSuffix('C'));
    t.ok(p.hash.equals(h));
    t.equal(p.suffix, 'C');
  }
  t.throws(() => ContentHash.parse('zz'), { code: 'E_FORMAT' });
  t.throws(() => ContentHash.parse('e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b7g'), { code: 'E_FORMAT' });
});

t.test('fingerprints', async (t) => {
  const h = ContentHash.compute(HashAlgorithm.Sha1, 'abc');
  const fp = h.toFingerprint();
  t.match(fp, /^([0-9A-F]{2}:){19}[0-9A-F]{2}$/);
  t.ok(parseFingerprint(fp)?.equals(h));
  t.ok(parseFingerprint(fp + ' # comment')?.equals(h));
  const r = ContentHash.compute(HashAlgorithm.Rmd160, 'abc');
  t.match(r.toFingerprint(), /-RMD160$/);
  t.ok(parseFingerprint(r.toFingerprint())?.equals(r));
  t.equal(parseFingerprint('not a fingerprint'), undefined);
});
