/**
 * Fuzzing the catalog xattr blob (§3.8): decodeXattrs never throws (a malformed blob reads as "no
 * attributes"), re-encoding what it decoded is stable, canonical blobs round-trip byte for byte, and
 * encodeXattrs on random maps either encodes (and decodes back to the same map) or throws a FormatError.
 */
import t from 'tap';
import { decodeXattrs, encodeXattrs, type XattrMap } from '../../src/format/xattr-blob';
import { FormatError } from '../../src/errors';
import { check, FuzzFailure, fuzzConfig, fuzzLoop, mutate, show, Tally, type Rng } from '../helpers/fuzz';

const cfg = fuzzConfig(60); // generous: CI runs two test files at once on two cores

const SAMPLES: XattrMap[] = [
  new Map([['user.color', Buffer.from('blue')], ['user.binary', Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80, 0x0a])]]),
  new Map([['user.a', Buffer.alloc(0)]]),
  new Map([['security.selinux', Buffer.from('system_u:object_r:usr_t:s0\0')], ['user.\u540d', Buffer.alloc(255, 7)]]),
  new Map(Array.from({ length: 40 }, (_, i) => [`user.k${String(i).padStart(3, '0')}`, Buffer.from(`v${i}`)] as [string, Buffer])),
];
const BLOBS = SAMPLES.map((m) => encodeXattrs(m)!);

/** Independent check that a blob is exactly what encodeXattrs writes for some map. */
function canonical(blob: Buffer): boolean {
  if (blob.length < 2 || blob[0] !== 1 || blob[1] === 0) return false;
  let pos = 2;
  let prev: Buffer | undefined;
  for (let i = 0; i < blob[1]!; i++) {
    if (pos + 2 > blob.length) return false;
    const kl = blob[pos]!;
    const vl = blob[pos + 1]!;
    pos += 2;
    if (pos + kl + vl > blob.length) return false;
    const key = blob.subarray(pos, pos + kl);
    if (kl === 0 || key.includes(0)) return false;
    if (!Buffer.from(key.toString()).equals(key)) return false; // not valid UTF-8: the key string is lossy
    if (prev && Buffer.compare(prev, key) >= 0) return false; // ascending, no duplicates
    prev = key;
    pos += kl + vl;
  }
  return pos === blob.length;
}

function sameMap(a: XattrMap, b: XattrMap): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) {
    const w = b.get(k);
    if (!w || !w.equals(v)) return false;
  }
  return true;
}

function decodeNoThrow(blob: Uint8Array | null | undefined, what: string): XattrMap {
  try {
    return decodeXattrs(blob);
  } catch (e) {
    throw new FuzzFailure(`decodeXattrs threw on ${what}: ${String(e)}`);
  }
}

function blobMutant(rng: Rng): Buffer {
  switch (rng.int(6)) {
    case 0: // a random small blob with a plausible header
      return Buffer.concat([Buffer.from([1, rng.int(256)]), rng.bytes(rng.int(64))]);
    case 1: // a structurally valid blob with random keys and values (often canonical once sorted)
      return Buffer.concat([
        Buffer.from([1, 0]).fill(rng.int(4), 1),
        ...Array.from({ length: rng.int(4) }, () => {
          const k = rng.bytes(rng.int(12));
          const v = rng.bytes(rng.int(12));
          return Buffer.concat([Buffer.from([k.length, v.length]), k, v]);
        }),
      ]);
    default:
      return mutate(rng, rng.pick(BLOBS), { others: BLOBS });
  }
}

