/**
 * How many downloads run at once, and which goes next. A download holds a slot from its first
 * request to its commit; at most `limit` slots are taken.
 *
 * Three classes, served strictly in this order: `demand` (a reader waits for it), `readahead` (the
 * next chunks of a sequential reader) and `prefetch` (an access profile). Background classes
 * (readahead, prefetch) use at most half of the slots, so a demand download finds a free slot even
 * while a long prefetch runs — it never queues behind background work, only behind other demand
 * downloads. And no new background download starts while a reader's own download (taken as
 * `demand`) runs, nor within `quietMs` after one ended: readers that miss come in bursts (one file
 * after the other), and the bytes of every background download already requested sit in the link's
 * queue in front of the reader's. A queued ticket can be promoted when a reader starts waiting for
 * its object; it then goes first, but does not hold back the other background downloads — a reader
 * that caught up with a prefetch wants the prefetch to go on.
 */
export type DownloadClass = 'demand' | 'readahead' | 'prefetch';

const ORDER: readonly DownloadClass[] = ['demand', 'readahead', 'prefetch'];

/** One download's place in line; `release` gives its slot back (once; later calls do nothing). */
export interface SlotTicket {
  readonly granted: Promise<void>;
  readonly priority: DownloadClass;
  /** A reader waits for it now: a waiting ticket goes to the front; a running one stops counting as background. */
  promote(): void;
  /** Gives up the slot, or the place in line; wakes the next waiter. */
  release(): void;
}

interface Waiter {
  priority: DownloadClass;
  granted: boolean;
  /** Counted among the running background downloads. */
  background: boolean;
  /** Taken as demand: while it runs (and `quietMs` after), no background download starts. */
  readonly pausing: boolean;
  released: boolean;
  readonly grant: () => void;
}

export interface SlotCounts {
  readonly running: number;
  readonly runningBackground: number;
  readonly runningDemand: number;
  readonly queued: Readonly<Record<DownloadClass, number>>;
}

export interface DownloadSlotsOptions {
  /** After a demand download, background downloads wait this long for the next one (default 50 ms). */
  readonly quietMs?: number;
  /** Clock in ms (tests). */
  readonly now?: () => number;
}

export class DownloadSlots {
  private running = 0;
  private runningPausing = 0;
  private lastDemandEnd = -Infinity;
  private quietTimer: NodeJS.Timeout | undefined;
  private readonly quietMs: number;
  private readonly now: () => number;
  private runningBackground = 0;
  private readonly queues: Record<DownloadClass, Waiter[]> = { demand: [], readahead: [], prefetch: [] };
  /** Slots background classes may use: half (the single one when limit is 1). */
  readonly backgroundLimit: number;

  constructor(
    readonly limit: number,
    o: DownloadSlotsOptions = {},
  ) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`download slot limit ${limit} is not a positive integer`);
    this.backgroundLimit = Math.max(1, Math.floor(limit / 2));
    this.quietMs = o.quietMs ?? 50;
    this.now = o.now ?? (() => performance.now());
  }

  private get runningDemand(): number {
    return this.running - this.runningBackground;
  }

  /**
   * A place in line. `pausing` (default: for demand) holds back new background downloads while it
   * runs and for the quiet time after; a demand download that is not a reader's wait for file
   * content (a catalog attached ahead of use) passes false.
   */
  take(priority: DownloadClass, pausing = priority === 'demand'): SlotTicket {
    let grant!: () => void;
    const granted = new Promise<void>((resolve) => (grant = resolve));
    const w: Waiter = { priority, granted: false, background: false, pausing: pausing && priority === 'demand', released: false, grant };
    this.queues[priority].push(w);
    this.dispatch();
    return {
      granted,
      get priority() {
        return w.priority;
      },
      promote: () => {
        if (w.released || w.priority === 'demand') return;
        if (w.granted) {
          // Running: a reader waits for it now; it no longer counts against the background limit.
          w.priority = 'demand';
          if (w.background) {
            w.background = false;
            this.runningBackground--;
            this.dispatch();
          }
          return;
        }
        const q = this.queues[w.priority];
        q.splice(q.indexOf(w), 1);
        w.priority = 'demand';
        this.queues.demand.push(w);
        this.dispatch();
      },
      release: () => {
        if (w.released) return;
        w.released = true;
        if (w.granted) {
          this.running--;
          if (w.background) this.runningBackground--;
          if (w.pausing) {
            this.runningPausing--;
            this.lastDemandEnd = this.now();
          }
        } else {
          const q = this.queues[w.priority];
          q.splice(q.indexOf(w), 1);
        }
        this.dispatch();
      },
    };
  }

  counts(): SlotCounts {
    return {
      running: this.running,
      runningBackground: this.runningBackground,
      runningDemand: this.runningDemand,
      queued: { demand: this.queues.demand.length, readahead: this.queues.readahead.length, prefetch: this.queues.prefetch.length },
    };
  }

  /** Whether background downloads may start now; if only the quiet time holds them, dispatch again when it ends. */
  private backgroundMayStart(): boolean {
    if (this.runningPausing > 0 || this.runningBackground >= this.backgroundLimit) return false;
    const wait = this.lastDemandEnd + this.quietMs - this.now();
    if (wait <= 0) return true;
    if (!this.quietTimer) {
      this.quietTimer = setTimeout(() => {
        this.quietTimer = undefined;
        this.dispatch();
      }, Math.ceil(wait));
      this.quietTimer.unref();
    }
    return false;
  }

  private dispatch(): void {
    for (const priority of ORDER) {
      const q = this.queues[priority];
      const background = priority !== 'demand';
      while (q.length > 0 && this.running < this.limit && (!background || this.backgroundMayStart())) {
        const w = q.shift()!;
        w.granted = true;
        w.background = background;
        if (w.pausing) this.runningPausing++;
        this.running++;
        if (background) this.runningBackground++;
        w.grant();
      }
      // A class that still waits blocks the ones after it only when no slot is free at all.
      if (q.length > 0 && this.running >= this.limit) return;
    }
  }
}
