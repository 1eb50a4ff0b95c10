/**
 * DownloadSlots (src/fetch/download-slots.ts): at most `limit` tickets granted at once; demand before
 * readahead before prefetch; background classes never take the last quarter of the slots (all of
 * them when there is only one); promote, release of waiting tickets, double release, bad limits.
 */
import t from 'tap';
import { setImmediate as tick } from 'node:timers/promises';
import { DownloadSlots, type DownloadClass, type SlotTicket } from '../../src/fetch/download-slots';

/** A ticket with a flag that turns true once its `granted` promise resolved. */
interface Watched {
  readonly ticket: SlotTicket;
  readonly name: string;
  isGranted(): boolean;
}

/** Takes a ticket and notes, in `order`, when it is granted. */
function take(slots: DownloadSlots, priority: DownloadClass, name: string, order?: string[]): Watched {
  const ticket = slots.take(priority);
  let granted = false;
  void ticket.granted.then(() => {
    granted = true;
    order?.push(name);
  });
  return { ticket, name, isGranted: () => granted };
}

/** Lets the promise callbacks of granted tickets run. */
async function settle(): Promise<void> {
  await tick();
}

const grantedCount = (ws: Watched[]): number => ws.filter((w) => w.isGranted()).length;

t.test('the limit is respected; a release lets the next one in', async (t) => {
  const slots = new DownloadSlots(3);
  const ws = Array.from({ length: 10 }, (_, i) => take(slots, 'demand', `d${i}`));
  await settle();
  t.equal(grantedCount(ws), 3, 'three of ten granted');
  t.same(slots.counts(), { running: 3, runningBackground: 0, queued: { demand: 7, readahead: 0, prefetch: 0 } });
  t.ok(ws[0]!.isGranted() && ws[1]!.isGranted() && ws[2]!.isGranted(), 'first come, first served within a class');
  ws[0]!.ticket.release();
  await settle();
  t.equal(grantedCount(ws), 4, 'one released, one more granted');
  t.ok(ws[3]!.isGranted(), 'the next in line');
  t.equal(slots.counts().running, 3, 'still three running');
  for (const w of ws) w.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 0, runningBackground: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'all released: nothing running or queued');
});

t.test('demand is served before readahead, readahead before prefetch', async (t) => {
  for (const limit of [1, 4]) {
    const slots = new DownloadSlots(limit);
    const order: string[] = [];
    // Fill every slot with demand tickets, then queue a mix.
    const holders = Array.from({ length: limit }, (_, i) => take(slots, 'demand', `h${i}`, order));
    await settle();
    const mix: [DownloadClass, string][] = [
      ['prefetch', 'p1'],
      ['readahead', 'r1'],
      ['demand', 'd1'],
      ['prefetch', 'p2'],
      ['readahead', 'r2'],
      ['demand', 'd2'],
    ];
    const queued = mix.map(([c, n]) => take(slots, c, n, order));
    await settle();
    t.equal(grantedCount(queued), 0, `limit ${limit}: nothing of the mix granted while all slots are held`);
    // Free the slots one at a time, each new holder releasing right after its grant.
    order.length = 0;
    for (const h of holders) h.ticket.release();
    for (let i = 0; i < 12 && order.length < mix.length; i++) {
      await settle();
      for (const w of queued) if (w.isGranted()) w.ticket.release();
    }
    if (limit === 1) {
      t.same(order, ['d1', 'd2', 'r1', 'r2', 'p1', 'p2'], 'limit 1: strictly demand, readahead, prefetch, each in arrival order');
    } else {
      t.same(order.slice(0, 2).sort(), ['d1', 'd2'], `limit ${limit}: demand first`);
      t.ok(order.indexOf('r1') < order.indexOf('p1') && order.indexOf('r2') < order.indexOf('p2'), `limit ${limit}: readahead before prefetch (${order.join(' ')})`);
      t.equal(order.length, 6, 'all granted eventually');
    }
  }
});