const decodeTally = new Tally();
fuzzLoop(t, cfg, 'xattr/decode', (rng) => {
  const blob = blobMutant(rng);
  const what = show(blob);
  // Also through a view at an odd offset of a larger buffer, as SQLite hands out blobs.
  const host = Buffer.alloc(blob.length + 3);
  blob.copy(host, 3);
  const view = new Uint8Array(host.buffer, host.byteOffset + 3, blob.length);
  const map = decodeNoThrow(blob, what);
  check(sameMap(map, decodeNoThrow(view, `${what} (view)`)), `decoding a view differs: ${what}`);
  for (const [k, v] of map) check(typeof k === 'string' && Buffer.isBuffer(v) && v.length <= 255, `odd entry ${k}: ${what}`);
  const isCanonical = canonical(blob);
  decodeTally.add(map.size === 0 ? 'empty' : isCanonical ? 'canonical' : 'lenient');
  if (map.size === 0) {
    check(!isCanonical, `a canonical blob decoded to nothing: ${what}`);
    return;
  }
  let again: Buffer | undefined;
  try {
    again = encodeXattrs(map);
  } catch (e) {
    // What the decoder is lenient about (an empty or NUL key) the encoder refuses, with a FormatError.
    check(e instanceof FormatError, `encodeXattrs(decodeXattrs(blob)) threw ${String(e)}: ${what}`);
    check(!isCanonical, `a canonical blob does not re-encode: ${what}`);
    return;
  }
  check(again !== undefined, `non-empty map encoded to nothing: ${what}`);
  check(sameMap(decodeNoThrow(again, 're-encoded'), map), `decode(encode(decode(blob))) differs: ${what}`);
  if (isCanonical) check(again.equals(blob), `canonical blob does not round-trip: ${what}`);
});
t.comment(`decode outcomes: ${decodeTally}`);

const KEY_CHARS = ['a', 'z', '.', 'user.', 'security.', '\0', '\u00e9', '\u540d', '\ud83d\ude00', '\ud800', '\udfff', ' ', '/', '\n'];

function randomKey(rng: Rng): string {
  switch (rng.weighted([[1, 0], [1, 1], [1, 2], [6, 3], [40, 4]])) {
    case 0:
      return '';
    case 1:
      return 'k'.repeat(rng.pick([254, 255, 256, 300]));
    case 2:
      return '\u540d'.repeat(rng.range(84, 86)); // 3 bytes each: around the 255-byte limit
    case 3:
      return Array.from({ length: rng.range(1, 8) }, () => rng.pick(KEY_CHARS)).join('');
    default:
      return `user.${rng.bytes(rng.range(1, 6)).toString('hex')}`;
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

const encodeTally = new Tally();
fuzzLoop(t, cfg, 'xattr/encode', (rng) => {
  const map: XattrMap = new Map();
  const size = rng.weighted([[6, rng.int(6)], [2, rng.int(40)], [1, rng.range(250, 300)]]);
  for (let i = 0; i < size; i++) {
    const vlen = rng.weighted([[8, rng.int(16)], [1, rng.range(250, 260)]]);
    map.set(randomKey(rng), rng.bytes(vlen));
  }
  const what = `map of ${map.size} keys ${JSON.stringify([...map.keys()].slice(0, 8))}`;
  let blob: Buffer | undefined;
  try {
    blob = encodeXattrs(map);
  } catch (e) {
    check(e instanceof FormatError, `encodeXattrs threw ${String(e)} on ${what}`);
    encodeTally.add('E_FORMAT');
    return;
  }
  encodeTally.add(blob === undefined ? 'empty' : 'ok');
  if (map.size === 0) {
    check(blob === undefined, `an empty map encoded to bytes`);
    return;
  }
  check(blob !== undefined, `${what} encoded to nothing`);
  check(canonical(blob) || [...map.keys()].some((k) => LONE_SURROGATE.test(k)), `encoder output is not canonical: ${what}`);
  const back = decodeNoThrow(blob, what);
  // Keys with lone surrogates are not representable in UTF-8 and come back as U+FFFD.
  if (![...map.keys()].some((k) => LONE_SURROGATE.test(k))) check(sameMap(back, map), `decode(encode(map)) differs: ${what}`);
});
t.comment(`encode outcomes: ${encodeTally}`);
