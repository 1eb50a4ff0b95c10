/**
 * The POSIX cache directory (facts sheet §5.9): decompressed, verified objects at `<dir>/XX/rest[-algo]`,
 * downloads in progress under `txn/`, post-mortem copies under `quarantaine/`, and the breadcrumb
 * `cvmfschecksum.<fqrn>` that remembers the last mounted root catalog.
 *
 * Objects only enter the cache through a transaction: a temporary file in `txn/` that is renamed into place
 * by `commit`, so a crash never leaves half an object under its hash name. There is no fsync before the
 * rename: the cache is disposable and every object was verified against its hash before the commit, so
 * after a power loss the worst case is an object that has to be downloaded again (the quota ledger notices
 * objects whose size disagrees when it reconciles, quota.ts).
 *
 * Crash safety (SIGKILL at any moment): an object name only ever appears by `rename` of a complete,
 * verified, closed file, and nothing writes to it afterwards, so no object under its hash name can hold
 * other bytes. (Objects are stored decompressed while their name is the hash of the compressed bytes, so
 * a cached object cannot be re-verified by hashing it; the guarantee is verify-then-rename.) What a crash
 * can leave: files in `txn/` (removed by `open` when their writer is gone) and a quota ledger out of step
 * with the directory (reconciled by the quota manager at the next start).
 *
 * Quota/LRU bookkeeping is not this class's job: a separate QuotaManager (quota.ts) is told `insert`
 * after each commit and `touch` on each hit (`lookup`); `NO_QUOTA` when CVMFS_QUOTA_LIMIT <= 0.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ContentHash } from '../format/hash';
import { cachePath } from '../format/object-name';
import { CvmfsError, describeError } from '../errors';
import { NO_QUOTA, SqliteQuota, type QuotaKind, type QuotaLog, type QuotaManager } from './quota';
import { isAlive, processStartMs } from './process-identity';

/** A local file system operation on the cache failed. */
export class CacheIoError extends CvmfsError {
  constructor(
    readonly path: string,
    action: string,
    cause: unknown,
  ) {
    super('E_IO', `cache: cannot ${action} ${path}: ${describeError(cause)}`, { cause });
  }
}

/** The breadcrumb of a repository: its last known root catalog (§5.1, §9). */
export interface Breadcrumb {
  readonly rootHash: ContentHash;
  /** Publish time of that revision, seconds since the epoch. */
  readonly timestamp: number;
  /** Revision number; 0 when an old breadcrumb has none (as cvmfs). */
  readonly revision: number;
}

/** `<hex>T<timestamp>R<revision>`; the hash carries its algorithm id but no suffix. */
export function formatBreadcrumb(b: Breadcrumb): string {
  return `${b.rootHash.toString()}T${Math.trunc(b.timestamp)}R${Math.trunc(b.revision)}`;
}

/** Parses a breadcrumb; undefined when it is not one (a damaged breadcrumb is as good as none). */
export function parseBreadcrumb(text: string): Breadcrumb | undefined {
  const m = /^([0-9a-z-]+)T(\d+)(?:R(\d+))?$/.exec(text.trim());
  if (!m) return undefined;
  try {
    return { rootHash: ContentHash.parse(m[1]), timestamp: Number(m[2]), revision: m[3] === undefined ? 0 : Number(m[3]) };
  } catch {
    return undefined;
  }
}

const TXN = 'txn';
const QUARANTINE = 'quarantaine'; // sic, as cvmfs spells it

function tempName(): string {
  return `fetch.${process.pid}.${randomBytes(6).toString('hex')}`;
}