t.test('the background classes never take the last quarter of the slots', async (t) => {
  t.equal(new DownloadSlots(16).backgroundLimit, 12, 'limit 16: 12');
  t.equal(new DownloadSlots(8).backgroundLimit, 6, 'limit 8: 6');
  t.equal(new DownloadSlots(4).backgroundLimit, 3, 'limit 4: 3');
  t.equal(new DownloadSlots(3).backgroundLimit, 2, 'limit 3: one kept for demand');
  t.equal(new DownloadSlots(2).backgroundLimit, 1, 'limit 2: one kept for demand');
  t.equal(new DownloadSlots(1).backgroundLimit, 1, 'limit 1: background may use the only slot');

  const slots = new DownloadSlots(16);
  const prefetch = Array.from({ length: 100 }, (_, i) => take(slots, 'prefetch', `p${i}`));
  await settle();
  t.equal(grantedCount(prefetch), 12, '12 of 100 prefetch tickets granted');
  t.same(slots.counts(), { running: 12, runningBackground: 12, queued: { demand: 0, readahead: 0, prefetch: 88 } });
  const readahead = take(slots, 'readahead', 'r');
  await settle();
  t.notOk(readahead.isGranted(), 'readahead is background too: it waits');

  const demand = take(slots, 'demand', 'd');
  t.equal(slots.counts().running, 13, 'a demand ticket is granted at once (synchronously in take)');
  await settle();
  t.ok(demand.isGranted(), 'the demand ticket resolved while 88 prefetch tickets wait');
  const more = Array.from({ length: 4 }, (_, i) => take(slots, 'demand', `d${i}`));
  await settle();
  t.equal(grantedCount(more), 3, 'demand fills the reserved quarter up to the limit');
  t.equal(slots.counts().running, 16);
  t.notOk(more[3]!.isGranted(), 'the 17th waits');

  // A prefetch finishing frees a slot: the waiting demand ticket gets it, not a prefetch one.
  prefetch[0]!.ticket.release();
  await settle();
  t.ok(more[3]!.isGranted(), 'the waiting demand ticket takes the freed slot');
  t.equal(grantedCount(prefetch), 12, 'no new prefetch ticket granted');
  // Demand tickets finishing do not let background exceed 12.
  demand.ticket.release();
  for (const w of more) w.ticket.release();
  await settle();
  t.equal(slots.counts().runningBackground, 12, 'background back to 12, not more');
  t.ok(readahead.isGranted(), 'readahead went before the queued prefetch');
  t.equal(slots.counts().running, 12, 'the demand slots stay free');
  for (const w of [...prefetch, readahead]) w.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 0, runningBackground: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } });
});

t.test('limit 1: background may use the single slot; demand waits for it, then goes first', async (t) => {
  const slots = new DownloadSlots(1);
  const p1 = take(slots, 'prefetch', 'p1');
  const p2 = take(slots, 'prefetch', 'p2');
  await settle();
  t.ok(p1.isGranted(), 'a prefetch ticket gets the only slot');
  t.notOk(p2.isGranted());
  const d = take(slots, 'demand', 'd');
  await settle();
  t.notOk(d.isGranted(), 'demand waits for the running prefetch');
  p1.ticket.release();
  await settle();
  t.ok(d.isGranted(), 'then demand goes before the queued prefetch');
  t.notOk(p2.isGranted());
  d.ticket.release();
  await settle();
  t.ok(p2.isGranted(), 'and the prefetch after it');
  p2.ticket.release();
  t.equal(slots.counts().running, 0);
});

