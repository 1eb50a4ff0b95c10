/**
 * Which opens may use the kernel's page cache, so that a handle opened before a revision update
 * keeps reading the bytes it opened while new opens read the new ones.
 *
 * libfuse's high-level (path-based) API gives one path one kernel inode for as long as the kernel
 * holds it, hence one page cache and one i_size shared by every open of that path, whatever
 * revision each open resolved. What the kernel does with that (Linux 6.x, measured):
 * - a page-cache read fills pages through the handle that reads, so pages hold the bytes of
 *   whichever handle faulted them in; an open without FOPEN_KEEP_CACHE drops all of them;
 * - a FOPEN_DIRECT_IO handle's read() always comes to us and is not bounded by i_size;
 * - cached reads stop at i_size, and a short read (a handle reading past its own end) shrinks
 *   i_size to where it ended, for every handle, until the next attribute reply;
 * - attribute replies (lookup, getattr, and getattr with a handle after lseek(SEEK_END) or a read
 *   past i_size) set i_size for all handles; fstat is answered from that cache for the attribute
 *   timeout.
 *
 * So, per path: the handles in page-cache mode all read one object (the "cached" one). A new open
 * of another object while any of them is open gets FOPEN_DIRECT_IO (+ KEEP_CACHE, so the old
 * handles' pages stay): its read()s never go through, or fill, the shared cache. Every attribute
 * reply (with a handle or not) reports the larger of the current size and the cached object's size
 * while such handles are open, so none cuts their reads short. After the last of them closes, new
 * opens of other objects stay direct for one attribute timeout (i_size may still be an old handle's
 * end); then page-cache mode resumes, without KEEP_CACHE for content other than what the cache
 * last held.
 *
 * Left as it is (one inode per path; only a new inode per revision, as the C++ client's low-level
 * API gives, avoids it): an old handle's EOF on a longer new version leaves i_size at the old end
 * until the next attribute reply, so st_size readers of the new version read too little meanwhile;
 * a direct handle's MAP_PRIVATE mapping (MAP_SHARED fails: ENODEV) fills the shared cache.
 *
 * An old handle reading past its end while i_size is larger gets its EOF from the kernel shrinking
 * i_size on the short read. With two readahead requests in flight, one across the end (short) and
 * one wholly past it (empty), the kernel applies only the first shrink it processes (each bumps the
 * inode's attribute version, and an older request's shrink is then ignored): answering the empty
 * one first leaves i_size at its start and the handle reads zeros up to there (measured). So a
 * page-cache handle's read past its end is answered only after its reads across the end
 * (PastEndOrdering); reads wholly before the end shrink nothing and are not held.
 */

export interface OpenContent {
  /** Equal keys = equal bytes. */
  readonly key: string;
  readonly size: number;
}

export interface OpenDecision {
  directIo: boolean;
  keepCache: boolean;
}

export interface PageCachePolicyOptions {
  /** The kernel's attribute (and entry) timeout in ms: how long it may trust a size we reported. */
  attrTimeoutMs: number;
  /** Paths remembered while idle (oldest forgotten first; a forgotten path's next open drops its pages). */
  maxIdlePaths?: number;
}

interface PathState {
  /** The object whose bytes the page cache may hold; undefined = unknown (drop on next cached open). */
  cachedKey: string | undefined;
  cachedSize: number;
  /** Open handles in page-cache mode (all reading cachedKey). */
  cachedHandles: number;
  /** Open direct handles and the object each reads (created on the first). */
  direct: Map<number, string> | undefined;
  /**
   * The cache may also hold other objects' bytes: a direct handle's MAP_PRIVATE mappings (exec,
   * shared libraries) fill it through that handle. Cleared when a cached open drops the cache.
   */
  mixed: boolean;
  /** When the last page-cache handle closed (ms); new opens of other content stay direct a while. */
  cachedClosedAt: number;
}

/** Beyond the attribute timeout: jiffies rounding and replies computed just before a close. */
const SAFETY_MARGIN_MS = 1000;

export class PageCachePolicy {
  private readonly paths = new Map<string, PathState>();
  private readonly handles = new Map<number, { path: string; direct: boolean }>();
  private readonly directWindowMs: number;
  private readonly maxIdlePaths: number;

