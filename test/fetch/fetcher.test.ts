import t, { type Test } from 'tap';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import type http from 'node:http';
import { join } from 'node:path';
import { deflateSync, inflateSync } from 'node:zlib';
import { publish } from '../../src/publish/publisher';
import { startStaticServer } from '../../src/serve/static-server';
import { DiskCache } from '../../src/cache/disk-cache';
import { Downloader, type DownloaderOptions } from '../../src/net/downloader';
import { Fetcher, type ObjectRequest } from '../../src/fetch/fetcher';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { objectPath } from '../../src/format/object-name';
import { Compression } from '../../src/format/flags';
import { CvmfsError, HashMismatchError } from '../../src/errors';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { openRepoDir, tempDir, testKeys } from '../helpers/repo';
import { deadUrl, startProxy, startServer, testOptions } from '../net/servers';

const FQRN = 'fetch.cvmfs.io';
const PREFIX = `/cvmfs/${FQRN}`;
const TEXT = Buffer.from('Hello, CernVM-FS!\n');
const COMPRESSIBLE = Buffer.from('abcdefgh'.repeat(40_000));
const RANDOM = pseudoRandomBytes(3_000_000, 11);
/** compressible.txt (320 KB) stays one object; random.bin is cut into a few chunks. */
const CHUNKS = { min: 512 * 1024, avg: 1024 * 1024, max: 2048 * 1024 };

interface Fixture {
  repoDir: string;
  text: ObjectRequest;
  compressible: ObjectRequest;
  chunks: { req: ObjectRequest; offset: number }[];
  catalog: ObjectRequest;
  storedBytes: (req: ObjectRequest) => Promise<Buffer>;
}

/** One published repository for the whole file (publishing is the slow part). */
let fixture: Promise<Fixture> | undefined;
function repo(): Promise<Fixture> {
  fixture ??= (async () => {
    const dir = await tempDir(t, 'cvmfs-ts-fetch-');
    const src = join(dir, 'src');
    const repoDir = join(dir, 'repo');
    await mkdir(src);
    await writeFile(join(src, 'text.txt'), TEXT);
    await writeFile(join(src, 'compressible.txt'), COMPRESSIBLE);
    await writeFile(join(src, 'random.bin'), RANDOM);
    await publish({ fqrn: FQRN, source: src, repoDir, keysDir: await testKeys(FQRN), chunking: CHUNKS });
    const r = await openRepoDir(FQRN, await testKeys(FQRN), repoDir);
    try {
      const db = await r.rootCatalog();
      const file = (path: string): ObjectRequest => {
        const e = db.lookup(path)!;
        return {
          hash: e.hash!,
          suffix: '',
          compressed: e.flags.compression === Compression.Zlib,
          size: e.size,
          description: path,
        };
      };
      const entry = db.lookup('/random.bin')!;
      const chunks = db.chunks('/random.bin', entry).map((c) => ({
        offset: c.offset,
        req: { hash: c.hash, suffix: 'P' as const, compressed: true, size: c.size, description: `/random.bin@${c.offset}` },
      }));
      return {
        repoDir,
        text: file('/text.txt'),
        compressible: file('/compressible.txt'),
        chunks,
        // The manifest's B line is the decompressed catalog size, which the fetcher checks (§1.3).
        catalog: { hash: r.rootHash, suffix: 'C', compressed: true, size: r.manifest.rootCatalogSize, description: 'catalog /' },
        storedBytes: (req) => readFile(join(repoDir, objectPath(req.hash, req.suffix))),
      };
    } finally {
      await r.close();
    }
  })();
  return fixture;
}

interface Rig {
  fetcher: Fetcher;
  cache: DiskCache;
  downloader: Downloader;
}

async function rig(t: Test, o: Partial<DownloaderOptions> & Pick<DownloaderOptions, 'serverUrls'>, externalUrls?: string[]): Promise<Rig> {
  const cache = new DiskCache(join(await tempDir(t), 'cache'));
  await cache.init();
  const downloader = new Downloader(testOptions(o));
  t.teardown(() => downloader.close());
  return { fetcher: new Fetcher(cache, downloader, { externalUrls }), cache, downloader };
}

