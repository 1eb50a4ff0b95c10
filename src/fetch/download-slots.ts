/**
 * How many downloads run at once, and which goes next. A download holds a slot from its first
 * request to its commit; at most `limit` slots are taken.
 *
 * Three classes, served strictly in this order: `demand` (a reader waits for it), `readahead` (the
 * next chunks of a sequential reader) and `prefetch` (an access profile). Background classes
 * (readahead, prefetch) never take the last `reserved` slots, so a demand download finds a free
 * slot even while a long prefetch runs — it never queues behind background work, only behind other
 * demand downloads. A queued ticket can be promoted when a reader starts waiting for its object.
 */
export type DownloadClass = 'demand' | 'readahead' | 'prefetch';

const ORDER: readonly DownloadClass[] = ['demand', 'readahead', 'prefetch'];

/** One download's place in line; `release` gives its slot back (once; later calls do nothing). */
export interface SlotTicket {
  readonly granted: Promise<void>;
  readonly priority: DownloadClass;
  /** Moves a waiting ticket up to `demand` (no-op once granted). */
  promote(): void;
  /** Gives up the slot, or the place in line; wakes the next waiter. */
  release(): void;
}

interface Waiter {
  priority: DownloadClass;
  granted: boolean;
  released: boolean;
  readonly grant: () => void;
}

export interface SlotCounts {
  readonly running: number;
  readonly runningBackground: number;
  readonly queued: Readonly<Record<DownloadClass, number>>;
}

export class DownloadSlots {
  private running = 0;
  private runningBackground = 0;
  private readonly queues: Record<DownloadClass, Waiter[]> = { demand: [], readahead: [], prefetch: [] };
  /** Slots background classes may use: all but a quarter (at least one kept for demand when limit > 1). */
  readonly backgroundLimit: number;

  constructor(readonly limit: number) {
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`download slot limit ${limit} is not a positive integer`);
    this.backgroundLimit = limit === 1 ? 1 : limit - Math.max(1, Math.floor(limit / 4));
  }

  take(priority: DownloadClass): SlotTicket {
    let grant!: () => void;
    const granted = new Promise<void>((resolve) => (grant = resolve));
    const w: Waiter = { priority, granted: false, released: false, grant };
    this.queues[priority].push(w);
    this.dispatch();
    return {
      granted,
      get priority() {
        return w.priority;
      },
      promote: () => {
        if (w.granted || w.released || w.priority === 'demand') return;
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
          if (w.priority !== 'demand') this.runningBackground--;
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
      queued: { demand: this.queues.demand.length, readahead: this.queues.readahead.length, prefetch: this.queues.prefetch.length },
    };
  }

  private dispatch(): void {
    for (const priority of ORDER) {
      const q = this.queues[priority];
      const background = priority !== 'demand';
      while (q.length > 0 && this.running < this.limit && (!background || this.runningBackground < this.backgroundLimit)) {
        const w = q.shift()!;
        w.granted = true;
        this.running++;
        if (background) this.runningBackground++;
        w.grant();
      }
      // A class that still waits blocks the ones after it only when no slot is free at all.
      if (q.length > 0 && this.running >= this.limit) return;
    }
  }
}
