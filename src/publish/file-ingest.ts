/**
 * Streams one source file into content-addressed objects: whole-file object, or content-defined
 * chunks (`P` objects) when the file is larger than the minimal chunk size and the chunker cuts it
 * (§4). Memory stays bounded by the read buffer whatever the file size. With a HashOnlyStore
 * (external files, §7.1) the same cuts and names are computed and nothing is stored.
 */
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Xor32Chunker, type ChunkSizes } from '../format/chunker';
import type { ContentHash } from '../format/hash';
import { zlibCompressAsync } from '../format/compression';
import type { ContentStore, ContentWriter } from './object-store';
import type { ChunkRecord } from './catalog-writer';
import { SourceError, CvmfsError } from '../errors';

export interface IngestedContent {
  /** Whole-file object; undefined for chunked files (no legacy bulk object, as the server default). */
  readonly hash?: ContentHash;
  readonly chunks?: readonly ChunkRecord[];
  readonly size: number;
}

export interface IngestOptions {
  readonly chunking: ChunkSizes | false;
  readonly compress: boolean;
  readonly onBytes?: (n: number) => void;
}

const READ_BUFFER = 1 << 20;

/** Files up to this size are read whole and compressed in one call: far fewer stream round trips. */
const SMALL_FILE = 1 << 20;

export async function ingestFile(path: string, expectedSize: number, store: ContentStore, o: IngestOptions): Promise<IngestedContent> {
  if (expectedSize <= SMALL_FILE && (!o.chunking || expectedSize <= o.chunking.min)) return ingestSmallFile(path, store, o);
  const chunker = o.chunking ? new Xor32Chunker(o.chunking) : undefined;
  const chunks: ChunkRecord[] = [];
  let writer: ContentWriter = await store.startObject(o.compress);
  let chunkStart = 0;
  let position = 0;
  try {
    const input = createReadStream(path, { highWaterMark: READ_BUFFER });
    for await (const piece of input as AsyncIterable<Buffer>) {
      let used = 0;
      // Files no larger than the minimal chunk size are never chunked; the chunker never cuts before min.
      for (const cut of chunker ? chunker.push(piece) : []) {
        await writer.write(piece.subarray(used, cut - position));
        used = cut - position;
        chunks.push({ offset: chunkStart, size: cut - chunkStart, hash: await writer.commit('P') });
        writer = await store.startObject(o.compress);
        chunkStart = cut;
      }
      await writer.write(piece.subarray(used));
      position += piece.length;
      o.onBytes?.(piece.length);
    }
  } catch (e) {
    await writer.abort();
    if (CvmfsError.is(e)) throw e;
    throw new SourceError(path, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  if (chunks.length === 0) return { hash: await writer.commit(''), size: position };
  chunks.push({ offset: chunkStart, size: position - chunkStart, hash: await writer.commit('P') });
  return { chunks, size: position };
}

async function ingestSmallFile(path: string, store: ContentStore, o: IngestOptions): Promise<IngestedContent> {
  let data: Buffer;
  try {
    data = await readFile(path);
  } catch (e) {
    throw new SourceError(path, `cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, { cause: e });
  }
  o.onBytes?.(data.length);
  const stored = o.compress ? await zlibCompressAsync(data) : data;
  return { hash: await store.putStored(stored, ''), size: data.length };
}