/** The writer's pid in a txn/ file name (`fetch.<pid>.<random>`, `breadcrumb.fetch.<pid>.<random>`). */
function writerOf(name: string): number | undefined {
  const m = /(?:^|\.)fetch\.(\d+)\.[0-9a-f]+$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

export interface DiskCacheOpenOptions {
  /** CVMFS_QUOTA_LIMIT in MB; <= 0: no ledger, no eviction. */
  quotaLimitMb: number;
  log?: QuotaLog;
}

/** What a commit tells the quota manager about the object. */
export interface CommitInfo {
  readonly description: string;
  readonly kind: QuotaKind;
}

export class DiskCache {
  constructor(
    readonly dir: string,
    /** Told about commits and hits; the null object unless the cache was opened with a quota. */
    readonly quota: QuotaManager = NO_QUOTA,
  ) {}

  /**
   * The cache of a mount or tool: creates the layout, removes what crashed writers left in `txn/`,
   * and opens the quota ledger (reconciling it after a crash, cleaning up if over the limit).
   */
  static async open(dir: string, o: DiskCacheOpenOptions): Promise<DiskCache> {
    const bare = new DiskCache(dir);
    await bare.init();
    await bare.removeAbandonedTransactions();
    if (o.quotaLimitMb <= 0) {
      SqliteQuota.markStale(dir); // we will not keep a ledger up to date: whoever uses it next reconciles
      return new DiskCache(dir, NO_QUOTA);
    }
    return new DiskCache(dir, await SqliteQuota.open(dir, { limitBytes: o.quotaLimitMb * 1024 * 1024, log: o.log }));
  }

  /** Flushes and closes the quota ledger (releasing this process's pins). */
  async close(): Promise<void> {
    await this.quota.close();
  }

  /**
   * Deletes `txn/` files whose writer is gone: its pid is not running, or runs a process started after
   * the file was last written (pid reused). Files of live writers (other mounts sharing the cache) stay.
   */
  async removeAbandonedTransactions(): Promise<number> {
    let names: string[];
    try {
      names = await readdir(this.txnDir);
    } catch (e) {
      throw new CacheIoError(this.txnDir, 'list', e);
    }
    let removed = 0;
    await Promise.all(
      names.map(async (name) => {
        const path = join(this.txnDir, name);
        const pid = writerOf(name);
        if (pid !== undefined && pid !== process.pid && isAlive({ pid, start: '' })) {
          const started = processStartMs(pid);
          const written = await stat(path).then((s) => s.mtimeMs, () => undefined);
          if (written === undefined || started === undefined || written >= started - 1000) return;
        }
        await rm(path, { force: true, recursive: true }).catch(() => undefined);
        removed++;
      }),
    );
    return removed;
  }

  /** Creates the directory with `00`..`ff`, `txn/` and `quarantaine/` (idempotent). */
  async init(): Promise<void> {
    const subdirs = [TXN, QUARANTINE];
    for (let i = 0; i < 256; i++) subdirs.push(i.toString(16).padStart(2, '0'));
    try {
      await mkdir(this.dir, { recursive: true });
      await Promise.all(subdirs.map((d) => mkdir(join(this.dir, d), { recursive: true })));
    } catch (e) {
      throw new CacheIoError(this.dir, 'create the cache directory', e);
    }
  }

  /** Where a (decompressed) object lives, whether or not it is there. */
  pathOf(hash: ContentHash): string {
    return join(this.dir, cachePath(hash));
  }

  get txnDir(): string {
    return join(this.dir, TXN);
  }

  get quarantineDir(): string {
    return join(this.dir, QUARANTINE);
  }

  /** The path of a cached object, telling the quota manager about the hit; undefined on a miss. */
  async lookup(hash: ContentHash): Promise<string | undefined> {
    if (!(await this.has(hash))) return undefined;
    this.quota.touch(hash);
    return this.pathOf(hash);
  }

  async has(hash: ContentHash): Promise<boolean> {
    try {
      return (await stat(this.pathOf(hash))).isFile();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw new CacheIoError(this.pathOf(hash), 'look up', e);
    }
  }

  /** A new, empty temporary file in `txn/`. */
  async startTransaction(): Promise<CacheTransaction> {
    const path = join(this.dir, TXN, tempName());
    let fd: FileHandle;
    try {
      fd = await open(path, 'wx', 0o600);
    } catch (e) {
      throw new CacheIoError(path, 'create', e);
    }
    return new CacheTransaction(this, path, fd);
  }

  breadcrumbPath(fqrn: string): string {
    if (fqrn === '' || fqrn.includes('/') || fqrn.includes('\0')) {
      throw new CvmfsError('E_USAGE', `invalid repository name '${fqrn}'`);
    }
    return join(this.dir, `cvmfschecksum.${fqrn}`);
  }

  /** The breadcrumb of `fqrn`, or undefined if there is none or it does not parse. */
  async readBreadcrumb(fqrn: string): Promise<Breadcrumb | undefined> {
    const path = this.breadcrumbPath(fqrn);
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new CacheIoError(path, 'read', e);
    }
    return parseBreadcrumb(text);
  }

  /** Replaces the breadcrumb atomically (temporary file + rename, as cvmfs's Breadcrumb::Export). */
  async writeBreadcrumb(fqrn: string, b: Breadcrumb): Promise<void> {
    const path = this.breadcrumbPath(fqrn);
    const tmp = join(this.dir, TXN, `breadcrumb.${tempName()}`);
    try {
      await writeFile(tmp, formatBreadcrumb(b), { mode: 0o600 });
      await rename(tmp, path);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw new CacheIoError(path, 'write', e);
    }
  }
}

