import t from 'tap';
import { encodeXattrs, decodeXattrs, type XattrMap } from '../../src/format/xattr-blob';
import { Prng } from '../helpers/prng';

// §3.8 example.
const EXAMPLE_HEX = '0102130473656375726974792e6361706162696c697479010000020803757365722e666f6f626172';

/** Entries as [key, hex value] pairs, in map order, for deep comparison. */
function entries(map: XattrMap): [string, string][] {
  return [...map].map(([k, v]) => [k, v.toString('hex')]);
}

t.test('§3.8 example, bit for bit', async (t) => {
  // Inserted out of order: the blob lists keys ascending.
  const map: XattrMap = new Map([
    ['user.foo', Buffer.from('bar')],
    ['security.capability', Buffer.from([0x01, 0x00, 0x00, 0x02])],
  ]);
  const blob = encodeXattrs(map)!;
  t.equal(blob.toString('hex'), EXAMPLE_HEX);
  const decoded = decodeXattrs(Buffer.from(EXAMPLE_HEX, 'hex'));
  t.same([...decoded.keys()], ['security.capability', 'user.foo']);
  t.equal(decoded.get('security.capability')!.toString('hex'), '01000002');
  t.equal(decoded.get('user.foo')!.toString(), 'bar');
});

t.test('empty map is NULL, NULL is an empty map', async (t) => {
  t.equal(encodeXattrs(new Map()), undefined);
  t.equal(decodeXattrs(null).size, 0);
  t.equal(decodeXattrs(undefined).size, 0);
  t.equal(decodeXattrs(Buffer.alloc(0)).size, 0);
  // A blob with version 1 and count 0 is a valid empty list.
  t.equal(decodeXattrs(Buffer.from([1, 0])).size, 0);
});

t.test('binary values keep bytes >= 0x80', async (t) => {
  // The fixture's user.binary value (README: 00 01 02 fe ff 80 0a).
  const binary = Buffer.from([0x00, 0x01, 0x02, 0xfe, 0xff, 0x80, 0x0a]);
  const map: XattrMap = new Map([
    ['user.color', Buffer.from('blue')],
    ['user.binary', binary],
  ]);
  const blob = encodeXattrs(map)!;
  t.equal(
    blob.toString('hex'),
    '0102' + '0b07' + Buffer.from('user.binary').toString('hex') + binary.toString('hex') + '0a04' + Buffer.from('user.color').toString('hex') + Buffer.from('blue').toString('hex'),
  );
  const back = decodeXattrs(blob);
  t.ok(back.get('user.binary')!.equals(binary));
  t.equal(back.get('user.color')!.toString(), 'blue');
  // Every byte value survives.
  const all = Buffer.from(Array.from({ length: 255 }, (_, i) => i + 1));
  t.ok(decodeXattrs(encodeXattrs(new Map([['user.all', all]])))!.get('user.all')!.equals(all));
});

t.test('keys sort by bytes; non-ASCII keys round trip', async (t) => {
  const map: XattrMap = new Map([
    ['user.zz', Buffer.from('1')],
    ['user.ä', Buffer.from('2')],
    ['user.Z', Buffer.from('3')],
    ['trusted.a', Buffer.alloc(0)],
  ]);
  const back = decodeXattrs(encodeXattrs(map));
  t.same([...back.keys()], ['trusted.a', 'user.Z', 'user.zz', 'user.ä']);
  t.equal(back.get('trusted.a')!.length, 0);
  t.same(entries(back), entries(new Map([...map].sort((a, b) => Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0]))))));
});

