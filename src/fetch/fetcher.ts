/**
 * "Give me verified object H" (cvmfs `cvmfs/fetch.cc`, facts sheet §2.3, §5.6, §7.1):
 *
 *   cache hit → path, no network
 *   miss → single flight per content hash: concurrent callers share ONE download
 *        → stream: hash the RECEIVED (stored, usually compressed) bytes and inflate them into a cache
 *          transaction (temporary file in txn/)
 *        → at the end: hash must match (else retry once with no-cache headers, then HashMismatchError),
 *          the zlib stream must be complete, the decompressed size must match when known
 *        → rename into the cache → path
 *
 * Nothing unverified is ever cached: every failure aborts the transaction, which removes its file.
 *
 * Downloads wait for a slot (download-slots.ts): at most CVMFS_TS_PARALLEL_DOWNLOADS run at once,
 * readers' downloads first; background ones (readahead, prefetch) never take the slots kept for
 * readers, and a reader that asks for an object whose background download still waits in line
 * promotes it. The background ledger notes which background downloads readers used.
 *
 * Single flight: the check of the in-flight map and the registration are one synchronous step (no await
 * between), the leader re-checks the cache after registering (closing the miss → register window), and the
 * entry is removed on every exit path. Each caller may pass its own AbortSignal; an aborted caller stops
 * waiting at once, and the shared download is cancelled only when every waiter has gone.
 */
import { readFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Hash } from 'node:crypto';
import type { Inflate } from 'node:zlib';
import { ContentHash, newHasher, type HashAlgorithm, type ObjectSuffix } from '../format/hash';
import { objectPath } from '../format/object-name';
import { zlibDecompressStream } from '../format/compression';
import { CvmfsError, FormatError, HashMismatchError, describeError } from '../errors';
import type { CacheTransaction, DiskCache } from '../cache/disk-cache';
import { DownloadError, type Downloader } from '../net/downloader';
import { DownloadSlots, type DownloadClass, type SlotTicket } from './download-slots';
import { BackgroundLedger } from './background-ledger';

export interface ObjectRequest {
  readonly hash: ContentHash;
  /** Suffix letter of the object name on the server (C catalog, P chunk, X certificate, …). */
  readonly suffix: ObjectSuffix;
  /** zlib-compressed on the server (catalogs always are; files per their catalog flags). */
  readonly compressed: boolean;
  /** Decompressed size, checked when given. */
  readonly size?: number;
  /** A repository path or e.g. 'catalog /a/b', for messages. */
  readonly description: string;
  /** External file (§7.1): fetched from externalUrl + path (optionally a byte range), not from data/. */
  readonly external?: { readonly path: string; readonly range?: { readonly offset: number; readonly size: number } };
  readonly signal?: AbortSignal;
  /** Who waits for it: a reader (default), or background work that must not delay readers. */
  readonly priority?: DownloadClass;
  /**
   * Pin the object in the cache's quota manager before looking it up, so it cannot be evicted between
   * the fetch and its use (e.g. a catalog that stays attached). It stays pinned after a successful fetch
   * — the caller calls `cache.quota.unpin(hash)` when done — and is unpinned again if the fetch fails.
   */
  readonly pin?: boolean;
}

export interface FetcherOptions {
  /** CVMFS_EXTERNAL_URL hosts, for external files. */
  readonly externalUrls?: readonly string[];
  /** The download manager for external files (own proxies/timeouts, §5.12); defaults to the main one. */
  readonly externalDownloader?: Downloader;
  /** Downloads running at once (CVMFS_TS_PARALLEL_DOWNLOADS); default 16. */
  readonly parallelDownloads?: number;
}

export interface FetcherCounters {
  /** Requests served from the cache without waiting for a download. */
  hits: number;
  /** Requests that needed a download (leader or sharing one). */
  misses: number;
  /** Of the misses: requests that joined a download already in flight. */
  shared: number;
  /** Objects downloaded, verified and committed. */
  downloads: number;
  /** Object bytes received (as stored on the server, every attempt). */
  bytesDownloaded: number;
  /** Decompressed bytes committed to the cache. */
  bytesInflated: number;
  /** Attempts whose bytes did not hash to the object's name (or did not inflate). */
  badData: number;
}

/** The decompressed size differs from what the catalog says (the bytes hash correctly). */
export class ObjectSizeError extends CvmfsError {
  constructor(
    readonly what: string,
    readonly expected: number,
    readonly actual: number | undefined,
  ) {
    super(
      'E_IO',
      `${what}: decompressed size ${actual === undefined ? `exceeds ${expected}` : actual}, catalog says ${expected}`,
    );
  }
}

