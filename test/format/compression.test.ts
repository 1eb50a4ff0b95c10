import t from 'tap';
import { pipeline } from 'node:stream/promises';
import { Readable, Writable } from 'node:stream';
import { zlibCompress, zlibDecompress, zlibCompressStream, zlibDecompressStream } from '../../src/format/compression';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { Prng } from '../helpers/prng';

async function throughStream(data: Buffer, transform: NodeJS.ReadWriteStream, pieceSize = 1000): Promise<Buffer> {
  const out: Buffer[] = [];
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += pieceSize) pieces.push(data.subarray(i, i + pieceSize));
  await pipeline(
    Readable.from(pieces),
    transform,
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        out.push(chunk);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

t.test('zlib("") (§2.4, §9)', async (t) => {
  const z = zlibCompress(Buffer.alloc(0));
  t.equal(z.toString('hex'), '789c030000000001');
  t.equal(ContentHash.compute(HashAlgorithm.Sha1, z).toString(), 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78');
  t.equal(zlibDecompress(z).length, 0);
  t.equal((await throughStream(Buffer.alloc(0), zlibCompressStream())).toString('hex'), '789c030000000001');
});

t.test('RFC 1950 zlib stream at level 6 (header 78 9c)', async (t) => {
  const z = zlibCompress(Buffer.from('hello, world\n'.repeat(100)));
  t.equal(z[0], 0x78);
  t.equal(z[1], 0x9c);
  t.ok(z.length < 1300);
  t.equal(zlibDecompress(z).toString(), 'hello, world\n'.repeat(100));
});

t.test('round trips, whole buffers and streams', async (t) => {
  const rng = new Prng(42);
  for (const size of [1, 2, 100, 4096, 65537, 300_000]) {
    const random = Buffer.from(rng.fillBytes(new Uint8Array(size)));
    const text = Buffer.from('abcabcabd'.repeat(Math.ceil(size / 9)).slice(0, size));
    for (const [name, data] of [['random', random], ['text', text]] as const) {
      const z = zlibCompress(data);
      t.ok(zlibDecompress(z).equals(data), `${name} ${size}: whole buffer`);
      const zs = await throughStream(data, zlibCompressStream(), 777);
      // Same level, same zlib: the stream and the buffer compressor agree byte for byte.
      t.ok(zs.equals(z), `${name} ${size}: stream output equals buffer output`);
      t.ok((await throughStream(zs, zlibDecompressStream(), 333)).equals(data), `${name} ${size}: stream inflate`);
    }
  }
  // Accepts a plain Uint8Array too.
  t.equal(zlibDecompress(new Uint8Array(zlibCompress(new Uint8Array([1, 2, 3])))).toString('hex'), '010203');
});

t.test('garbage is a FormatError', async (t) => {
  t.throws(() => zlibDecompress(Buffer.from('definitely not zlib')), { code: 'E_FORMAT', name: 'FormatError' });
  t.throws(() => zlibDecompress(Buffer.alloc(0)), { code: 'E_FORMAT' });
  // Truncated stream.
  const z = zlibCompress(Buffer.from('some content that compresses'.repeat(10)));
  t.throws(() => zlibDecompress(z.subarray(0, z.length - 3)), { code: 'E_FORMAT' });
  // Corrupted Adler-32 trailer.
  const bad = Buffer.from(z);
  bad[bad.length - 1] ^= 0xff;
  t.throws(() => zlibDecompress(bad), { code: 'E_FORMAT' });
  // Raw deflate and gzip are not zlib streams.
  const { deflateRawSync, gzipSync } = await import('node:zlib');
  t.throws(() => zlibDecompress(deflateRawSync(Buffer.from('x'))), { code: 'E_FORMAT' });
  t.throws(() => zlibDecompress(gzipSync(Buffer.from('x'))), { code: 'E_FORMAT' });
  // The message names the object and the cause is kept.
  try {
    zlibDecompress(Buffer.from('nope'), 'catalog 123');
    t.fail('should throw');
  } catch (e) {
    t.match((e as Error).message, /^catalog 123 is not a valid zlib stream/);
    t.ok((e as Error).cause instanceof Error);
  }
});