t.test('limits: 255 is the most, longer is an error', async (t) => {
  const k255 = 'u'.repeat(255);
  const v255 = Buffer.alloc(255, 0xab);
  const blob = encodeXattrs(new Map([[k255, v255]]))!;
  t.equal(blob.length, 2 + 2 + 255 + 255);
  t.equal(blob[2], 255);
  t.equal(blob[3], 255);
  t.ok(decodeXattrs(blob).get(k255)!.equals(v255));

  t.throws(() => encodeXattrs(new Map([['u'.repeat(256), Buffer.from('x')]])), { code: 'E_FORMAT', name: 'FormatError' });
  t.throws(() => encodeXattrs(new Map([['user.big', Buffer.alloc(256)]])), { code: 'E_FORMAT', name: 'FormatError' });
  // A key whose UTF-8 form exceeds 255 bytes although it has fewer characters.
  t.throws(() => encodeXattrs(new Map([['ä'.repeat(128), Buffer.from('x')]])), { code: 'E_FORMAT' });
  t.throws(() => encodeXattrs(new Map([['', Buffer.from('x')]])), { code: 'E_FORMAT' });
  t.throws(() => encodeXattrs(new Map([['user.a\0b', Buffer.from('x')]])), { code: 'E_FORMAT' });

  const many = (n: number): XattrMap => new Map(Array.from({ length: n }, (_, i) => [`user.k${i}`, Buffer.from([i & 255])]));
  t.equal(decodeXattrs(encodeXattrs(many(255))).size, 255);
  t.throws(() => encodeXattrs(many(256)), { code: 'E_FORMAT' });
});

t.test('malformed blobs read as no attributes', async (t) => {
  const good = Buffer.from(EXAMPLE_HEX, 'hex');
  t.equal(decodeXattrs(good).size, 2);
  const wrongVersion = Buffer.from(good);
  wrongVersion[0] = 2;
  t.equal(decodeXattrs(wrongVersion).size, 0, 'version 2');
  const version0 = Buffer.from(good);
  version0[0] = 0;
  t.equal(decodeXattrs(version0).size, 0, 'version 0');
  t.equal(decodeXattrs(Buffer.from([1])).size, 0, 'only a version byte');
  // Every truncation of the blob overruns somewhere.
  for (let n = 2; n < good.length; n++) {
    t.equal(decodeXattrs(good.subarray(0, n)).size, 0, `truncated to ${n} bytes`);
  }
  // A count larger than the entries present.
  const moreCount = Buffer.from(good);
  moreCount[1] = 3;
  t.equal(decodeXattrs(moreCount).size, 0, 'count 3 with 2 entries');
  // A value length running past the end.
  const longValue = Buffer.from(good);
  longValue[2 + 2 + 19 + 4 + 1] = 200; // value length of user.foo
  t.equal(decodeXattrs(longValue).size, 0, 'value length overrun');
  const longKey = Buffer.from(good);
  longKey[2] = 0xff; // key length of security.capability
  t.equal(decodeXattrs(longKey).size, 0, 'key length overrun');
});

t.test('decodes a view into a larger buffer', async (t) => {
  const blob = Buffer.from(EXAMPLE_HEX, 'hex');
  const big = Buffer.concat([Buffer.from('garbage-before'), blob, Buffer.from('after')]);
  const view = new Uint8Array(big.buffer, big.byteOffset + 14, blob.length);
  const decoded = decodeXattrs(view);
  t.equal(decoded.get('user.foo')!.toString(), 'bar');
  t.equal(decoded.get('security.capability')!.toString('hex'), '01000002');
  // The decoded values are copies, not views into the caller's buffer.
  big.fill(0);
  t.equal(decoded.get('user.foo')!.toString(), 'bar');
});

t.test('randomised round trips', async (t) => {
  const rng = new Prng(20240611);
  let failures = 0;
  for (let round = 0; round < 300; round++) {
    const map: XattrMap = new Map();
    const count = 1 + rng.next(20);
    for (let i = 0; i < count; i++) {
      const keyLength = 1 + rng.next(40);
      const key = Array.from({ length: keyLength }, () => String.fromCharCode(33 + rng.next(94))).join('');
      map.set(key, Buffer.from(rng.fillBytes(new Uint8Array(rng.next(256)))));
    }
    const back = decodeXattrs(encodeXattrs(map));
    const ok =
      back.size === map.size && [...map].every(([k, v]) => back.get(k)?.equals(v) === true);
    if (!ok) failures++;
    // Keys come back in ascending byte order.
    const keys = [...back.keys()];
    const sorted = [...keys].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    if (keys.join('\0') !== sorted.join('\0')) failures++;
  }
  t.equal(failures, 0);
});
