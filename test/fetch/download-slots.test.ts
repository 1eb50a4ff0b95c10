/**
 * DownloadSlots (src/fetch/download-slots.ts): at most `limit` tickets granted at once; demand before
 * readahead before prefetch; background classes use at most half of the slots (the only one when
 * there is one); no new background ticket while a ticket taken as demand runs, nor within `quietMs`
 * after (a timer dispatches again when the quiet time ends); promote (waiting: goes first, granted:
 * frees a background slot; neither pauses the background), release of waiting tickets, double
 * release, bad limits.
 */
import t from 'tap';
import { setImmediate as tick, setTimeout as sleep } from 'node:timers/promises';
import { DownloadSlots, type DownloadClass, type SlotTicket } from '../../src/fetch/download-slots';

/** A ticket with a flag that turns true once its `granted` promise resolved. */
interface Watched {
  readonly ticket: SlotTicket;
  readonly name: string;
  isGranted(): boolean;
  /** performance.now() when the grant was seen (undefined while waiting). */
  grantedAt(): number | undefined;
}

/** Takes a ticket and notes, in `order`, when it is granted. */
function take(slots: DownloadSlots, priority: DownloadClass, name: string, order?: string[], pausing?: boolean): Watched {
  const ticket = pausing === undefined ? slots.take(priority) : slots.take(priority, pausing);
  let at: number | undefined;
  void ticket.granted.then(() => {
    at = performance.now();
    order?.push(name);
  });
  return { ticket, name, isGranted: () => at !== undefined, grantedAt: () => at };
}

/** Lets the promise callbacks of granted tickets run. */
async function settle(): Promise<void> {
  await tick();
}

const grantedCount = (ws: Watched[]): number => ws.filter((w) => w.isGranted()).length;

const EMPTY = { demand: 0, readahead: 0, prefetch: 0 };
/** No quiet time: for the tests that are not about it. */
const NO_QUIET = { quietMs: 0 };

t.test('the limit is respected; a release lets the next one in', async (t) => {
  const slots = new DownloadSlots(3, NO_QUIET);
  const ws = Array.from({ length: 10 }, (_, i) => take(slots, 'demand', `d${i}`));
  await settle();
  t.equal(grantedCount(ws), 3, 'three of ten granted');
  t.same(slots.counts(), { running: 3, runningBackground: 0, runningDemand: 3, queued: { demand: 7, readahead: 0, prefetch: 0 } });
  t.ok(ws[0]!.isGranted() && ws[1]!.isGranted() && ws[2]!.isGranted(), 'first come, first served within a class');
  ws[0]!.ticket.release();
  await settle();
  t.equal(grantedCount(ws), 4, 'one released, one more granted');
  t.ok(ws[3]!.isGranted(), 'the next in line');
  t.equal(slots.counts().running, 3, 'still three running');
  for (const w of ws) w.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY }, 'all released: nothing running or queued');
});

t.test('demand is served before readahead, readahead before prefetch', async (t) => {
  for (const limit of [1, 4]) {
    const slots = new DownloadSlots(limit, NO_QUIET);
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
      // Background waits for both demand tickets; then two background slots: both readahead, then the prefetches.
      t.same(order, ['d1', 'd2', 'r1', 'r2', 'p1', 'p2'], `limit ${limit}: the exact order`);
    }
    t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY }, `limit ${limit}: all released`);
  }
});