/** The static server over the fixture, with its access log. */
async function serveRepo(t: Test, root?: string): Promise<{ url: string; port: number; log: string[] }> {
  const log: string[] = [];
  const srv = await startStaticServer({ root: root ?? (await repo()).repoDir, urlPrefix: PREFIX, log: (l) => log.push(l) });
  t.teardown(() => srv.close());
  return { url: srv.url, port: srv.port, log };
}

/** Nothing was cached: no object file, and txn/ is empty. */
async function assertNothingCached(t: Test, cache: DiskCache, msg: string): Promise<void> {
  let objects = 0;
  for (const d of await readdir(cache.dir)) {
    if (/^[0-9a-f]{2}$/.test(d)) objects += (await readdir(join(cache.dir, d))).length;
  }
  t.equal(objects, 0, `${msg}: no object in the cache`);
  t.same(await readdir(cache.txnDir), [], `${msg}: txn/ is empty`);
}

async function rejectsCode(t: Test, p: Promise<unknown>, code: string, msg: string): Promise<Error | undefined> {
  try {
    await p;
    t.fail(`${msg}: resolved`);
    return undefined;
  } catch (e) {
    t.equal(CvmfsError.is(e) ? e.code : `not a CvmfsError: ${String(e)}`, code, msg);
    return e as Error;
  }
}

/** Serves the fixture's files through `mangle` (status 200, Content-Length of the mangled body). */
function mangling(repoDir: string, mangle: (body: Buffer) => Buffer, type = 'application/octet-stream') {
  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const rel = (req.url ?? '').replace(/^https?:\/\/[^/]+/, '').slice(PREFIX.length);
    let body: Buffer;
    try {
      body = await readFile(join(repoDir, decodeURIComponent(rel)));
    } catch {
      res.writeHead(404, { 'content-length': '0' }).end();
      return;
    }
    const out = mangle(body);
    res.writeHead(200, { 'content-type': type, 'content-length': out.length });
    res.end(out);
  };
}

t.test('cold fetches verify, inflate and commit; then the cache answers without the network', async (t) => {
  const f = await repo();
  const srv = await serveRepo(t);
  const { fetcher, cache } = await rig(t, { serverUrls: [srv.url] });

  t.same(await readFile(await fetcher.fetch(f.text)), TEXT, 'small file');
  t.same(await readFile(await fetcher.fetch(f.compressible)), COMPRESSIBLE, 'compressible file');
  t.ok(f.chunks.length >= 2, `random.bin has ${f.chunks.length} chunks`);
  for (const c of f.chunks) {
    const got = await readFile(await fetcher.fetch(c.req));
    t.same(got, RANDOM.subarray(c.offset, c.offset + c.req.size!), `chunk at ${c.offset}`, { diagnostic: false });
  }
  const catalogPath = await fetcher.fetch(f.catalog);
  t.same(await readFile(catalogPath), inflateSync(await f.storedBytes(f.catalog)), 'catalog stored decompressed');
  t.equal(catalogPath, cache.pathOf(f.catalog.hash));

  const requests = srv.log.length;
  t.equal(requests, 3 + f.chunks.length, 'one request per object');
  t.equal(await fetcher.fetch(f.text), cache.pathOf(f.text.hash));
  t.same(await fetcher.fetchToBuffer(f.compressible), COMPRESSIBLE);
  t.equal(srv.log.length, requests, 'hits need no network');

  const stored = (await Promise.all([f.text, f.compressible, f.catalog, ...f.chunks.map((c) => c.req)].map(f.storedBytes)))
    .reduce((n, b) => n + b.length, 0);
  const inflated = TEXT.length + COMPRESSIBLE.length + RANDOM.length + (await readFile(catalogPath)).length;
  t.same(fetcher.counters, {
    hits: 2,
    misses: 3 + f.chunks.length,
    shared: 0,
    downloads: 3 + f.chunks.length,
    bytesDownloaded: stored,
    bytesInflated: inflated,
    badData: 0,
  });
  t.same(await readdir(cache.txnDir), [], 'no temporary files left');
});

