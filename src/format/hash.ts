/**
 * Content hash algorithms and their textual forms (facts sheet §2.1).
 * A hash prints as lowercase hex plus an algorithm id (`-rmd160`, `-shake128`; none for SHA-1),
 * optionally followed by a one-letter object suffix (§1.7).
 */
import { createHash, type Hash } from 'node:crypto';
import { FormatError } from '../errors';

/** Enum order of the C++ code; also the basis of the catalog flag bits (§3.4). */
export enum HashAlgorithm {
  Md5 = 0,
  Sha1 = 1,
  Rmd160 = 2,
  Shake128 = 3,
}

interface AlgorithmInfo {
  readonly name: string; // configuration name
  readonly id: string; // appended to the hex string
  readonly bytes: number;
  readonly create: () => Hash;
}

const ALGORITHMS: Record<HashAlgorithm, AlgorithmInfo> = {
  [HashAlgorithm.Md5]: { name: 'md5', id: '', bytes: 16, create: () => createHash('md5') },
  [HashAlgorithm.Sha1]: { name: 'sha1', id: '', bytes: 20, create: () => createHash('sha1') },
  [HashAlgorithm.Rmd160]: { name: 'rmd160', id: '-rmd160', bytes: 20, create: () => createHash('ripemd160') },
  [HashAlgorithm.Shake128]: {
    name: 'shake128',
    id: '-shake128',
    bytes: 20,
    create: () => createHash('shake128', { outputLength: 20 }),
  },
};

/** Object suffix letters (§1.7). The empty string is a plain file object. */
export type ObjectSuffix = '' | 'C' | 'P' | 'X' | 'H' | 'M' | 'L';
const SUFFIXES = new Set(['C', 'P', 'X', 'H', 'M', 'L']);

export function algorithmInfo(algorithm: HashAlgorithm): AlgorithmInfo {
  return ALGORITHMS[algorithm];
}

export function parseAlgorithmName(name: string): HashAlgorithm {
  for (const [key, info] of Object.entries(ALGORITHMS)) {
    if (info.name === name && Number(key) !== HashAlgorithm.Md5) return Number(key) as HashAlgorithm;
  }
  throw new FormatError(`unknown hash algorithm '${name}' (expected sha1, rmd160 or shake128)`);
}

export function newHasher(algorithm: HashAlgorithm): Hash {
  return ALGORITHMS[algorithm].create();
}

/** An immutable digest together with its algorithm. */
export class ContentHash {
  private constructor(
    readonly algorithm: HashAlgorithm,
    readonly digest: Buffer,
  ) {}

  static of(algorithm: HashAlgorithm, digest: Uint8Array): ContentHash {
    const info = ALGORITHMS[algorithm];
    if (digest.length !== info.bytes) {
      throw new FormatError(`a ${info.name} digest has ${info.bytes} bytes, got ${digest.length}`);
    }
    return new ContentHash(algorithm, Buffer.from(digest));
  }

  /** Hash of a whole buffer. */
  static compute(algorithm: HashAlgorithm, data: Uint8Array | string): ContentHash {
    return new ContentHash(algorithm, newHasher(algorithm).update(data).digest());
  }

  /** Parses `hex[-algo]`, also accepting one trailing suffix letter when `allowSuffix` is set. */
  static parse(text: string, allowSuffix = false): ContentHash {
    return ContentHash.parseWithSuffix(text, allowSuffix).hash;
  }

  static parseWithSuffix(text: string, allowSuffix = true): { hash: ContentHash; suffix: ObjectSuffix } {
    let body = text;
    let suffix: ObjectSuffix = '';
    const last = text.slice(-1);
    if (allowSuffix && SUFFIXES.has(last) && !/^[0-9a-f]{32}$/.test(text)) {
      body = text.slice(0, -1);
      suffix = last as ObjectSuffix;
    }
    const algorithm = algorithmOfHexLength(body);
    const hex = body.slice(0, 2 * ALGORITHMS[algorithm].bytes);
    if (!/^[0-9a-f]+$/.test(hex) || body !== hex + ALGORITHMS[algorithm].id) {
      throw new FormatError(`'${text}' is not a content hash`);
    }
    return { hash: new ContentHash(algorithm, Buffer.from(hex, 'hex')), suffix };
  }

  /** Hex plus algorithm id, no suffix: the form used in manifests and catalogs' `sha1` columns. */
  toString(): string {
    return this.digest.toString('hex') + ALGORITHMS[this.algorithm].id;
  }

  withSuffix(suffix: ObjectSuffix): string {
    return this.toString() + suffix;
  }

  /** OpenSSL-style fingerprint: upper-case bytes joined by ':' plus upper-cased algorithm id (§1.5.1). */
  toFingerprint(): string {
    const bytes = [...this.digest].map((b) => b.toString(16).padStart(2, '0').toUpperCase()).join(':');
    return bytes + ALGORITHMS[this.algorithm].id.toUpperCase();
  }

  equals(other: ContentHash): boolean {
    return this.algorithm === other.algorithm && this.digest.equals(other.digest);
  }
}

/** Algorithm deduced from the length of `hex[-algo]` (32 MD5, 40 SHA-1, 47 RIPEMD-160, 49 SHAKE-128). */
export function algorithmOfHexLength(text: string): HashAlgorithm {
  switch (text.length) {
    case 32:
      return HashAlgorithm.Md5;
    case 40:
      return HashAlgorithm.Sha1;
    case 40 + ALGORITHMS[HashAlgorithm.Rmd160].id.length:
      return HashAlgorithm.Rmd160;
    case 40 + ALGORITHMS[HashAlgorithm.Shake128].id.length:
      return HashAlgorithm.Shake128;
    default:
      throw new FormatError(`'${text}' has no hash length`);
  }
}

/** Parses a whitelist/blacklist fingerprint line; undefined when it is not one (§1.5.1). */
export function parseFingerprint(line: string): ContentHash | undefined {
  const cut = line.search(/[ \t#]/);
  const text = (cut < 0 ? line : line.slice(0, cut)).toLowerCase().replaceAll(':', '');
  try {
    const hash = ContentHash.parse(text);
    return hash.algorithm === HashAlgorithm.Md5 ? undefined : hash;
  } catch {
    return undefined;
  }
}
