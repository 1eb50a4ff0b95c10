/**
 * OCI content digests (`sha256:<64 hex>`) and the verifying stream every blob read goes through.
 *
 * Only sha256 is accepted: it is what every registry and tool in our path writes, and the layer paths
 * in a repository (§8.1) are named by the sha256 hex. A digest we cannot verify is not trusted.
 */
import { createHash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { CvmfsError, FormatError, HashMismatchError } from '../errors';

/** `sha256:` followed by 64 lowercase hex digits. */
export type Digest = `sha256:${string}`;

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export function isDigest(s: unknown): s is Digest {
  return typeof s === 'string' && DIGEST.test(s);
}

/** Checks `s` is a sha256 digest; `where` names it in the error. */
export function parseDigest(s: unknown, where: string): Digest {
  if (!isDigest(s)) throw new FormatError(`${where}: ${JSON.stringify(s)} is not a sha256 digest`);
  return s;
}

/** The 64 hex digits of a digest. */
export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

export function sha256Digest(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Where a blob's bytes are expected to hash: digest plus exact size when known. */
export interface BlobExpectation {
  readonly digest: Digest;
  /** Exact byte count; a longer stream fails as soon as it overruns. Undefined = not checked. */
  readonly size?: number;
}

/**
 * A pass-through that hashes what flows and fails instead of ending when the bytes do not match
 * (digest or size). Because the error replaces the end of the stream, a consumer that commits only
 * after `end`/`finish` never commits corrupt content. `what` names the blob in errors.
 */
export class VerifyingStream extends Transform {
  private readonly hash = createHash('sha256');
  private count = 0;

  constructor(
    private readonly expected: BlobExpectation,
    private readonly what: string,
  ) {
    super();
  }

  /** Bytes seen so far. */
  get bytes(): number {
    return this.count;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.count += chunk.length;
    const size = this.expected.size;
    if (size !== undefined && this.count > size) {
      done(new CvmfsError('E_HASH_MISMATCH', `${this.what}: more than the expected ${size} bytes`));
      return;
    }
    this.hash.update(chunk);
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    const size = this.expected.size;
    if (size !== undefined && this.count !== size) {
      done(new CvmfsError('E_HASH_MISMATCH', `${this.what}: ${this.count} bytes, expected ${size}`));
      return;
    }
    const actual: Digest = `sha256:${this.hash.digest('hex')}`;
    if (actual !== this.expected.digest) {
      done(new HashMismatchError(this.what, this.expected.digest, actual));
      return;
    }
    done();
  }
}

/** Checks a whole buffer the same way (manifests, configs, indexes). */
export function verifyBytes(data: Uint8Array, expected: BlobExpectation, what: string): void {
  if (expected.size !== undefined && data.length !== expected.size) {
    throw new CvmfsError('E_HASH_MISMATCH', `${what}: ${data.length} bytes, expected ${expected.size}`);
  }
  const actual = sha256Digest(data);
  if (actual !== expected.digest) throw new HashMismatchError(what, expected.digest, actual);
}