t.test('16 concurrent fetches of one cold object share exactly one HTTP request', async (t) => {
  const f = await repo();
  const srv = await serveRepo(t);
  const { fetcher, cache } = await rig(t, { serverUrls: [srv.url] });
  const paths = await Promise.all(Array.from({ length: 16 }, () => fetcher.fetch(f.compressible)));
  t.same(new Set(paths), new Set([cache.pathOf(f.compressible.hash)]));
  const path = objectPath(f.compressible.hash);
  t.equal(srv.log.filter((l) => l.includes(path)).length, 1, 'one GET at the server');
  t.equal(fetcher.counters.downloads, 1);
  t.equal(fetcher.counters.shared, 15);
  t.equal(fetcher.inflightCount, 0, 'the in-flight entry is gone');
  t.same(await readFile(paths[0]), COMPRESSIBLE);
});

t.test('a flipped byte: one retry with no-cache, then HashMismatchError; nothing cached', async (t) => {
  const f = await repo();
  const srv = await startServer(
    t,
    mangling(f.repoDir, (b) => {
      const out = Buffer.from(b);
      out[Math.min(10, out.length - 1)] ^= 0x01;
      return out;
    }),
  );
  const { fetcher, cache } = await rig(t, { serverUrls: [srv.url + PREFIX] });
  const e = await rejectsCode(t, fetcher.fetch(f.compressible), 'E_HASH_MISMATCH', 'hash mismatch');
  t.ok(e instanceof HashMismatchError);
  t.match(e?.message, objectPath(f.compressible.hash), 'names the object path');
  t.match(e?.message, '/compressible.txt', 'and the description');
  t.equal(srv.seen.length, 2, 'exactly one retry');
  t.notOk('cache-control' in srv.seen[0].headers, 'first attempt: normal');
  t.equal(srv.seen[1].headers['cache-control'], 'no-cache', 'retry asks caches for a fresh copy');
  t.equal(srv.seen[1].headers.pragma, 'no-cache');
  t.equal(fetcher.counters.badData, 2);
  await assertNothingCached(t, cache, 'flipped byte');
  t.equal(fetcher.inflightCount, 0);
});

t.test('truncated bodies, garbage and HTML error pages are errors and never cached', async (t) => {
  const f = await repo();
  const cases: [string, (b: Buffer) => Buffer, string?][] = [
    ['truncated', (b) => b.subarray(0, b.length >> 1)],
    ['garbage', (b) => pseudoRandomBytes(b.length, 3)],
    ['empty', () => Buffer.alloc(0)],
    ['html', () => Buffer.from('<html><body><h1>503 Service Unavailable</h1></body></html>\n'), 'text/html'],
  ];
  for (const [name, mangle, type] of cases) {
    const srv = await startServer(t, mangling(f.repoDir, mangle, type));
    const { fetcher, cache } = await rig(t, { serverUrls: [srv.url + PREFIX] });
    for (const req of [f.compressible, f.chunks[0].req]) {
      await rejectsCode(t, fetcher.fetch(req), 'E_HASH_MISMATCH', `${name} ${req.description}`);
    }
    await assertNothingCached(t, cache, name);
  }
});

t.test('a zlib stream cut short is an error even when it hashes to its name', async (t) => {
  const dir = await tempDir(t);
  const stored = deflateSync(pseudoRandomBytes(50_000, 5)).subarray(0, 20_000);
  const hash = ContentHash.compute(HashAlgorithm.Sha1, stored);
  await mkdir(join(dir, 'data', hash.toString().slice(0, 2)), { recursive: true });
  await writeFile(join(dir, objectPath(hash)), stored);
  const srv = await serveRepo(t, dir);
  const { fetcher, cache } = await rig(t, { serverUrls: [srv.url] });
  const e = await rejectsCode(t, fetcher.fetch({ hash, suffix: '', compressed: true, description: '/cut.bin' }), 'E_FORMAT', 'incomplete zlib');
  t.match(e?.message, /not a valid zlib stream/);
  t.equal(srv.log.length, 1, 'the bytes were right: no no-cache retry');
  await assertNothingCached(t, cache, 'incomplete zlib');
});