t.test('promote moves a waiting ticket ahead of the other background tickets', async (t) => {
  const slots = new DownloadSlots(1);
  const order: string[] = [];
  const holder = take(slots, 'demand', 'holder', order);
  await settle();
  const a = take(slots, 'prefetch', 'a', order);
  const b = take(slots, 'prefetch', 'b', order);
  const c = take(slots, 'prefetch', 'c', order);
  const r = take(slots, 'readahead', 'r', order);
  const released = new Set<string>();
  c.ticket.promote();
  t.equal(c.ticket.priority, 'demand', 'the promoted ticket is demand now');
  t.equal(a.ticket.priority, 'prefetch', 'the others keep theirs');
  t.same(slots.counts().queued, { demand: 1, readahead: 1, prefetch: 2 });
  c.ticket.promote(); // twice: no-op
  t.same(slots.counts().queued, { demand: 1, readahead: 1, prefetch: 2 }, 'a second promote changes nothing');
  for (let i = 0; i < 6; i++) {
    await settle();
    const running = [holder, a, b, c, r].find((w) => w.isGranted() && !released.has(w.name));
    if (running) {
      released.add(running.name);
      running.ticket.release();
    }
  }
  t.same(order, ['holder', 'c', 'r', 'a', 'b'], 'promoted prefetch first, then readahead, then the other prefetches');

  // Promoting a granted ticket changes nothing (its slot stays counted as background).
  const s2 = new DownloadSlots(4);
  const g = take(s2, 'prefetch', 'g');
  await settle();
  t.ok(g.isGranted());
  g.ticket.promote();
  t.equal(g.ticket.priority, 'prefetch', 'a granted ticket is not promoted');
  t.equal(s2.counts().runningBackground, 1);
  g.ticket.release();
  t.same(s2.counts(), { running: 0, runningBackground: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'its release balances the counts');
});

t.test('promote lets a background ticket use the slots kept for demand', async (t) => {
  const slots = new DownloadSlots(4); // background limit 3
  const running = Array.from({ length: 3 }, (_, i) => take(slots, 'prefetch', `p${i}`));
  const waiting = take(slots, 'prefetch', 'w');
  await settle();
  t.equal(grantedCount(running), 3);
  t.notOk(waiting.isGranted(), 'the fourth prefetch waits although a slot is free');
  waiting.ticket.promote();
  await settle();
  t.ok(waiting.isGranted(), 'promoted: it takes the free (demand) slot at once');
  t.same(slots.counts(), { running: 4, runningBackground: 3, queued: { demand: 0, readahead: 0, prefetch: 0 } });
  waiting.ticket.release();
  t.same(slots.counts(), { running: 3, runningBackground: 3, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'released as demand');
  for (const w of running) w.ticket.release();
});

t.test('release of a waiting ticket removes it from the line', async (t) => {
  const slots = new DownloadSlots(1);
  const holder = take(slots, 'demand', 'holder');
  const a = take(slots, 'prefetch', 'a');
  const b = take(slots, 'prefetch', 'b');
  const d = take(slots, 'demand', 'd');
  await settle();
  a.ticket.release();
  d.ticket.release();
  t.same(slots.counts(), { running: 1, runningBackground: 0, queued: { demand: 0, readahead: 0, prefetch: 1 } }, 'two left the line');
  holder.ticket.release();
  await settle();
  t.ok(b.isGranted(), 'the remaining one is next');
  t.notOk(a.isGranted(), 'the released waiting ticket is never granted');
  t.notOk(d.isGranted(), 'nor the released demand ticket');
  t.equal(slots.counts().running, 1, 'only b runs');
  a.ticket.promote(); // after release: no-op, must not re-queue it
  t.same(slots.counts().queued, { demand: 0, readahead: 0, prefetch: 0 }, 'promote after release does not re-queue');
  b.ticket.release();
  t.equal(slots.counts().running, 0);
});

t.test('a second release is harmless', async (t) => {
  const slots = new DownloadSlots(2);
  const x = take(slots, 'demand', 'x');
  const y = take(slots, 'demand', 'y');
  const z = take(slots, 'demand', 'z');
  const w = take(slots, 'demand', 'w');
  await settle();
  x.ticket.release();
  x.ticket.release();
  x.ticket.release();
  await settle();
  t.ok(z.isGranted(), 'the released slot went to the next');
  t.notOk(w.isGranted(), 'repeated releases did not free more slots');
  t.same(slots.counts(), { running: 2, runningBackground: 0, queued: { demand: 1, readahead: 0, prefetch: 0 } });
  // Releasing a waiting ticket twice does not remove another from the line.
  const v = take(slots, 'demand', 'v');
  v.ticket.release();
  v.ticket.release();
  t.equal(slots.counts().queued.demand, 1, 'w still queued');
  for (const o of [y, z]) {
    o.ticket.release();
    o.ticket.release();
  }
  await settle();
  t.ok(w.isGranted());
  w.ticket.release();
  w.ticket.release();
  t.same(slots.counts(), { running: 0, runningBackground: 0, queued: { demand: 0, readahead: 0, prefetch: 0 } }, 'counts never go negative');
  // A background ticket released twice does not drive runningBackground down.
  const s2 = new DownloadSlots(4);
  const p = take(s2, 'prefetch', 'p');
  const q = take(s2, 'prefetch', 'q');
  await settle();
  p.ticket.release();
  p.ticket.release();
  t.equal(s2.counts().runningBackground, 1, 'background count balanced');
  q.ticket.release();
});

t.test('a bad limit throws', async (t) => {
  for (const limit of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new DownloadSlots(limit), RangeError, `limit ${limit}`);
    t.throws(() => new DownloadSlots(limit), /is not a positive integer/);
  }
  t.doesNotThrow(() => new DownloadSlots(1), 'limit 1 is fine');
});
