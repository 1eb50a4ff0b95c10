/**
 * The catalog `xattr` blob (§3.8): version 1, a count byte, then (key length, value length, key,
 * value) with one-byte lengths, keys ascending. No attributes → SQL NULL.
 */
import { FormatError } from '../errors';

export type XattrMap = Map<string, Buffer>;

const VERSION = 1;
const MAX_COUNT = 255;
const MAX_LENGTH = 255;

/** Serializes; undefined for an empty map (stored as NULL). Limits are checked, never wrapped. */
export function encodeXattrs(xattrs: XattrMap): Buffer | undefined {
  if (xattrs.size === 0) return undefined;
  if (xattrs.size > MAX_COUNT) throw new FormatError(`${xattrs.size} extended attributes (at most ${MAX_COUNT})`);
  const keys = [...xattrs.keys()].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  const parts: Buffer[] = [Buffer.from([VERSION, keys.length])];
  for (const key of keys) {
    const k = Buffer.from(key);
    const v = xattrs.get(key)!;
    if (k.length === 0 || k.length > MAX_LENGTH || k.includes(0)) {
      throw new FormatError(`extended attribute name '${key}' is empty, too long or contains NUL`);
    }
    if (v.length > MAX_LENGTH) {
      throw new FormatError(`extended attribute '${key}' has ${v.length} bytes (at most ${MAX_LENGTH})`);
    }
    parts.push(Buffer.from([k.length, v.length]), k, v);
  }
  return Buffer.concat(parts);
}

/** Deserializes; like the C++ reader, a malformed blob means "no attributes". */
export function decodeXattrs(blob: Uint8Array | null | undefined): XattrMap {
  const result: XattrMap = new Map();
  if (!blob || blob.length < 2 || blob[0] !== VERSION) return result;
  const buf = Buffer.from(blob.buffer, blob.byteOffset, blob.byteLength);
  let pos = 2;
  for (let i = 0; i < buf[1]!; i++) {
    if (pos + 2 > buf.length) return new Map();
    const kl = buf[pos]!;
    const vl = buf[pos + 1]!;
    pos += 2;
    if (pos + kl + vl > buf.length) return new Map();
    result.set(buf.subarray(pos, pos + kl).toString(), Buffer.from(buf.subarray(pos + kl, pos + kl + vl)));
    pos += kl + vl;
  }
  return result;
}