t.test('the decompressed size must match the catalog', async (t) => {
  const f = await repo();
  const srv = await serveRepo(t);
  const { fetcher, cache } = await rig(t, { serverUrls: [srv.url] });
  const e = await rejectsCode(t, fetcher.fetch({ ...f.text, size: TEXT.length + 1 }), 'E_IO', 'too small');
  t.match(e?.message, /size 18, catalog says 19/);
  t.equal((await readdir(cache.quarantineDir)).length, 1, 'kept in quarantaine for post-mortem');
  await rejectsCode(t, fetcher.fetch({ ...f.compressible, size: 1000 }), 'E_IO', 'too large: stops inflating early');
  await assertNothingCached(t, cache, 'size mismatch');
  t.equal(srv.log.length, 2, 'right bytes: no retries');
});

t.test('host failover: a 500 and a host resetting mid-body, then the right bytes', async (t) => {
  const f = await repo();
  const good = await serveRepo(t);
  const s500 = await startServer(t, (_req, res) => void res.writeHead(500, { 'content-length': '0' }).end());
  const reset = await startServer(t, async (req, res) => {
    const body = await readFile(join(f.repoDir, (req.url ?? '').slice(PREFIX.length)));
    res.writeHead(200, { 'content-length': body.length });
    res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.socket?.destroy(), 10));
  });
  const { fetcher, downloader } = await rig(t, { serverUrls: [s500.url + PREFIX, reset.url + PREFIX, good.url] });
  t.same(await readFile(await fetcher.fetch(f.compressible)), COMPRESSIBLE);
  t.equal(downloader.currentHost(), good.url);
  t.equal(downloader.counters.hostFailovers, 2);
  t.equal(reset.seen.length, 2, 'the resetting host was retried once, the sink restarted');
  t.equal(fetcher.counters.badData, 0, 'restarts are not bad data');
});

t.test('through a proxy: absolute-form GETs; a dead proxy group falls back to DIRECT', async (t) => {
  const f = await repo();
  const srv = await serveRepo(t);
  const proxy = await startProxy(t);
  const { fetcher } = await rig(t, { serverUrls: [srv.url], proxyGroups: [[proxy.url]] });
  t.same(await readFile(await fetcher.fetch(f.text)), TEXT);
  t.same(
    proxy.seen.map((s) => `${s.method} ${s.url}`),
    [`GET http://127.0.0.1:${srv.port}${PREFIX}/${objectPath(f.text.hash)}`],
    'absolute URI, no CONNECT',
  );

  const dead = await deadUrl();
  const r2 = await rig(t, { serverUrls: [srv.url], proxyGroups: [[dead], ['DIRECT']] });
  t.same(await readFile(await r2.fetcher.fetch(f.compressible)), COMPRESSIBLE);
  t.equal(r2.downloader.currentProxy(), 'DIRECT');
});

t.test('external files: URL = external host + escaped path, whole or by range', async (t) => {
  const ext = await tempDir(t);
  const content = pseudoRandomBytes(300_000, 9);
  await mkdir(join(ext, 'some dir'));
  await writeFile(join(ext, 'some dir', 'data file.bin'), content);
  const srv = await startStaticServer({ root: ext, log: () => undefined });
  t.teardown(() => srv.close());
  const seen: string[] = [];
  const front = await startServer(t, (req, res) => {
    seen.push(req.url ?? '');
    res.writeHead(307, { location: `${srv.url}${req.url}`, 'content-length': '0' }).end();
  });
  const { fetcher, cache } = await rig(t, { serverUrls: [await deadUrl()], followRedirects: true }, [await deadUrl(), front.url]);
  const whole = ContentHash.compute(HashAlgorithm.Sha1, content);
  const path = await fetcher.fetch({
    hash: whole,
    suffix: '',
    compressed: false,
    size: content.length,
    description: '/some dir/data file.bin',
    external: { path: '/some dir/data file.bin' },
  });
  t.same(await readFile(path), content);
  t.equal(seen[0], '/some%20dir/data%20file.bin');

  const slice = content.subarray(100_000, 150_000);
  const part = ContentHash.compute(HashAlgorithm.Sha1, slice);
  const req: ObjectRequest = {
    hash: part,
    suffix: 'P',
    compressed: false,
    size: slice.length,
    description: '/some dir/data file.bin@100000',
    external: { path: '/some dir/data file.bin', range: { offset: 100_000, size: 50_000 } },
  };
  t.same(await readFile(await fetcher.fetch(req)), slice, 'a chunk by Range');
  const wrong = { ...req, hash: ContentHash.compute(HashAlgorithm.Sha1, 'other'), size: undefined };
  await rejectsCode(t, fetcher.fetch(wrong), 'E_HASH_MISMATCH', 'external bytes are verified too');
  t.equal(await cache.has(wrong.hash), false);

  const noExt = await rig(t, { serverUrls: [front.url] });
  await rejectsCode(t, noExt.fetcher.fetch(req), 'E_NETWORK', 'external file without external URL');
});