t.test('the background classes use at most half of the slots', async (t) => {
  const limits: [number, number][] = [
    [16, 8],
    [8, 4],
    [4, 2],
    [3, 1],
    [2, 1],
    [1, 1],
  ];
  for (const [limit, background] of limits) t.equal(new DownloadSlots(limit).backgroundLimit, background, `limit ${limit}: ${background}`);

  const slots = new DownloadSlots(16, NO_QUIET);
  const prefetch = Array.from({ length: 100 }, (_, i) => take(slots, 'prefetch', `p${i}`));
  await settle();
  t.equal(grantedCount(prefetch), 8, '8 of 100 prefetch tickets granted');
  t.same(slots.counts(), { running: 8, runningBackground: 8, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 92 } });
  const readahead = take(slots, 'readahead', 'r');
  await settle();
  t.notOk(readahead.isGranted(), 'readahead is background too: it waits');

  const demand = take(slots, 'demand', 'd');
  t.equal(slots.counts().running, 9, 'a demand ticket is granted at once (synchronously in take)');
  await settle();
  t.ok(demand.isGranted(), 'the demand ticket resolved while 92 prefetch tickets wait');
  const more = Array.from({ length: 8 }, (_, i) => take(slots, 'demand', `d${i}`));
  await settle();
  t.equal(grantedCount(more), 7, 'demand fills the other half up to the limit');
  t.same(slots.counts(), { running: 16, runningBackground: 8, runningDemand: 8, queued: { demand: 1, readahead: 1, prefetch: 92 } });
  t.notOk(more[7]!.isGranted(), 'the 17th waits');

  // A prefetch finishing frees a slot: the waiting demand ticket gets it, not a prefetch one.
  prefetch[0]!.ticket.release();
  await settle();
  t.ok(more[7]!.isGranted(), 'the waiting demand ticket takes the freed slot');
  t.equal(grantedCount(prefetch), 8, 'no new prefetch ticket granted');
  // Another prefetch finishing while demand runs: a background slot and a slot are free, but background waits.
  prefetch[1]!.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 15, runningBackground: 6, runningDemand: 9, queued: { demand: 0, readahead: 1, prefetch: 92 } }, 'no background ticket starts while demand runs');
  t.notOk(readahead.isGranted(), 'not even readahead');
  // Demand tickets finishing do not let background exceed 8.
  demand.ticket.release();
  for (const w of more.slice(0, 4)) w.ticket.release();
  await settle();
  t.equal(slots.counts().runningBackground, 6, 'four demand tickets still run: background still waits');
  for (const w of more) w.ticket.release();
  await settle();
  t.equal(slots.counts().runningBackground, 8, 'background back to 8, not more');
  t.ok(readahead.isGranted(), 'readahead went before the queued prefetch');
  t.equal(grantedCount(prefetch), 9, 'and one more prefetch');
  t.same(slots.counts(), { running: 8, runningBackground: 8, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 91 } }, 'the other half stays free');
  for (const w of [...prefetch, readahead]) w.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('limit 1: background may use the single slot; demand waits for it, then goes first', async (t) => {
  const slots = new DownloadSlots(1, NO_QUIET);
  const p1 = take(slots, 'prefetch', 'p1');
  const p2 = take(slots, 'prefetch', 'p2');
  await settle();
  t.ok(p1.isGranted(), 'a prefetch ticket gets the only slot');
  t.notOk(p2.isGranted());
  const d = take(slots, 'demand', 'd');
  await settle();
  t.notOk(d.isGranted(), 'demand waits for the running prefetch');
  t.same(slots.counts(), { running: 1, runningBackground: 1, runningDemand: 0, queued: { demand: 1, readahead: 0, prefetch: 1 } });
  p1.ticket.release();
  await settle();
  t.ok(d.isGranted(), 'then demand goes before the queued prefetch');
  t.notOk(p2.isGranted());
  d.ticket.release();
  await settle();
  t.ok(p2.isGranted(), 'and the prefetch after it (no quiet time)');
  p2.ticket.release();
  t.equal(slots.counts().running, 0);
});