  constructor(o: PageCachePolicyOptions) {
    this.directWindowMs = o.attrTimeoutMs + SAFETY_MARGIN_MS;
    this.maxIdlePaths = o.maxIdlePaths ?? 50_000;
  }

  /** Decides how the kernel opens `handle`, a new handle on `path` reading `content`. */
  open(path: string, handle: number, content: OpenContent, now: number): OpenDecision {
    let s = this.paths.get(path);
    if (s) this.paths.delete(path); // re-inserted below: Map order = least recently opened first
    s ??= { cachedKey: undefined, cachedSize: 0, cachedHandles: 0, direct: undefined, mixed: false, cachedClosedAt: -Infinity };
    this.paths.set(path, s);
    const otherContent = s.cachedKey !== undefined && s.cachedKey !== content.key;
    const direct = otherContent && (s.cachedHandles > 0 || now - s.cachedClosedAt < this.directWindowMs);
    this.handles.set(handle, { path, direct });
    let decision: OpenDecision;
    if (direct) {
      (s.direct ??= new Map()).set(handle, content.key);
      s.mixed = true;
      decision = { directIo: true, keepCache: true }; // the old handles' pages stay theirs
    } else {
      const keepCache = s.cachedKey === content.key && !s.mixed;
      s.cachedKey = content.key;
      s.cachedSize = content.size;
      s.cachedHandles++;
      if (!keepCache) s.mixed = [...(s.direct?.values() ?? [])].some((key) => key !== content.key);
      decision = { directIo: false, keepCache };
    }
    this.forgetIdle(now);
    return decision;
  }

  /** Whether `handle` reads through the page cache (an unknown handle does not). */
  isPageCached(handle: number): boolean {
    const h = this.handles.get(handle);
    return h !== undefined && !h.direct;
  }

  release(handle: number, now: number): void {
    const h = this.handles.get(handle);
    if (!h) return;
    this.handles.delete(handle);
    const s = this.paths.get(h.path);
    if (!s) return;
    if (h.direct) s.direct?.delete(handle);
    else if (--s.cachedHandles === 0) s.cachedClosedAt = now;
  }

  /**
   * The size to report for a regular file at `path` whose current entry has `size`: never less
   * than the size of the object that page-cache handles of this path are still reading.
   */
  reportedSize(path: string, size: number): number {
    const s = this.paths.get(path);
    return s && s.cachedHandles > 0 ? Math.max(size, s.cachedSize) : size;
  }

  /** Forgets the least recently opened idle paths beyond the limit (none inside its direct window). */
  private forgetIdle(now: number): void {
    if (this.paths.size <= this.maxIdlePaths) return;
    for (const [path, s] of this.paths) {
      if (this.paths.size <= this.maxIdlePaths) break;
      if (s.cachedHandles > 0 || (s.direct?.size ?? 0) > 0 || now - s.cachedClosedAt < this.directWindowMs) continue;
      this.paths.delete(path);
    }
  }
}

/** Minimum wait of a past-the-end reply: a request sent before it may not have reached us yet. */
const PAST_END_MIN_WAIT_MS = 20;
/** After the last earlier read is answered: libfuse's worker thread still has to write its reply. */
const PAST_END_AFTER_MS = 5;

/** Orders a page-cache handle's empty replies (reads past its end) after its short ones; see above. */
export class PastEndOrdering {
  private readonly inFlight = new Map<number, { count: number; idle: (() => void)[] }>();

  /** Runs a read that reaches the handle's end (a short one), counted until it settles. */
  async acrossEnd<T>(handle: number, read: () => Promise<T>): Promise<T> {
    let f = this.inFlight.get(handle);
    if (!f) this.inFlight.set(handle, (f = { count: 0, idle: [] }));
    f.count++;
    try {
      return await read();
    } finally {
      if (--f.count === 0) {
        this.inFlight.delete(handle);
        for (const wake of f.idle.splice(0)) wake();
      }
    }
  }

  /** Resolves when an empty reply for `handle` may go out: after its short reads in flight. */
  async pastEnd(handle: number): Promise<void> {
    await sleep(PAST_END_MIN_WAIT_MS);
    const f = this.inFlight.get(handle);
    if (f) await new Promise<void>((wake) => f.idle.push(wake));
    await sleep(PAST_END_AFTER_MS);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
