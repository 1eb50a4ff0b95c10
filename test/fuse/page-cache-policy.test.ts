/**
 * PageCachePolicy without a mount: which opens of a path share the kernel's page cache, and the
 * sizes reported while handles of an older revision are open. The kernel side is tested end to
 * end in test/client/live-update.test.ts.
 */
import t from 'tap';
import { PageCachePolicy, PastEndOrdering } from '../../src/fuse/page-cache-policy';

const X = { key: 'x', size: 1000 };
const Y = { key: 'y', size: 400 };
const Z = { key: 'z', size: 2000 };
const CACHED_NEW = { directIo: false, keepCache: false };
const CACHED_KEEP = { directIo: false, keepCache: true };
const DIRECT = { directIo: true, keepCache: true };
const policy = () => new PageCachePolicy({ attrTimeoutMs: 1000 }); // direct window: 2 s

t.test('one revision: the first open drops stale pages, later opens keep them', async (t) => {
  const p = policy();
  t.same(p.open('/f', 1, X, 0), CACHED_NEW);
  t.same(p.open('/f', 2, X, 10), CACHED_KEEP);
  p.release(1, 20);
  p.release(2, 20);
  t.same(p.open('/f', 3, X, 100_000), CACHED_KEEP, 'closed long ago, same bytes');
  t.same(p.open('/g', 4, Y, 0), CACHED_NEW, 'paths are independent');
});

t.test('new content while an old handle is open: direct I/O, and the larger size is reported', async (t) => {
  const p = policy();
  p.open('/f', 1, X, 0);
  t.ok(p.isPageCached(1));
  t.same(p.open('/f', 2, Y, 10), DIRECT, 'keeps the old handle’s pages, never fills them');
  t.notOk(p.isPageCached(2));
  t.equal(p.reportedSize('/f', Y.size), X.size, 'shorter new file: the old size');
  t.equal(p.reportedSize('/f', Z.size), Z.size, 'longer new file: the new size');
  t.same(p.open('/f', 3, X, 20), { directIo: false, keepCache: false }, 'the old content again: cached, but pages dropped');
  p.release(1, 30);
  p.release(3, 30);
  t.equal(p.reportedSize('/f', Y.size), Y.size, 'honest once no cached handle is open');
  t.same(p.open('/f', 4, Y, 1000), DIRECT, 'inside the direct window after the close');
  t.same(p.open('/f', 5, Y, 2100), CACHED_NEW, 'after it: cached, old pages dropped');
  t.same(p.open('/f', 6, Y, 2200), CACHED_KEEP, 'the direct handles read the same bytes: pages kept');
  t.same(p.open('/f', 7, Z, 2300), DIRECT, 'the next revision, while Y is open');
  p.release(5, 2400);
  p.release(6, 2400);
  p.release(7, 2400);
  t.same(p.open('/f', 8, Z, 5000), CACHED_NEW);
  t.same(p.open('/f', 9, Z, 5001), { directIo: false, keepCache: false }, 'direct handles of Y (2, 4) may map Y into the cache: not kept');
  p.release(2, 5002);
  p.release(4, 5002);
  t.same(p.open('/f', 10, Z, 5003), { directIo: false, keepCache: false }, 'the first cached open after them drops once more');
  t.same(p.open('/f', 11, Z, 5004), CACHED_KEEP, 'then pages are kept again');
});

t.test('a direct handle of the content that becomes cached does not block keeping pages', async (t) => {
  const p = policy();
  p.open('/f', 1, X, 0);
  p.open('/f', 2, Y, 10); // direct
  p.release(1, 20);
  t.same(p.open('/f', 3, Y, 5000), CACHED_NEW);
  t.same(p.open('/f', 4, Y, 5001), CACHED_KEEP, 'handle 2 reads the same bytes as the cache holds');
});

t.test('idle paths are forgotten beyond the limit, never busy ones', async (t) => {
  const p = new PageCachePolicy({ attrTimeoutMs: 1000, maxIdlePaths: 2 });
  p.open('/busy', 1, X, 0);
  p.open('/a', 2, X, 0);
  p.release(2, 0);
  p.open('/b', 3, X, 10_000);
  p.release(3, 10_000);
  p.open('/c', 4, X, 20_000);
  p.release(4, 20_000);
  t.same(p.open('/busy', 5, Y, 30_000), DIRECT, '/busy still known');
  t.same(p.open('/a', 6, X, 30_000), CACHED_NEW, '/a was forgotten: its pages are dropped');
});

t.test('a read past the end waits for the handle’s reads across the end', async (t) => {
  const o = new PastEndOrdering();
  const order: string[] = [];
  let finish!: () => void;
  const before = o.acrossEnd(1, () => new Promise<void>((r) => (finish = r)).then(() => order.push('across the end')));
  const past = o.pastEnd(1).then(() => order.push('past end'));
  const other = o.pastEnd(2).then(() => order.push('other handle'));
  await new Promise((r) => setTimeout(r, 60));
  t.same(order, ['other handle'], 'another handle is not held up');
  finish();
  await Promise.all([before, past, other]);
  t.same(order, ['other handle', 'across the end', 'past end']);
});