t.test('background waits while a demand ticket runs, and for quietMs after (injected clock, real timer)', async (t) => {
  let clock = 1000;
  const slots = new DownloadSlots(4, { quietMs: 30, now: () => clock });
  const d1 = take(slots, 'demand', 'd1');
  const p = take(slots, 'prefetch', 'p');
  const r = take(slots, 'readahead', 'r');
  await settle();
  t.ok(d1.isGranted(), 'demand granted');
  t.notOk(p.isGranted() || r.isGranted(), 'no background ticket while a demand ticket runs, although 3 slots are free');
  t.same(slots.counts(), { running: 1, runningBackground: 0, runningDemand: 1, queued: { demand: 0, readahead: 1, prefetch: 1 } });

  // Two demand tickets: the end of one does not end the pause.
  const d2 = take(slots, 'demand', 'd2');
  clock += 500; // long past any quiet time
  d1.ticket.release();
  d1.ticket.release(); // a second release must not end the pause either
  await settle();
  t.ok(d2.isGranted());
  t.notOk(p.isGranted() || r.isGranted(), 'another demand ticket still runs: background still waits');

  clock += 100;
  d2.ticket.release(); // the last demand ticket ends at 1600
  const releasedAt = performance.now();
  await settle();
  t.notOk(p.isGranted() || r.isGranted(), 'quiet time: background waits');
  clock += 29;
  const q = take(slots, 'prefetch', 'q'); // dispatches: 1 ms of quiet time left
  await settle();
  t.notOk(p.isGranted() || r.isGranted() || q.isGranted(), '29 of 30 ms: still quiet');
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: { demand: 0, readahead: 1, prefetch: 2 } });

  // A demand ticket is not held back by the quiet time; it pauses the background again.
  const d3 = take(slots, 'demand', 'd3');
  await settle();
  t.ok(d3.isGranted(), 'demand granted during the quiet time');
  clock += 40;
  d3.ticket.release(); // quiet again from 1669 to 1699
  await settle();
  t.notOk(p.isGranted() || r.isGranted(), 'a new quiet time after the new demand ticket');

  // The injected clock rules: real time passing does not end the quiet time.
  await sleep(80);
  t.notOk(p.isGranted() || r.isGranted() || q.isGranted(), 'the timer fired, but on the injected clock the quiet time is not over');

  // The quiet time ends without any take or release: the timer dispatches again.
  clock += 30;
  const quietEnd = performance.now();
  for (let i = 0; i < 200 && !(r.isGranted() && p.isGranted()); i++) await sleep(5);
  t.ok(r.isGranted() && p.isGranted(), 'granted when the timer fired after the quiet time');
  t.notOk(q.isGranted(), 'background limit 2: the second prefetch waits');
  t.ok(r.grantedAt()! <= p.grantedAt()!, 'readahead before prefetch');
  t.ok(r.grantedAt()! - quietEnd >= 0 && r.grantedAt()! - releasedAt >= 80, 'not before the timer fired');
  t.same(slots.counts(), { running: 2, runningBackground: 2, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 1 } });
  for (const w of [p, r, q]) w.ticket.release();
  await settle();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('the quiet time: a real timer re-dispatches when it ends', async (t) => {
  // Real clock, quietMs 30: the quiet time ends on its own.
  const slots = new DownloadSlots(4, { quietMs: 30 });
  const d = take(slots, 'demand', 'd');
  const p = take(slots, 'prefetch', 'p');
  await settle();
  t.notOk(p.isGranted());
  d.ticket.release();
  const end = performance.now();
  await settle();
  t.notOk(p.isGranted(), 'not granted right after the demand ticket ended');
  for (let i = 0; i < 200 && !p.isGranted(); i++) await sleep(5);
  t.ok(p.isGranted(), 'granted after the quiet time, with no take or release');
  t.ok(p.grantedAt()! - end >= 29, `not before the quiet time ended (${(p.grantedAt()! - end).toFixed(1)} ms)`);
  p.ticket.release();
});

t.test('the default quiet time is 50 ms', async (t) => {
  let clock = 0;
  const slots = new DownloadSlots(4, { now: () => clock });
  const d = take(slots, 'demand', 'd');
  d.ticket.release(); // ends at 0
  clock = 49;
  const p = take(slots, 'prefetch', 'p');
  await settle();
  t.notOk(p.isGranted(), '49 ms after: waits');
  clock = 50;
  const q = take(slots, 'prefetch', 'q'); // dispatches
  await settle();
  t.ok(p.isGranted() && q.isGranted(), '50 ms after: granted, in order');
  for (const w of [p, q]) w.ticket.release();
  // A background ticket alone (no demand ever) is granted at once.
  const fresh = new DownloadSlots(4, { now: () => 0 });
  const f = take(fresh, 'prefetch', 'f');
  await settle();
  t.ok(f.isGranted(), 'no demand yet: no quiet time');
  f.ticket.release();
});

