/**
 * Chunk readahead (src/client/filesystem.ts, CVMFS_TS_READAHEAD_CHUNKS): a sequential reader of a
 * chunked file gets the next N chunks requested ahead of it with priority 'readahead'; N = 0 asks
 * for none; a random jump asks for none. The file system runs over a real catalog tree of a
 * published repository; a fake object fetcher records every request and answers with temporary
 * files holding the chunks' real (inflated) bytes.
 */
import t, { type Test } from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Filesystem } from '../../src/client/filesystem';
import { CatalogTree } from '../../src/client/catalog-tree';
import type { FetchRequest, ObjectFetcher } from '../../src/client/object-fetcher';
import type { MountStatus } from '../../src/client/magic-xattrs';
import type { Chunk } from '../../src/catalog/catalog-db';
import { objectPath } from '../../src/format/object-name';
import { zlibDecompress } from '../../src/format/compression';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { openRepoDir, publishFileMap, tempDir, testKeys } from '../helpers/repo';

const FQRN = 'readahead.cvmfs.io';
/** 8 MiB cut into 256 KiB – 1 MiB chunks (publishFileMap): a dozen or so chunks. */
const BIG = pseudoRandomBytes(8 << 20, 77);
const SMALL = Buffer.from('not chunked\n');

interface Logged {
  readonly hash: string;
  readonly priority: string;
}

/** Records requests; answers with a temporary file holding the object's inflated bytes. */
class RecordingFetcher implements ObjectFetcher {
  readonly log: Logged[] = [];
  failReadahead = false;
  private readonly files = new Map<string, Promise<string>>();
  constructor(
    private readonly repoDir: string,
    private readonly dir: string,
  ) {}

  fetch(req: FetchRequest): Promise<string> {
    const hash = req.hash.toString();
    this.log.push({ hash, priority: req.priority ?? 'demand' });
    if (this.failReadahead && req.priority === 'readahead') return Promise.reject(new Error('readahead download failed'));
    let p = this.files.get(hash);
    if (!p) {
      p = (async () => {
        const stored = await readFile(join(this.repoDir, objectPath(req.hash, req.suffix)));
        const path = join(this.dir, hash);
        await writeFile(path, req.compressed ? zlibDecompress(stored) : stored);
        return path;
      })();
      this.files.set(hash, p);
    }
    return p;
  }

  of(priority: string): string[] {
    return this.log.filter((l) => l.priority === priority).map((l) => l.hash);
  }
}

interface Fixture {
  repoDir: string;
  tree: CatalogTree;
  chunks: Chunk[];
}

let fixture: Promise<Fixture> | undefined;
function repo(): Promise<Fixture> {
  fixture ??= (async () => {
    const published = await publishFileMap(t, FQRN, new Map([['big.bin', BIG], ['small.txt', SMALL]]));
    const r = await openRepoDir(FQRN, await testKeys(FQRN), published.repoDir);
    t.teardown(() => r.close());
    const tree = await CatalogTree.create(r.rootHash, (hash) => r.catalog(hash));
    const big = await tree.lookup('/big.bin');
    return { repoDir: published.repoDir, tree, chunks: tree.chunks(big) };
  })();
  return fixture;
}

async function setup(t: Test, readaheadChunks: number | undefined) {
  const f = await repo();
  const fetcher = new RecordingFetcher(f.repoDir, await tempDir(t));
  const fs = new Filesystem({
    tree: f.tree,
    fetcher,
    status: {} as MountStatus,
    ownership: {},
    env: {},
    magicXattrsVisibility: 'never',
    cacheUsage: () => ({ capacity: 0, used: 0 }),
    ...(readaheadChunks === undefined ? {} : { readaheadChunks }),
  });
  const index = new Map(f.chunks.map((c, i) => [c.hash.toString(), i]));
  /** Chunk indices of the requests of one priority, in order. */
  const indices = (priority: string): number[] => fetcher.of(priority).map((h) => index.get(h) ?? -1);
  return { f, fs, fetcher, indices };
}

/** Reads `length` bytes at `position` and checks them against BIG. */
async function readAt(t: Test, fs: Filesystem, handle: number, position: number, length: number): Promise<void> {
  const buf = Buffer.alloc(length);
  const n = await fs.read(handle, buf, length, position);
  const want = BIG.subarray(position, position + length);
  t.equal(n, want.length, `read ${length} at ${position}: ${want.length} bytes`);
  t.ok(buf.subarray(0, n).equals(want), `read at ${position}: right bytes`);
}

/** Reads the whole file front to back in `step`-byte reads; true when every byte was right. */
async function readAll(fs: Filesystem, handle: number, step: number): Promise<boolean> {
  const out = Buffer.alloc(BIG.length);
  for (let pos = 0; pos < BIG.length; pos += step) {
    const n = await fs.read(handle, out.subarray(pos), Math.min(step, BIG.length - pos), pos);
    if (n !== Math.min(step, BIG.length - pos)) return false;
  }
  return out.equals(BIG);
}

const range = (from: number, to: number): number[] => Array.from({ length: Math.max(0, to - from) }, (_, i) => from + i);

t.test('the fixture: a chunked file with enough chunks', async (t) => {
  const { chunks } = await repo();
  t.ok(chunks.length >= 8, `${chunks.length} chunks`);
  t.equal(new Set(chunks.map((c) => c.hash.toString())).size, chunks.length, 'all chunks differ');
  t.equal(chunks.reduce((n, c) => n + c.size, 0), BIG.length);
});