/**
 * One object being written. Writes are queued in order at increasing offsets; `reset` waits for queued
 * writes and truncates, so a retried download starts from byte 0; exactly one of `commit`, `abort` or
 * `quarantine` ends it (`abort` may always be called again, e.g. in a `finally`).
 */
export class CacheTransaction {
  private position = 0;
  private queue: Promise<void> = Promise.resolve();
  private failure: CacheIoError | undefined;
  private ended = false;

  constructor(
    private readonly cache: DiskCache,
    readonly tempPath: string,
    private fd: FileHandle | undefined,
  ) {}

  /** Bytes written so far (after the last reset). */
  get size(): number {
    return this.position;
  }

  /** Appends a chunk; resolves once it is written (await it for backpressure). */
  write(chunk: Uint8Array): Promise<void> {
    if (this.ended) return Promise.reject(new CacheIoError(this.tempPath, 'write to a finished transaction', 'ended'));
    const at = this.position;
    this.position += chunk.length;
    const step = this.queue.then(async () => {
      if (this.failure) throw this.failure;
      try {
        let done = 0;
        while (done < chunk.length) {
          const { bytesWritten } = await this.fd!.write(chunk, done, chunk.length - done, at + done);
          done += bytesWritten;
        }
      } catch (e) {
        this.failure ??= new CacheIoError(this.tempPath, 'write', e);
        throw this.failure;
      }
    });
    this.queue = step.catch(() => undefined);
    return step;
  }

  /** Truncates to 0 bytes after the queued writes, for another attempt. */
  async reset(): Promise<void> {
    this.checkOpen();
    await this.queue;
    try {
      await this.fd!.truncate(0);
    } catch (e) {
      throw new CacheIoError(this.tempPath, 'truncate', e);
    }
    this.position = 0;
    this.failure = undefined;
  }

  /**
   * Renames the file into `<dir>/XX/rest` for `hash` and returns that path. The caller verified the bytes.
   * Only after the rename is the quota manager told (it may evict other objects to make room).
   */
  async commit(hash: ContentHash, info: CommitInfo = { description: '', kind: 'regular' }): Promise<string> {
    this.checkOpen();
    const final = this.cache.pathOf(hash);
    try {
      await this.finish();
      await rename(this.tempPath, final);
    } catch (e) {
      await this.abort();
      throw CvmfsError.is(e) ? e : new CacheIoError(final, 'commit', e);
    }
    this.cache.quota.insert(hash, this.position, info.description, info.kind);
    return final;
  }

  /** Keeps the file for post-mortem in `quarantaine/` (e.g. verified bytes of an unexpected size). */
  async quarantine(name: string): Promise<string> {
    this.checkOpen();
    const dest = join(this.cache.quarantineDir, name.replace(/[/\0]/g, '_'));
    try {
      await this.finish();
      await rename(this.tempPath, dest);
    } catch (e) {
      await this.abort();
      throw CvmfsError.is(e) ? e : new CacheIoError(dest, 'quarantine', e);
    }
    return dest;
  }

  /** Closes and removes the temporary file; idempotent, never throws. */
  async abort(): Promise<void> {
    this.ended = true;
    await this.queue;
    const fd = this.fd;
    this.fd = undefined;
    if (fd) await fd.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
  }

  /** Waits for queued writes, surfaces a write failure, closes the file. */
  private async finish(): Promise<void> {
    this.ended = true;
    await this.queue;
    if (this.failure) throw this.failure;
    const fd = this.fd;
    this.fd = undefined;
    await fd!.close();
  }

  private checkOpen(): void {
    if (this.ended || !this.fd) throw new CacheIoError(this.tempPath, 'use a finished transaction', 'ended');
  }
}