t.test('promote moves a waiting ticket ahead of the other background tickets', async (t) => {
  const slots = new DownloadSlots(1, NO_QUIET);
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
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('promote lets a background ticket use the other half of the slots', async (t) => {
  const slots = new DownloadSlots(4, NO_QUIET); // background limit 2
  const running = Array.from({ length: 2 }, (_, i) => take(slots, 'prefetch', `p${i}`));
  const waiting = take(slots, 'prefetch', 'w');
  await settle();
  t.equal(grantedCount(running), 2);
  t.notOk(waiting.isGranted(), 'the third prefetch waits although two slots are free');
  waiting.ticket.promote();
  await settle();
  t.ok(waiting.isGranted(), 'promoted: it takes a free slot at once');
  t.same(slots.counts(), { running: 3, runningBackground: 2, runningDemand: 1, queued: EMPTY });
  waiting.ticket.release();
  t.same(slots.counts(), { running: 2, runningBackground: 2, runningDemand: 0, queued: EMPTY }, 'released as demand');
  for (const w of running) w.ticket.release();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('a promoted (late) ticket does not pause the other background tickets', async (t) => {
  let clock = 0;
  // A long quiet time: if the promoted ticket paused the background, nothing would start for 10 s.
  const slots = new DownloadSlots(4, { quietMs: 10_000, now: () => clock });
  const ps = Array.from({ length: 6 }, (_, i) => take(slots, 'prefetch', `p${i}`));
  await settle();
  t.equal(grantedCount(ps), 2, 'background limit 2');
  ps[5]!.ticket.promote(); // a reader waits for the last one in line
  await settle();
  t.ok(ps[5]!.isGranted(), 'the promoted ticket is granted at once');
  t.same(slots.counts(), { running: 3, runningBackground: 2, runningDemand: 1, queued: { demand: 0, readahead: 0, prefetch: 3 } });
  clock += 1;
  ps[0]!.ticket.release();
  await settle();
  t.ok(ps[2]!.isGranted(), 'a prefetch finishing while the promoted one runs: the next prefetch starts at once');
  t.same(slots.counts(), { running: 3, runningBackground: 2, runningDemand: 1, queued: { demand: 0, readahead: 0, prefetch: 2 } });
  clock += 1;
  ps[5]!.ticket.release(); // the promoted ticket ends: no quiet time after it
  ps[1]!.ticket.release();
  await settle();
  t.ok(ps[3]!.isGranted(), 'the promoted ticket ended: no quiet time, the next prefetch starts at once');
  t.notOk(ps[4]!.isGranted(), 'background limit 2 still holds');
  t.same(slots.counts(), { running: 2, runningBackground: 2, runningDemand: 0, queued: { demand: 0, readahead: 0, prefetch: 1 } });
  // Whereas a ticket taken as demand does pause it (the same slots, the same clock).
  const d = take(slots, 'demand', 'd');
  ps[2]!.ticket.release();
  await settle();
  t.notOk(ps[4]!.isGranted(), 'a ticket taken as demand pauses the background');
  d.ticket.release();
  await settle();
  t.notOk(ps[4]!.isGranted(), '... and the quiet time follows it');
  clock += 10_000;
  ps[3]!.ticket.release(); // dispatches after the quiet time
  await settle();
  t.ok(ps[4]!.isGranted(), 'after the quiet time the last prefetch starts');
  ps[4]!.ticket.release();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('promoting a granted background ticket frees a background slot', async (t) => {
  let clock = 0;
  const slots = new DownloadSlots(4, { quietMs: 10_000, now: () => clock }); // background limit 2
  const p0 = take(slots, 'prefetch', 'p0');
  const r1 = take(slots, 'readahead', 'r1');
  await settle();
  t.ok(p0.isGranted() && r1.isGranted(), 'two background tickets run');
  p0.ticket.promote();
  t.equal(p0.ticket.priority, 'demand', 'a granted ticket is promoted too');
  t.equal(r1.ticket.priority, 'readahead', 'the other keeps its class');
  t.same(slots.counts(), { running: 2, runningBackground: 1, runningDemand: 1, queued: EMPTY }, 'it no longer counts as background');
  p0.ticket.promote(); // twice: no-op
  t.same(slots.counts(), { running: 2, runningBackground: 1, runningDemand: 1, queued: EMPTY }, 'a second promote changes nothing');
  const p2 = take(slots, 'prefetch', 'p2');
  const p3 = take(slots, 'prefetch', 'p3');
  await settle();
  t.ok(p2.isGranted(), 'a new prefetch takes the freed background slot');
  t.notOk(p3.isGranted(), 'background limit 2 again');
  t.same(slots.counts(), { running: 3, runningBackground: 2, runningDemand: 1, queued: { demand: 0, readahead: 0, prefetch: 1 } });

  // A ticket already waiting for a background slot when a running one is promoted.
  p2.ticket.promote();
  t.equal(slots.counts().runningBackground + slots.counts().queued.prefetch, 2, 'p2 left the background count (p3 waiting or running)');
  t.equal(slots.counts().runningDemand, 2, 'two promoted tickets run as demand');
  await settle();
  t.ok(p3.isGranted(), 'the waiting prefetch takes the freed background slot at once');
  const p4 = take(slots, 'prefetch', 'p4');
  await settle();
  t.ok(p3.isGranted(), 'the first in line has the freed slot');
  t.notOk(p4.isGranted(), 'background limit 2 again (and no slot free)');
  t.same(slots.counts(), { running: 4, runningBackground: 2, runningDemand: 2, queued: { demand: 0, readahead: 0, prefetch: 1 } });

  // The promoted tickets do not pause the background, and their release does not count twice.
  clock += 1;
  r1.ticket.release();
  await settle();
  t.ok(p4.isGranted(), 'a background slot freed while promoted tickets run: the next prefetch starts');
  for (const w of [p0, p2]) {
    w.ticket.release();
    w.ticket.release();
  }
  t.same(slots.counts(), { running: 2, runningBackground: 2, runningDemand: 0, queued: EMPTY }, 'their release balances the counts (as demand, once)');
  const p5 = take(slots, 'prefetch', 'p5');
  p3.ticket.release();
  await settle();
  t.ok(p5.isGranted(), 'no quiet time after the promoted tickets');
  for (const w of [p4, p5]) w.ticket.release();
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('release of a waiting ticket removes it from the line', async (t) => {
  const slots = new DownloadSlots(1, NO_QUIET);
  const holder = take(slots, 'demand', 'holder');
  const a = take(slots, 'prefetch', 'a');
  const b = take(slots, 'prefetch', 'b');
  const d = take(slots, 'demand', 'd');
  await settle();
  a.ticket.release();
  d.ticket.release();
  t.same(slots.counts(), { running: 1, runningBackground: 0, runningDemand: 1, queued: { demand: 0, readahead: 0, prefetch: 1 } }, 'two left the line');
  holder.ticket.release();
  await settle();
  t.ok(b.isGranted(), 'the remaining one is next');
  t.notOk(a.isGranted(), 'the released waiting ticket is never granted');
  t.notOk(d.isGranted(), 'nor the released demand ticket');
  t.equal(slots.counts().running, 1, 'only b runs');
  a.ticket.promote(); // after release: no-op, must not re-queue it
  t.same(slots.counts().queued, EMPTY, 'promote after release does not re-queue');
  b.ticket.release();
  t.equal(slots.counts().running, 0);
  // A demand ticket released while waiting never ran: it starts no quiet time.
  let clock = 0;
  const s2 = new DownloadSlots(1, { quietMs: 1000, now: () => clock });
  const p = take(s2, 'prefetch', 'p');
  const w = take(s2, 'demand', 'w');
  const q = take(s2, 'prefetch', 'q');
  await settle();
  w.ticket.release();
  clock += 1;
  p.ticket.release();
  await settle();
  t.ok(q.isGranted(), 'a demand ticket that never ran does not pause the background');
  q.ticket.release();
});

t.test('a second release is harmless', async (t) => {
  const slots = new DownloadSlots(2, NO_QUIET);
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
  t.same(slots.counts(), { running: 2, runningBackground: 0, runningDemand: 2, queued: { demand: 1, readahead: 0, prefetch: 0 } });
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
  t.same(slots.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY }, 'counts never go negative');
  // A background ticket released twice does not drive runningBackground down.
  const s2 = new DownloadSlots(4, NO_QUIET);
  const p = take(s2, 'prefetch', 'p');
  const q = take(s2, 'prefetch', 'q');
  await settle();
  p.ticket.release();
  p.ticket.release();
  t.equal(s2.counts().runningBackground, 1, 'background count balanced');
  q.ticket.release();
  // A demand ticket released twice does not end the pause another demand ticket holds.
  const s3 = new DownloadSlots(4, NO_QUIET);
  const d1 = take(s3, 'demand', 'd1');
  const d2 = take(s3, 'demand', 'd2');
  const bg = take(s3, 'readahead', 'bg');
  d1.ticket.release();
  d1.ticket.release();
  await settle();
  t.notOk(bg.isGranted(), 'd2 still runs: the background still waits');
  d2.ticket.release();
  await settle();
  t.ok(bg.isGranted(), 'then it starts');
  bg.ticket.release();
  t.same(s3.counts(), { running: 0, runningBackground: 0, runningDemand: 0, queued: EMPTY });
});

t.test('a bad limit throws', async (t) => {
  for (const limit of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => new DownloadSlots(limit), RangeError, `limit ${limit}`);
    t.throws(() => new DownloadSlots(limit), /is not a positive integer/);
  }
  t.doesNotThrow(() => new DownloadSlots(1), 'limit 1 is fine');
});

t.test('a demand ticket taken as not pausing (a catalog) does not hold back background tickets', async (t) => {
  const slots = new DownloadSlots(4, { quietMs: 10_000 });
  const catalog = take(slots, 'demand', 'c', undefined, false);
  const p = take(slots, 'prefetch', 'p');
  await settle();
  t.ok(catalog.isGranted(), 'the catalog download runs');
  t.ok(p.isGranted(), 'and the prefetch starts beside it');
  catalog.ticket.release();
  const p2 = take(slots, 'prefetch', 'p2');
  await settle();
  t.ok(p2.isGranted(), 'no quiet time after it either');
  const reader = take(slots, 'demand', 'r');
  const p3 = take(slots, 'prefetch', 'p3');
  await settle();
  t.ok(reader.isGranted(), 'a reader download runs');
  t.notOk(p3.isGranted(), 'and that one does hold back the next prefetch');
  for (const w of [p, p2, reader, p3]) w.ticket.release();
});