t.test('a sequential reader gets the next 2 chunks requested ahead, at readahead priority', async (t) => {
  const { f, fs, fetcher, indices } = await setup(t, 2);
  const n = f.chunks.length;
  const h = await fs.open('/big.bin', 0);
  t.equal(fetcher.log.length, 0, 'open fetches nothing');
  await readAt(t, fs, h, 0, 4096);
  t.same(indices('readahead'), [1, 2], 'first read: chunks 1 and 2 requested ahead');
  t.same(indices('demand'), [0], '... and chunk 0 for the reader');
  await readAt(t, fs, h, 4096, 4096);
  t.same(indices('readahead'), [1, 2], 'another read in chunk 0: nothing new ahead');

  t.ok(await readAll(fs, h, 128 << 10), 'the whole file read sequentially in 128 KiB reads: every byte right');
  t.same(indices('readahead'), range(1, n), `every chunk after the first requested ahead once, in order (${n} chunks)`);
  t.same(indices('demand'), range(0, n), 'and every chunk once for the reader');
  t.notOk(indices('readahead').includes(-1) || indices('demand').includes(-1), 'only chunks of this file requested');
  t.equal(fetcher.of('prefetch').length, 0, 'no prefetch priority');
  // Ahead means before the reader: readahead of chunk j is asked before the reader's chunk j-2.
  const at = (priority: string, hash: string): number => fetcher.log.findIndex((l) => l.priority === priority && l.hash === hash);
  const late = range(1, n).filter((j) => at('readahead', f.chunks[j]!.hash.toString()) > at('demand', f.chunks[Math.max(0, j - 2)]!.hash.toString()));
  t.same(late, [], 'each readahead request came before the reader asked for the chunk two before it');
  await fs.release(h);
});

t.test('readahead 3: three chunks ahead; a read spanning chunks looks ahead of its last one', async (t) => {
  const { f, fs, indices } = await setup(t, 3);
  const h = await fs.open('/big.bin', 0);
  await readAt(t, fs, h, 0, 1000);
  t.same(indices('readahead'), [1, 2, 3], 'chunks 1–3');
  // One read from inside chunk 0 to inside chunk 1 (sequential): ahead of chunk 1 → chunk 4.
  const c1 = f.chunks[1]!;
  await readAt(t, fs, h, 1000, c1.offset + 10 - 1000);
  t.same(indices('readahead'), [1, 2, 3, 4], 'then chunk 4');
  t.same(indices('demand'), [0, 1]);
  await fs.release(h);
});

t.test('readahead 0 (and no option) requests nothing ahead', async (t) => {
  for (const n of [0, undefined]) {
    const { fs, fetcher, indices, f } = await setup(t, n);
    const h = await fs.open('/big.bin', 0);
    t.ok(await readAll(fs, h, 64 << 10), `readahead ${n}: every byte right`);
    t.equal(fetcher.of('readahead').length, 0, `readahead ${n}: no readahead request`);
    t.same(indices('demand'), range(0, f.chunks.length), `readahead ${n}: each chunk once, for the reader`);
    await fs.release(h);
  }
});

t.test('a random jump requests nothing ahead; reading on from there does', async (t) => {
  const { f, fs, fetcher, indices } = await setup(t, 2);
  const h = await fs.open('/big.bin', 0);
  await readAt(t, fs, h, 0, 4096);
  t.same(indices('readahead'), [1, 2]);
  const c5 = f.chunks[5]!;
  await readAt(t, fs, h, c5.offset + 100, 4096);
  t.same(indices('readahead'), [1, 2], 'jump from chunk 0 to chunk 5: no readahead request');
  t.same(indices('demand'), [0, 5], 'only the chunk read');
  await readAt(t, fs, h, c5.offset + 100 + 4096, 4096);
  t.same(indices('readahead'), [1, 2, 6, 7], 'reading on in chunk 5 is sequential again: chunks 6 and 7 ahead');
  const c3 = f.chunks[3]!;
  const before = fetcher.log.length;
  await readAt(t, fs, h, c3.offset + 7, 4096);
  t.same(indices('readahead'), [1, 2, 6, 7], 'jump back to chunk 3: no readahead request');
  t.same(fetcher.log.slice(before).map((l) => l.priority), ['demand'], 'one request, for the reader');
  await fs.release(h);
});

t.test('failed readahead downloads do not fail the reader', async (t) => {
  const { f, fs, fetcher, indices } = await setup(t, 2);
  fetcher.failReadahead = true;
  const h = await fs.open('/big.bin', 0);
  t.ok(await readAll(fs, h, 256 << 10), 'every byte right although every readahead failed');
  t.same(indices('readahead'), range(1, f.chunks.length), 'readahead was asked for');
  t.same(indices('demand'), range(0, f.chunks.length), 'the reader fetched every chunk itself');
  await fs.release(h);
});

t.test('a file that is not chunked has no readahead', async (t) => {
  const { fs, fetcher } = await setup(t, 2);
  const h = await fs.open('/small.txt', 0);
  const buf = Buffer.alloc(100);
  t.equal(await fs.read(h, buf, 100, 0), SMALL.length);
  t.same(buf.subarray(0, SMALL.length), SMALL);
  t.same(fetcher.log.map((l) => l.priority), ['demand'], 'one request, for the reader');
  await fs.release(h);
});
