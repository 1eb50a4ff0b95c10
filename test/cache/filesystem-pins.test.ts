/**
 * The file system's pin hooks (src/client/filesystem.ts): an object is pinned before it is fetched for
 * an open handle, stays pinned while the handle may read it, and every pin is released exactly once
 * (release, a chunk leaving the window of open chunk files, a failed fetch). An object unlinked between
 * the fetch and the open (evicted by another mount sharing the cache) is fetched again.
 */
import t, { type Test } from 'tap';
import { writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Filesystem, type ObjectPins } from '../../src/client/filesystem';
import type { CatalogTree, ResolvedEntry } from '../../src/client/catalog-tree';
import type { FetchRequest, ObjectFetcher } from '../../src/client/object-fetcher';
import type { MountStatus } from '../../src/client/magic-xattrs';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { tempDir } from '../helpers/repo';

const CHUNK = 100;

class CountingPins implements ObjectPins {
  readonly counts = new Map<string, number>();
  max = 0;
  pin(h: ContentHash): void {
    this.counts.set(h.toString(), (this.counts.get(h.toString()) ?? 0) + 1);
    this.max = Math.max(this.max, this.total());
  }
  unpin(h: ContentHash): void {
    const n = this.counts.get(h.toString()) ?? 0;
    if (n <= 0) throw new Error(`unpin without pin: ${h}`);
    if (n === 1) this.counts.delete(h.toString());
    else this.counts.set(h.toString(), n - 1);
  }
  total(): number {
    return [...this.counts.values()].reduce((a, b) => a + b, 0);
  }
}

/** Objects as files named by hash; `vanishOnce` makes the first fetch of a hash return a path that is gone. */
class FakeFetcher implements ObjectFetcher {
  readonly fetched: string[] = [];
  readonly vanishOnce = new Set<string>();
  failNext = false;
  constructor(
    private readonly dir: string,
    private readonly pins: CountingPins,
  ) {}
  async fetch(req: FetchRequest): Promise<string> {
    const key = req.hash.toString();
    if (!this.pins.counts.has(key)) throw new Error(`${key} fetched before it was pinned`);
    this.fetched.push(key);
    if (this.failNext) {
      this.failNext = false;
      throw new Error('download failed');
    }
    const path = join(this.dir, key);
    await writeFile(path, Buffer.alloc(req.size ?? 0, key.charCodeAt(0)));
    if (this.vanishOnce.delete(key)) await rm(path);
    return path;
  }
}

const hashOf = (s: string) => ContentHash.compute(HashAlgorithm.Sha1, s);

function entry(path: string, size: number, chunked: boolean): ResolvedEntry {
  return {
    path,
    inode: 1000,
    catalog: undefined as never,
    entry: {
      mode: 0o100644,
      size,
      hash: hashOf(path),
      flags: { chunked, compression: 0, external: false },
    } as never,
  };
}

async function setup(t: Test) {
  const dir = await tempDir(t);
  const pins = new CountingPins();
  const fetcher = new FakeFetcher(dir, pins);
  const files = new Map<string, ResolvedEntry>([
    ['/whole', entry('/whole', 50, false)],
    ['/chunked', entry('/chunked', 12 * CHUNK, true)],
  ]);
  const tree = {
    lookup: async (p: string) => files.get(p)!,
    chunks: () => Array.from({ length: 12 }, (_, i) => ({ offset: i * CHUNK, size: CHUNK, hash: hashOf(`chunk ${i}`) })),
  } as unknown as CatalogTree;
  const fs = new Filesystem({
    tree,
    fetcher,
    status: {} as MountStatus,
    ownership: {},
    env: {},
    magicXattrsVisibility: 'never',
    cacheUsage: () => ({ capacity: 0, used: 0 }),
    pins,
  });
  return { fs, pins, fetcher };
}

t.test('whole files: pinned from the first read until release, counted per handle', async (t) => {
  const { fs, pins, fetcher } = await setup(t);
  const buf = Buffer.alloc(100);
  const a = await fs.open('/whole', 0);
  t.equal(pins.total(), 0, 'open fetches (and pins) nothing');
  t.equal(await fs.read(a, buf, 10, 0), 10);
  t.equal(await fs.read(a, buf, 10, 10), 10);
  t.equal(pins.total(), 1, 'one pin for the handle, however many reads');
  const b = await fs.open('/whole', 0);
  await fs.read(b, buf, 5, 0);
  t.equal(pins.counts.get(hashOf('/whole').toString()), 2, 'a second handle pins again');
  await fs.release(a);
  t.equal(pins.total(), 1);
  await fs.release(b);
  t.equal(pins.total(), 0, 'all released');
  t.same(fetcher.fetched.length, 2);
});

t.test('a failed fetch releases its pin; an object gone before its open is fetched again', async (t) => {
  const { fs, pins, fetcher } = await setup(t);
  const buf = Buffer.alloc(100);
  const h = await fs.open('/whole', 0);
  fetcher.failNext = true;
  await t.rejects(fs.read(h, buf, 10, 0), /download failed/);
  t.equal(pins.total(), 0, 'pin released with the failure');
  const fetchesBefore = fetcher.fetched.length;
  await t.rejects(fs.read(h, buf, 10, 0), /download failed/, 'the handle remembers the failure');
  t.equal(fetcher.fetched.length, fetchesBefore, '... without downloading again');
  await fs.release(h);
  const h2 = await fs.open('/whole', 0);
  fetcher.vanishOnce.add(hashOf('/whole').toString());
  t.equal(await fs.read(h2, buf, 50, 0), 50, 'a new open works: evicted between fetch and open → fetched again');
  t.equal(fetcher.fetched.length, 3);
  t.equal(pins.total(), 1);
  await fs.release(h2);
  t.equal(pins.total(), 0);
});

t.test('chunked files: only the chunks in the window of open chunk files are pinned', async (t) => {
  const { fs, pins } = await setup(t);
  const buf = Buffer.alloc(12 * CHUNK);
  const h = await fs.open('/chunked', 0);
  for (let i = 0; i < 12; i++) await fs.read(h, buf, CHUNK, i * CHUNK);
  await new Promise((r) => setImmediate(r));
  t.equal(pins.total(), 8, 'the 8 most recent chunks stay pinned');
  t.equal(pins.max, 9, 'never more than the window (+ the one being opened)');
  t.notOk(pins.counts.has(hashOf('chunk 0').toString()), 'chunks that left the window were released');
  await fs.release(h);
  t.equal(pins.total(), 0);
});