interface Flight {
  promise: Promise<string>;
  readonly controller: AbortController;
  waiters: number;
  settled: boolean;
  /** The class it was started for; a reader joining a background flight makes it a reader's. */
  readonly priority: DownloadClass;
  readerJoined: boolean;
  /** Its place in line for a download slot, once it needs one. */
  ticket?: SlotTicket;
}

/** Outcome of one download attempt, judged after the whole body arrived. */
interface Received {
  readonly hash: ContentHash;
  readonly inflateError: unknown;
  readonly overflow: boolean;
  readonly size: number;
  /** Bytes received by the attempt that delivered it (as stored on the server). */
  readonly received: number;
}

/** Waits for `p`, or rejects with the signal's reason as soon as it is aborted. */
function abortable(p: Promise<void>, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, reject);
  });
}

export class Fetcher {
  readonly counters: FetcherCounters = {
    hits: 0,
    misses: 0,
    shared: 0,
    downloads: 0,
    bytesDownloaded: 0,
    bytesInflated: 0,
    badData: 0,
  };
  private readonly inflight = new Map<string, Flight>();
  readonly slots: DownloadSlots;
  readonly background = new BackgroundLedger();

  constructor(
    readonly cache: DiskCache,
    readonly downloader: Downloader,
    private readonly o: FetcherOptions = {},
  ) {
    this.slots = new DownloadSlots(o.parallelDownloads ?? 16);
  }

  /** Path of the verified, decompressed object in the cache. */
  async fetch(req: ObjectRequest): Promise<string> {
    if (!req.pin) return this.fetchObject(req);
    this.cache.quota.pin(req.hash);
    this.cache.quota.flush(); // rare (catalogs): let other mounts sharing the cache see the pin at once
    try {
      return await this.fetchObject(req);
    } catch (e) {
      this.cache.quota.unpin(req.hash);
      throw e;
    }
  }

  private async fetchObject(req: ObjectRequest): Promise<string> {
    if (req.signal?.aborted) throw req.signal.reason;
    const priority = req.priority ?? 'demand';
    const reader = priority === 'demand';
    const key = req.hash.toString();
    // Background requests only look (no LRU touch, no hit): they must not count as use.
    const hit = reader ? await this.cache.lookup(req.hash) : (await this.cache.has(req.hash)) ? this.cache.pathOf(req.hash) : undefined;
    if (hit !== undefined) {
      if (reader) {
        this.counters.hits++;
        this.background.readerHit(key);
      }
      return hit;
    }
    if (reader) this.counters.misses++;
    // One synchronous step from here to set(): no await between the check and the registration.
    let flight = this.inflight.get(key);
    if (flight) {
      if (reader) {
        this.counters.shared++;
        if (!flight.readerJoined) {
          this.background.readerMiss(flight.priority === 'demand' ? undefined : flight.priority);
          flight.readerJoined = true;
          flight.ticket?.promote();
        }
      }
    } else {
      // Catalogs and other metadata objects are no prefetch's business: only file content counts.
      if (reader && (req.suffix === '' || req.suffix === 'P')) this.background.readerMiss(undefined);
      // Not in the cache: a background download of it noted as unread was evicted, and can no longer be a hit.
      if (reader) this.background.forget(key);
      const created: Flight = { promise: Promise.resolve(''), controller: new AbortController(), waiters: 0, settled: false, priority, readerJoined: reader };
      created.promise = this.lead(req, created);
      flight = created;
      this.inflight.set(key, created);
      const done = (): void => {
        created.settled = true;
        if (this.inflight.get(key) === created) this.inflight.delete(key);
      };
      created.promise.then(done, done); // also marks a rejection as handled when every waiter has gone
    }
    return this.wait(key, flight, req.signal);
  }

  /** Small objects read whole (certificates, catalogs' meta data, …): fetch, then read the cache file. */
  async fetchToBuffer(req: ObjectRequest): Promise<Buffer> {
    let path = await this.fetch(req);
    try {
      return await readFile(path).catch(async (e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
        // Evicted between the lookup and the read (another mount sharing the cache): fetch again, once.
        path = await this.fetchObject(req);
        return readFile(path);
      });
    } catch (e) {
      throw new CvmfsError('E_IO', `${req.description}: cannot read cached object ${path}: ${describeError(e)}`, {
        cause: e,
      });
    }
  }

