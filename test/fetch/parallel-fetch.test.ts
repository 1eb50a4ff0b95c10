/**
 * The fetcher's download slots over real HTTP (src/fetch/fetcher.ts + download-slots.ts): a server on
 * 127.0.0.1 serves real objects (zlib-compressed, named by the SHA-1 of the stored bytes), delays
 * every answer and counts how many requests it has in hand at once. The Downloader gets more
 * connections than any limit here, so only the fetcher's slots bound the concurrency. Background
 * downloads use at most half of the slots and pause while a reader's download runs and for the
 * default quiet time (50 ms) after it; the fetcher's slots are spied on to see when tickets are
 * granted and released.
 */
import t, { type Test } from 'tap';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { deflateSync } from 'node:zlib';
import { DiskCache } from '../../src/cache/disk-cache';
import { Downloader } from '../../src/net/downloader';
import { Fetcher, type ObjectRequest } from '../../src/fetch/fetcher';
import type { DownloadClass, DownloadSlots } from '../../src/fetch/download-slots';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { objectPath } from '../../src/format/object-name';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir } from '../helpers/repo';
import { startServer, testOptions, type TestServer } from '../net/servers';

const DELAY_MS = 100;
/** DownloadSlots' default quiet time after a demand download (the Fetcher does not set it). */
const QUIET_MS = 50;

interface Obj {
  readonly req: ObjectRequest;
  readonly plain: Buffer;
  readonly stored: Buffer;
  readonly rel: string;
}

/** `count` distinct objects of a few KB each, as stored on a server. */
function makeObjects(count: number, seed: number): Obj[] {
  return Array.from({ length: count }, (_, i) => {
    const plain = pseudoRandomBytes(2000 + ((i * 37) % 500), seed * 1000 + i);
    const stored = deflateSync(plain);
    const hash = ContentHash.compute(HashAlgorithm.Sha1, stored);
    return {
      plain,
      stored,
      rel: `/${objectPath(hash)}`,
      req: { hash, suffix: '', compressed: true, size: plain.length, description: `/obj${i}` },
    };
  });
}

interface DelayServer {
  readonly srv: TestServer;
  /** Requests in hand right now, and the most at once. */
  active: number;
  max: number;
  /** Object paths in the order requests arrived. */
  readonly arrived: string[];
  requestsFor(o: Obj): number;
}

