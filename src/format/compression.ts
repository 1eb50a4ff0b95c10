/**
 * Object compression (§2.2): zlib (RFC 1950, level 6) or none. Compression of whole buffers is
 * for small objects (catalogs, certificates); file content streams through `createDeflate`.
 */
import { deflate, deflateSync, inflateSync, createDeflate, createInflate, type Deflate, type Inflate } from 'node:zlib';
import { promisify } from 'node:util';

const deflateAsync = promisify(deflate);
import { FormatError } from '../errors';

const LEVEL = 6; // Z_DEFAULT_COMPRESSION, as the C++ publisher

export function zlibCompress(data: Uint8Array): Buffer {
  return deflateSync(data, { level: LEVEL });
}

/** Same bytes as zlibCompress, computed on libuv's thread pool. */
export function zlibCompressAsync(data: Uint8Array): Promise<Buffer> {
  return deflateAsync(data, { level: LEVEL });
}

export function zlibDecompress(data: Uint8Array, what = 'object'): Buffer {
  try {
    return inflateSync(data);
  } catch (e) {
    throw new FormatError(`${what} is not a valid zlib stream`, { cause: e });
  }
}

export function zlibCompressStream(): Deflate {
  return createDeflate({ level: LEVEL, chunkSize: 1 << 18 }); // fewer thread-pool round trips than 16 KiB
}

export function zlibDecompressStream(): Inflate {
  return createInflate();
}