  /**
   * A file that is not content-addressed (`.cvmfspublished`, `.cvmfswhitelist`), downloaded whole into
   * memory; refuses bodies over `maxBytes`. Not cached, not verified here (signatures are the caller's job).
   */
  async getRaw(
    relativePath: string,
    o: { noCache?: boolean; maxBytes?: number; signal?: AbortSignal } = {},
  ): Promise<Buffer> {
    const max = o.maxBytes ?? 16 * 1024 * 1024;
    let chunks: Buffer[] = [];
    let total = 0;
    await this.downloader.fetch(
      relativePath,
      (chunk) => {
        total += chunk.length;
        if (total > max) throw new CvmfsError('E_NETWORK', `${relativePath}: larger than ${max} bytes`);
        chunks.push(chunk);
      },
      {
        noCache: o.noCache,
        signal: o.signal,
        onRestart: () => {
          chunks = [];
          total = 0;
        },
      },
    );
    return Buffer.concat(chunks, total);
  }

  /** Downloads in flight right now (for tests and status). */
  get inflightCount(): number {
    return this.inflight.size;
  }

  private wait(key: string, flight: Flight, signal: AbortSignal | undefined): Promise<string> {
    flight.waiters++; // a waiter without a signal stays counted until the flight settles
    if (!signal) return flight.promise;
    return new Promise<string>((resolve, reject) => {
      const onAbort = (): void => {
        reject(signal.reason);
        flight.waiters--;
        if (flight.waiters === 0 && !flight.settled) {
          // Nobody wants it any more: cancel, and let later callers start afresh.
          if (this.inflight.get(key) === flight) this.inflight.delete(key);
          flight.controller.abort(signal.reason);
        }
      };
      flight.promise.then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
      // The signal may have fired while we looked in the cache.
      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** The leader's part: re-check, then download → verify → commit, with one no-cache retry on bad data. */
  private async lead(req: ObjectRequest, flight: Flight): Promise<string> {
    const signal = flight.controller.signal;
    if (await this.cache.has(req.hash)) return this.cache.pathOf(req.hash);
    // Catalogs do not hold back the prefetch: at a thin image's start both are wanted at once.
    const ticket = this.slots.take(flight.priority, req.suffix !== 'C');
    // A reader joined while we looked in the cache: it goes first, as a promoted background download.
    if (flight.readerJoined && flight.priority !== 'demand') ticket.promote();
    flight.ticket = ticket;
    try {
      await abortable(ticket.granted, signal);
      // Another process sharing the cache may have brought it in while we waited in line.
      if (await this.cache.has(req.hash)) return this.cache.pathOf(req.hash);
      return await this.download(req, flight);
    } finally {
      ticket.release();
    }
  }

  private async download(req: ObjectRequest, flight: Flight): Promise<string> {
    const signal = flight.controller.signal;
    const rel = req.external ? req.external.path : objectPath(req.hash, req.suffix);
    const what = `${req.external ? `external ${req.external.path}` : rel} (${req.description})`;
    const downloader = req.external ? (this.o.externalDownloader ?? this.downloader) : this.downloader;
    let baseUrls: readonly string[] | undefined;
    if (req.external) {
      baseUrls = this.o.externalUrls;
      if (!baseUrls || baseUrls.length === 0) {
        throw new CvmfsError('E_NETWORK', `${what}: external file, but no external URL is configured`);
      }
    }

    const txn = await this.cache.startTransaction();
    const sink = new VerifyingSink(req.hash.algorithm, req.compressed, txn, req.size, this.counters);
    try {
      // The downloader calls verify() after each complete body: bad data is tried once more with
      // no-cache headers, then on the next host (§5.12).
      let got: Received | undefined;
      try {
        await downloader.fetch(rel, (chunk) => sink.write(chunk), {
          signal,
          onRestart: () => sink.reset(),
          range: req.external?.range,
          baseUrls,
          verify: async () => {
            got = await sink.finish();
            if (got.hash.equals(req.hash)) return true;
            this.counters.badData++;
            return false;
          },
        });
      } catch (e) {
        if (e instanceof DownloadError && e.badData && got) {
          throw new HashMismatchError(what, req.hash.toString(), got.hash.toString());
        }
        throw e;
      }
      if (!got) throw new Error('unreachable: verify was not called');
      if (got.inflateError !== undefined) {
        // The stored bytes are exactly the named object, and they are no valid zlib stream.
        throw new FormatError(`${what}: not a valid zlib stream: ${describeError(got.inflateError)}`, {
          cause: got.inflateError,
        });
      }
      if (req.size !== undefined && (got.overflow || got.size !== req.size)) {
        if (!got.overflow) await txn.quarantine(req.hash.toString()).catch(() => undefined);
        throw new ObjectSizeError(what, req.size, got.overflow ? undefined : got.size);
      }
      const path = await txn.commit(req.hash, { description: req.description, kind: req.suffix === 'C' ? 'catalog' : 'regular' });
      this.counters.downloads++;
      this.counters.bytesInflated += got.size;
      if (flight.priority !== 'demand') this.background.downloaded(req.hash.toString(), flight.priority, got.received, flight.readerJoined);
      return path;
    } finally {
      await sink.dispose();
      await txn.abort(); // no-op after commit/quarantine
    }
  }
}

/**
 * One generation of the inflate pipeline: zlib inflater → writer into the transaction. A reset throws
 * the generation away and starts a new one over a truncated file.
 */
class Inflation {
  readonly inflater: Inflate = zlibDecompressStream();
  error: unknown;
  ioError: unknown;
  overflow = false;
  readonly done: Promise<void>;

  constructor(txn: CacheTransaction, maxSize: number | undefined) {
    const out = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (maxSize !== undefined && txn.size + chunk.length > maxSize) {
          this.overflow = true; // stop inflating; the hash decides whether it is bad data or a bad catalog
          cb(new Error('decompressed data larger than expected'));
          return;
        }
        txn.write(chunk).then(
          () => cb(),
          (e: unknown) => {
            this.ioError = e;
            cb(e as Error);
          },
        );
      },
    });
    this.done = pipeline(this.inflater, out).catch((e: unknown) => {
      this.error ??= e;
    });
  }