t.test('getRaw: manifest bytes, no-cache on request, size cap', async (t) => {
  const f = await repo();
  const srv = await serveRepo(t);
  const { fetcher } = await rig(t, { serverUrls: [srv.url] });
  const mirror = await startServer(t, mangling(f.repoDir, (b) => b));
  const raw = (await rig(t, { serverUrls: [mirror.url + PREFIX] })).fetcher;
  t.same(await fetcher.getRaw('.cvmfspublished'), await readFile(join(f.repoDir, '.cvmfspublished')));
  t.same(await raw.getRaw('/.cvmfswhitelist', { noCache: true }), await readFile(join(f.repoDir, '.cvmfswhitelist')));
  t.equal(mirror.seen[0].headers['cache-control'], 'no-cache');
  await rejectsCode(t, fetcher.getRaw('.cvmfspublished', { maxBytes: 10 }), 'E_NETWORK', 'over the cap');
  await rejectsCode(t, fetcher.getRaw('.cvmfs_missing'), 'E_NOT_FOUND', 'missing file');
});

t.test('an aborted waiter leaves; the download is cancelled only when every waiter has gone', async (t) => {
  const f = await repo();
  /** One release function per request, pushed once its first 100 bytes are out. */
  const held: (() => void)[] = [];
  const release = (): void => held.forEach((r) => r());
  const holding = async (n: number): Promise<void> => {
    while (held.length < n) await new Promise((r) => setTimeout(r, 5));
  };
  const slow = await startServer(t, async (req, res) => {
    const body = await readFile(join(f.repoDir, (req.url ?? '').slice(PREFIX.length)));
    res.writeHead(200, { 'content-length': body.length });
    res.write(body.subarray(0, 100));
    await new Promise<void>((r) => {
      held.push(r);
      res.on('close', r);
    });
    if (!res.destroyed) res.end(body.subarray(100));
  });
  const { fetcher, cache } = await rig(t, { serverUrls: [slow.url + PREFIX], lowSpeedLimit: 0 });

  const a = new AbortController();
  const pa = fetcher.fetch({ ...f.compressible, signal: a.signal });
  const pb = fetcher.fetch({ ...f.compressible, signal: new AbortController().signal });
  await holding(1);
  a.abort(new Error('interrupted A'));
  await t.rejects(pa, { message: 'interrupted A' });
  release();
  t.same(await readFile(await pb), COMPRESSIBLE, 'the other waiter still gets the object');
  t.equal(slow.seen.length, 1);

  const c1 = new AbortController();
  const c2 = new AbortController();
  const chunk = f.chunks[0].req;
  const p1 = fetcher.fetch({ ...chunk, signal: c1.signal });
  const p2 = fetcher.fetch({ ...chunk, signal: c2.signal });
  await holding(2);
  c1.abort(new Error('one'));
  c2.abort(new Error('two'));
  await t.rejects(p1, { message: 'one' });
  await t.rejects(p2, { message: 'two' });
  t.equal(fetcher.inflightCount, 0, 'later callers start afresh');
  for (let i = 0; i < 200 && (await readdir(cache.txnDir)).length > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.same(await readdir(cache.txnDir), [], 'the cancelled download cleaned up');
  t.equal(await cache.has(chunk.hash), false);

  // A waiter without a signal keeps the download alive when the others give up.
  const c3 = new AbortController();
  const p3 = fetcher.fetch({ ...chunk, signal: c3.signal });
  const p4 = fetcher.fetch(chunk);
  await holding(3);
  c3.abort(new Error('three'));
  await t.rejects(p3, { message: 'three' });
  release();
  t.same(await readFile(await p4), RANDOM.subarray(0, chunk.size), 'the patient waiter gets it');
});