/** Serves `objects` after DELAY_MS, counting concurrent requests. */
async function delayServer(t: Test, objects: Obj[]): Promise<DelayServer> {
  const byPath = new Map(objects.map((o) => [o.rel, o.stored]));
  const s: DelayServer = {
    srv: undefined as unknown as TestServer,
    active: 0,
    max: 0,
    arrived: [],
    requestsFor: (o) => s.arrived.filter((p) => p === o.rel).length,
  };
  (s as { srv: TestServer }).srv = await startServer(t, async (req, res) => {
    const path = (req.url ?? '').replace(/^https?:\/\/[^/]+/, '');
    s.arrived.push(path);
    s.active++;
    s.max = Math.max(s.max, s.active);
    let counted = true;
    const done = (): void => {
      if (counted) s.active--;
      counted = false;
    };
    res.on('close', done);
    res.on('finish', done);
    await sleep(DELAY_MS);
    const body = byPath.get(path);
    if (!body) {
      res.writeHead(404, { 'content-length': '0' }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  return s;
}

async function rig(t: Test, url: string, parallelDownloads?: number): Promise<{ fetcher: Fetcher; cache: DiskCache }> {
  const cache = new DiskCache(join(await tempDir(t), 'cache'));
  await cache.init();
  // More connections than any limit tested: the pool must not be what bounds the concurrency.
  const downloader = new Downloader(testOptions({ serverUrls: [url], connections: 100, timeoutS: 10, timeoutDirectS: 10 }));
  t.teardown(() => downloader.close());
  const fetcher = new Fetcher(cache, downloader, parallelDownloads === undefined ? {} : { parallelDownloads });
  return { fetcher, cache };
}

/** Waits until `cond` holds (polling), failing after a generous time. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await sleep(5);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Fetches tracked: `pending()` is how many have not settled yet. */
function tracked(ps: Promise<string>[]): { all: Promise<string[]>; pending: () => number } {
  let settled = 0;
  for (const p of ps) p.then(
    () => settled++,
    () => settled++,
  );
  return { all: Promise.all(ps), pending: () => ps.length - settled };
}

/** One ticket the fetcher took, as the spy saw it. */
interface TicketRecord {
  readonly id: number;
  /** The class it was taken as. */
  readonly taken: DownloadClass;
  /** Its class now (a promoted ticket: demand). */
  priority(): DownloadClass;
  /** performance.now() when `granted` resolved (seen by a callback registered at take). */
  grantedAt?: number;
  /** performance.now() just before its first release. */
  releasedAt?: number;
  /** Background tickets granted so far, synchronously at take / right after the first release. */
  bgGrantedAtTake?: number;
  bgGrantedAtRelease?: number;
}

/**
 * Wraps `slots.take` to record every ticket. `bgGranted()` counts background tickets granted so far,
 * synchronously from the slots' counts (valid as long as no background ticket leaves the line ungranted).
 */
function spySlots(slots: DownloadSlots): { tickets: TicketRecord[]; bgGranted: () => number } {
  const tickets: TicketRecord[] = [];
  let bgTaken = 0;
  const bgGranted = (): number => {
    const q = slots.counts().queued;
    return bgTaken - q.readahead - q.prefetch;
  };
  const take = slots.take.bind(slots);
  slots.take = (priority) => {
    if (priority !== 'demand') bgTaken++;
    const ticket = take(priority);
    const rec: TicketRecord = { id: tickets.length, taken: priority, priority: () => ticket.priority, bgGrantedAtTake: bgGranted() };
    tickets.push(rec);
    void ticket.granted.then(() => (rec.grantedAt = performance.now()));
    return {
      granted: ticket.granted,
      get priority() {
        return ticket.priority;
      },
      promote: () => ticket.promote(),
      release: () => {
        const first = rec.releasedAt === undefined;
        if (first) rec.releasedAt = performance.now();
        ticket.release();
        if (first) rec.bgGrantedAtRelease = bgGranted();
      },
    };
  };
  return { tickets, bgGranted };
}

t.test('40 concurrent demand fetches with parallelDownloads 4: never more than 4 at the server', async (t) => {
  const objects = makeObjects(40, 1);
  const s = await delayServer(t, objects);
  const { fetcher } = await rig(t, s.srv.url, 4);
  t.equal(fetcher.slots.limit, 4);
  const paths = await Promise.all(objects.map((o) => fetcher.fetch(o.req)));
  t.equal(s.max, 4, 'the server saw 4 requests at once, and never more');
  t.equal(s.arrived.length, 40, 'one request per object');
  for (let i = 0; i < objects.length; i += 13) t.same(await readFile(paths[i]!), objects[i]!.plain, `object ${i} is right`);
  t.equal(fetcher.counters.downloads, 40);
  t.equal(fetcher.counters.misses, 40);
  t.same(fetcher.slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'every slot given back');
});

t.test('the default is 16 downloads at once, 8 of them background', async (t) => {
  const objects = makeObjects(60, 2);
  const demanded = objects.slice(0, 40);
  const prefetched = objects.slice(40);
  const s = await delayServer(t, objects);
  const { fetcher } = await rig(t, s.srv.url);
  t.equal(fetcher.slots.limit, 16, 'default limit');
  t.equal(fetcher.slots.backgroundLimit, 8);
  await Promise.all(demanded.map((o) => fetcher.fetch(o.req)));
  t.equal(s.max, 16, 'the server saw 16 requests at once, and never more');
  t.equal(s.arrived.length, 40);

  s.max = 0;
  const half = [...prefetched.slice(0, 10).map((o) => fetcher.fetch({ ...o.req, priority: 'prefetch' })), ...prefetched.slice(10).map((o) => fetcher.fetch({ ...o.req, priority: 'readahead' }))];
  await Promise.all(half);
  t.equal(s.max, 8, 'background (readahead and prefetch together): 8 requests at once, never more');
  t.equal(s.arrived.length, 60);
  t.equal(fetcher.background.counters.prefetch.downloads + fetcher.background.counters.readahead.downloads, 20);
  t.same(fetcher.slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'every slot given back');
});

t.test('a demand fetch does not wait behind 60 queued prefetches', async (t) => {
  const objects = makeObjects(61, 3);
  const prefetched = objects.slice(0, 60);
  const demanded = objects[60]!;
  const s = await delayServer(t, objects);
  const { fetcher } = await rig(t, s.srv.url, 4);
  const spy = spySlots(fetcher.slots);
  const pre = tracked(prefetched.map((o) => fetcher.fetch({ ...o.req, priority: 'prefetch' })));
  // Wait until every prefetch holds its place in line (the fetcher looks into the cache first).
  await until(() => fetcher.slots.counts().running + fetcher.slots.counts().queued.prefetch === 60, '60 prefetch tickets');
  t.same(fetcher.slots.counts(), { running: 2, runningBackground: 2, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 58 } }, 'background limited to 2 of 4 slots');

  const path = await fetcher.fetch(demanded.req);
  const pendingAtDemand = pre.pending();
  const returnedAt = performance.now();
  const granted = fetcher.slots.counts();
  t.same(await readFile(path), demanded.plain, 'the demand fetch delivered the right bytes');
  const demandTickets = spy.tickets.filter((r) => r.taken === 'demand');
  t.equal(demandTickets.length, 1, 'one ticket taken as demand');
  const d = demandTickets[0]!;
  t.ok(d.grantedAt !== undefined && d.releasedAt !== undefined, 'granted and released');
  const before = d.bgGrantedAtTake!;
  t.ok(before >= 2 && before <= 4, `${before} prefetch downloads had started before the demand one`);
  t.equal(d.bgGrantedAtRelease, before, 'no prefetch download started while the demand download ran, nor when it ended');
  t.equal(60 - granted.queued.prefetch, before, '... nor right after it (quiet time)');
  t.equal(granted.runningDemand, 0);
  t.ok(pendingAtDemand >= 60 - before, `the demand fetch finished while ${pendingAtDemand} of 60 prefetches were unfinished (≥ ${60 - before})`);
  t.ok(pendingAtDemand >= 50, 'at least 50');
  const at = s.arrived.indexOf(demanded.rel);
  t.ok(at >= 0 && at <= 4, `its request reached the server among the first (request #${at + 1} of ${s.arrived.length})`);

  // The prefetches go on after the quiet time, with no other event to wake them.
  await until(() => spy.tickets.some((r) => r.taken === 'prefetch' && r.grantedAt !== undefined && r.grantedAt > d.releasedAt!), 'a prefetch after the demand download');
  const resumed = Math.min(...spy.tickets.filter((r) => r.taken === 'prefetch' && r.grantedAt! > d.releasedAt!).map((r) => r.grantedAt!));
  t.ok(resumed - d.releasedAt! >= QUIET_MS - 0.1, `the prefetches resumed ${(resumed - d.releasedAt!).toFixed(1)} ms after the demand download ended (≥ ${QUIET_MS})`);
  t.ok(resumed >= returnedAt, 'after the demand fetch returned');

  await pre.all;
  t.ok(s.max <= 3, `never more than 3 at once: 2 prefetches and the demand download (${s.max})`);
  t.equal(s.arrived.length, 61, 'one request per object');
  t.equal(fetcher.counters.misses, 1, 'prefetches are no misses');
  t.equal(fetcher.counters.hits, 0, 'nor hits');
  t.equal(fetcher.counters.downloads, 61);
  t.equal(fetcher.background.counters.prefetch.downloads, 60);
  t.equal(fetcher.background.uncovered, 0, 'no prefetch was started through prefetchStarting: no uncovered count');
});

t.test('a demand fetch of an object whose prefetch is still queued promotes it', async (t) => {
  const objects = makeObjects(60, 4);
  const s = await delayServer(t, objects);
  const { fetcher } = await rig(t, s.srv.url, 4);
  const spy = spySlots(fetcher.slots);
  const pre = tracked(objects.map((o) => fetcher.fetch({ ...o.req, priority: 'prefetch' })));
  await until(() => fetcher.slots.counts().queued.prefetch === 58, '58 queued prefetch tickets');
  const target = objects[50]!;
  t.equal(s.requestsFor(target), 0, 'object 50 is still waiting in line');

  const path = await fetcher.fetch(target.req);
  const pendingAtDemand = pre.pending();
  const after = fetcher.slots.counts();
  t.same(await readFile(path), target.plain, 'right bytes');
  t.ok(pendingAtDemand >= 40, `the promoted download finished while ${pendingAtDemand} prefetches were unfinished (≥ 40)`);
  t.equal(spy.tickets.filter((r) => r.taken === 'demand').length, 0, 'no ticket was taken as demand: the reader joined the prefetch');
  const promoted = spy.tickets.filter((r) => r.priority() === 'demand');
  t.equal(promoted.length, 1, 'one ticket promoted');
  t.equal(promoted[0]!.taken, 'prefetch', 'taken as prefetch');
  t.ok(promoted[0]!.bgGrantedAtTake! >= 2, 'it had waited in line behind the running prefetches');
  // The promoted download does not pause the others: right after it, both background slots are busy.
  t.same(after, { running: 2, runningBackground: 2, runningDemand: 0, queued: after.queued }, 'the prefetches go on: 2 running, no quiet time');
  t.equal(after.queued.demand, 0);
  t.equal(fetcher.background.counters.prefetch.late, 1, 'the reader was late: the prefetch was queued');
  t.equal(fetcher.counters.misses, 1);
  t.equal(fetcher.counters.shared, 1, 'the reader joined the prefetch download');

  await pre.all;
  t.ok(s.max <= 3, `never more than 3 at once: 2 prefetches and the promoted one (${s.max})`);
  // No quiet time anywhere: each prefetch after the first two started as soon as a download ended.
  const releases = spy.tickets.map((r) => r.releasedAt!).sort((a, b) => a - b);
  const grants = spy.tickets.filter((r) => r.priority() === 'prefetch').map((r) => r.grantedAt!).sort((a, b) => a - b);
  const gaps = grants.slice(2).map((g) => g - releases.filter((r) => r <= g).at(-1)!);
  t.equal(gaps.length, 57, '57 prefetches started after another download ended');
  t.ok(Math.max(...gaps) < QUIET_MS / 2, `each started right after a release (longest gap ${Math.max(...gaps).toFixed(1)} ms)`);
  t.equal(s.requestsFor(target), 1, 'one HTTP request for the promoted object in total');
  t.equal(s.arrived.length, 60, 'one request per object');
  const ledger = fetcher.background.counters.prefetch;
  t.equal(ledger.downloads, 60);
  t.equal(ledger.hits, 0, 'joining a download is late, not a hit');
  const unread = objects.filter((o) => o !== target).reduce((n, o) => n + o.stored.length, 0);
  t.equal(ledger.unreadBytes, unread, 'the promoted object is read; the other 59 are unread');
  t.equal(ledger.bytes, objects.reduce((n, o) => n + o.stored.length, 0), 'bytes as stored on the server');
});

t.test('the ledger: hits, unread bytes, uncovered reader downloads; background requests are no hits', async (t) => {
  const objects = makeObjects(7, 5);
  const [p0, p1, p2, p3, p4, other, early] = objects as [Obj, Obj, Obj, Obj, Obj, Obj, Obj];
  const s = await delayServer(t, objects);
  const { fetcher } = await rig(t, s.srv.url, 4);

  // Before any prefetch started, a reader's download is not "uncovered".
  await fetcher.fetch(early.req);
  t.equal(fetcher.background.uncovered, 0, 'no prefetch yet: not counted');
  t.equal(fetcher.counters.misses, 1);

  fetcher.background.prefetchStarting(); // what the Prefetcher does before it queues a profile
  const prefetched = [p0, p1, p2, p3, p4];
  await Promise.all(prefetched.map((o) => fetcher.fetch({ ...o.req, priority: 'prefetch' })));
  const ledger = fetcher.background.counters.prefetch;
  t.equal(ledger.downloads, 5);
  t.equal(ledger.bytes, prefetched.reduce((n, o) => n + o.stored.length, 0));
  t.equal(ledger.unreadBytes, ledger.bytes, 'nothing read yet');
  t.same([fetcher.counters.hits, fetcher.counters.misses], [0, 1], 'prefetch downloads count as neither hits nor misses');

  // A background request for an object already cached is no hit either, and no ledger hit.
  await fetcher.fetch({ ...p0.req, priority: 'prefetch' });
  await fetcher.fetch({ ...early.req, priority: 'readahead' });
  t.same([fetcher.counters.hits, fetcher.counters.misses], [0, 1], 'background cache lookups are no hits');
  t.equal(ledger.hits, 0);

  for (const o of [p0, p2, p4]) t.same(await readFile(await fetcher.fetch(o.req)), o.plain, `${o.req.description} read`);
  t.equal(ledger.hits, 3, 'three prefetched objects read: 3 hits');
  t.equal(ledger.hitBytes, p0.stored.length + p2.stored.length + p4.stored.length);
  t.equal(ledger.unreadBytes, p1.stored.length + p3.stored.length, 'unread bytes: the two never read');
  t.equal(fetcher.counters.hits, 3);
  await fetcher.fetch(p0.req);
  t.equal(ledger.hits, 3, 'a second read of the same object is no new prefetch hit');
  t.equal(fetcher.counters.hits, 4, '... but a cache hit');

  const before = s.arrived.length;
  await fetcher.fetch(other.req);
  t.equal(s.arrived.length, before + 1, 'the never-prefetched object was downloaded');
  t.equal(fetcher.background.uncovered, 1, 'a reader download no prefetch covered');
  t.equal(fetcher.counters.misses, 2);
  t.equal(ledger.late, 0);
  t.equal(fetcher.background.counters.readahead.downloads, 0, 'no readahead downloads');
});

t.test('a prefetched object evicted before it was read is no hit when a reader downloads it again', async (t) => {
  const objects = makeObjects(1, 6);
  const x = objects[0]!;
  const s = await delayServer(t, objects);
  const { fetcher, cache } = await rig(t, s.srv.url, 4);
  fetcher.background.prefetchStarting();
  await fetcher.fetch({ ...x.req, priority: 'prefetch' });
  await rm(cache.pathOf(x.req.hash)); // what the quota manager's eviction does
  await fetcher.fetch(x.req); // the reader downloads it again
  await fetcher.fetch(x.req); // and then finds it in the cache
  t.equal(s.requestsFor(x), 2, 'downloaded twice');
  t.equal(fetcher.background.uncovered, 1, 'the reader download was not covered');
  const ledger = fetcher.background.counters.prefetch;
  t.equal(ledger.hits, 0, 'the prefetch download was never used: no hit');
  t.equal(ledger.hitBytes, 0);
  t.equal(ledger.unreadBytes, x.stored.length, 'its bytes stay unread (wasted)');
});
