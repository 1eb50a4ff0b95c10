/**
 * Whether background downloads pay off: every object a readahead or prefetch download brought into
 * the cache is noted until a reader asks for it (a hit) — what is never asked for is wasted. A
 * reader that had to wait for a download counts as a miss: `late` when a background download of
 * that object was already queued or running (the reader joined it, promoting it), `uncovered` when
 * none was (counted once any prefetch has been started, so a mount without profiles shows none).
 */
import type { DownloadClass } from './download-slots';

export type BackgroundClass = Exclude<DownloadClass, 'demand'>;

export interface BackgroundClassCounters {
  /** Objects downloaded and committed by this class. */
  downloads: number;
  /** Bytes received for them (as stored on the server). */
  bytes: number;
  /** Reader requests answered by one of them (first request per object). */
  hits: number;
  hitBytes: number;
  /** Reader requests that joined one of them still downloading (or still queued). */
  late: number;
  /** Of `bytes`: objects no reader has asked for yet. */
  unreadBytes: number;
}

export class BackgroundLedger {
  readonly counters: Record<BackgroundClass, BackgroundClassCounters> = { readahead: empty(), prefetch: empty() };
  /** Reader downloads no background download covered (counted since the first prefetch started). */
  uncovered = 0;
  private prefetchStarted = false;
  private readonly unread = new Map<string, { cls: BackgroundClass; bytes: number }>();

  /** A prefetch of a profile starts: from now on, uncovered reader downloads are counted. */
  prefetchStarting(): void {
    this.prefetchStarted = true;
  }

  /** A background download committed `key` after receiving `bytes`; `read`: a reader already waits for it. */
  downloaded(key: string, cls: BackgroundClass, bytes: number, read: boolean): void {
    const c = this.counters[cls];
    c.downloads++;
    c.bytes += bytes;
    if (read) return;
    c.unreadBytes += bytes;
    this.unread.set(key, { cls, bytes });
  }

  /** A reader found `key` in the cache. */
  readerHit(key: string): void {
    const u = this.unread.get(key);
    if (!u) return;
    this.unread.delete(key);
    const c = this.counters[u.cls];
    c.hits++;
    c.hitBytes += u.bytes;
    c.unreadBytes -= u.bytes;
  }

  /** A reader waits for a download of `key`; `joined` names the class of a background download it joined. */
  readerMiss(joined: BackgroundClass | undefined): void {
    if (joined) this.counters[joined].late++;
    else if (this.prefetchStarted) this.uncovered++;
  }

  /** The object was evicted or wiped: it can no longer be a hit. */
  forget(key: string): void {
    this.unread.delete(key);
  }
}

function empty(): BackgroundClassCounters {
  return { downloads: 0, bytes: 0, hits: 0, hitBytes: 0, late: 0, unreadBytes: 0 };
}