  /** Feeds compressed bytes, waiting while zlib's buffer is full. Stops feeding once the pipeline failed. */
  async write(chunk: Buffer): Promise<void> {
    const inflater = this.inflater;
    if (inflater.destroyed) return;
    if (inflater.write(chunk)) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        inflater.off('drain', done);
        inflater.off('close', done);
        resolve();
      };
      inflater.on('drain', done);
      inflater.on('close', done);
    });
  }

  async end(): Promise<void> {
    if (!this.inflater.destroyed) this.inflater.end();
    await this.done;
  }

  async destroy(): Promise<void> {
    this.inflater.destroy();
    await this.done;
  }
}

/** Hashes what arrives and writes it (inflated, or as is) into the transaction. */
class VerifyingSink {
  private hasher: Hash;
  private received = 0;
  private inflation: Inflation | undefined;
  private overflow = false;
  private ioError: unknown;

  constructor(
    private readonly algorithm: HashAlgorithm,
    private readonly compressed: boolean,
    private readonly txn: CacheTransaction,
    private readonly maxSize: number | undefined,
    private readonly counters: FetcherCounters,
  ) {
    this.hasher = newHasher(algorithm);
    if (compressed) this.inflation = new Inflation(txn, maxSize);
  }

  async write(chunk: Buffer): Promise<void> {
    this.counters.bytesDownloaded += chunk.length;
    this.received += chunk.length;
    this.hasher.update(chunk);
    if (this.inflation) {
      if (this.inflation.ioError !== undefined) throw this.inflation.ioError;
      await this.inflation.write(chunk);
      if (this.inflation.ioError !== undefined) throw this.inflation.ioError;
      return;
    }
    if (this.overflow) return;
    if (this.maxSize !== undefined && this.txn.size + chunk.length > this.maxSize) {
      this.overflow = true;
      return;
    }
    try {
      await this.txn.write(chunk);
    } catch (e) {
      this.ioError = e;
      throw e;
    }
  }

  /** Back to an empty file and a fresh hash, for another attempt. */
  async reset(): Promise<void> {
    if (this.inflation) {
      await this.inflation.destroy();
      this.inflation = new Inflation(this.txn, this.maxSize);
    }
    await this.txn.reset();
    this.hasher = newHasher(this.algorithm);
    this.received = 0;
    this.overflow = false;
  }

  /** Ends the stream; reports the hash of what arrived and whether it inflated completely. */
  async finish(): Promise<Received> {
    let inflateError: unknown;
    let overflow = this.overflow;
    if (this.inflation) {
      const inflation = this.inflation;
      await inflation.end();
      if (inflation.ioError !== undefined) throw inflation.ioError;
      overflow = inflation.overflow;
      if (!overflow) inflateError = inflation.error;
    }
    if (this.ioError !== undefined) throw this.ioError;
    return {
      hash: ContentHash.of(this.algorithm, this.hasher.digest()),
      inflateError,
      overflow,
      size: this.txn.size,
      received: this.received,
    };
  }

  /** Tears down a pipeline still running (after a failed download). */
  async dispose(): Promise<void> {
    const inflation = this.inflation;
    this.inflation = undefined;
    if (inflation && !inflation.inflater.destroyed) await inflation.destroy();
  }
}
