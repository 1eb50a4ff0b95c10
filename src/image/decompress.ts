/**
 * Layer compression detected by magic bytes, not by media type: registries and tools mislabel layers
 * (docker-archive layers are plain tars whatever the manifest says; some images carry gzip under a
 * `+zstd` type), and the bytes cannot lie.
 */
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';

export type Compression = 'gzip' | 'zstd' | 'none';

export function detectCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/**
 * The uncompressed bytes of `source`, whichever of gzip, zstd or nothing it is. Errors of `source`
 * (e.g. a digest mismatch at its end) come out of the returned stream; destroying the returned stream
 * destroys `source`.
 */
export async function decompressed(source: Readable): Promise<{ stream: Readable; compression: Compression }> {
  const it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head: Buffer[] = [];
  let n = 0;
  while (n < 4) {
    const r = await it.next();
    if (r.done) break;
    head.push(r.value);
    n += r.value.length;
  }
  const first = Buffer.concat(head);
  const compression = detectCompression(first);
  async function* replay(): AsyncGenerator<Buffer, void, undefined> {
    try {
      if (first.length > 0) yield first;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    } finally {
      await it.return?.();
    }
  }
  const raw = Readable.from(replay(), { objectMode: false });
  if (compression === 'none') return { stream: raw, compression };
  // Larger output chunks than zlib's 16 KiB default: fewer thread-pool round trips per layer.
  const decoder = compression === 'gzip' ? createGunzip({ chunkSize: 1 << 18 }) : new DecompressStream();
  pipeline(raw, decoder, () => {
    // Errors reach the consumer through `decoder`, which pipeline destroys with them.
  });
  return { stream: decoder, compression };
}
