/**
 * Cache quota and LRU bookkeeping (facts sheet §5.9, §5.10), separate from the cache itself as in
 * cvmfs (`cvmfs/quota.h`): the cache tells its QuotaManager `insert` after a commit and `touch` on a
 * hit; users of objects `pin`/`unpin` them; the manager evicts least recently used, unpinned objects
 * when the cache grows over its limit. `NoQuota` is the null object for CVMFS_QUOTA_LIMIT <= 0.
 *
 * `SqliteQuota` keeps the ledger in `<cacheDir>/cachedb` with cvmfs's table
 * `cache_catalog(sha1, size, acseq, path, type, pinned)` plus three of our own:
 *   - `usage` (one row: bytes and objects), kept exact by triggers on cache_catalog, so the used size
 *     is a point read instead of a SUM over every row;
 *   - `sessions(id, pid, start)`: one row per process using the database (daemons, tools);
 *   - `pins(sha1, session)`: what each running process holds (open files, attached catalogs).
 * `cache_catalog.pinned = 1` is a persistent pin set by `cvmfs-ts cache pin` (until `unpin`).
 *
 * Sharing (CVMFS_SHARED_CACHE): several daemons open the same database at once. It runs in WAL mode
 * (readers never wait; one writer at a time) with a busy timeout, and every write is a short
 * `BEGIN IMMEDIATE` transaction, so two processes' read-modify-write steps (next acseq, used size →
 * victims) never interleave. The cache directory must be on a local file system (WAL needs shared
 * memory); cvmfs has the same restriction for its shared cache manager.
 *
 * Dead processes: a session whose process is gone (pid + start time, see process-identity.ts) was not
 * closed cleanly. Its pins are dropped by whoever notices first (at open and before every eviction),
 * and the next process to open the database reconciles it with the directory.
 *
 * Cost on the daemon's JS thread (better-sqlite3 is synchronous): touches and pins are BATCHED in
 * memory and written in one transaction at most every `flushMs` (1 s) or every `flushOps` (1024)
 * operations, whichever comes first, and before any eviction, listing or close. So a cache hit costs a
 * Map update, and a file opened, read and closed within one batch costs no database write at all (its
 * pin and unpin cancel out). Within this process pins take effect at once (the in-memory count is
 * consulted by eviction); other processes see them after the next flush — until then an object a
 * process is reading may be unlinked by another one, which is harmless for the reader (it holds an open
 * descriptor) and only costs a new download for the next opener. Inserts are written at once (one row
 * per downloaded object, next to a network transfer) because they may trigger an eviction.
 *
 * Eviction (§5.10): when used > limit after an insert, unpinned rows are taken in ascending acseq
 * until used <= limit / 2. Rows are deleted in the transaction that chose them, and the files are
 * unlinked afterwards, asynchronously. A crash in between leaves files without rows, which the next
 * reconcile adds back (at the cold end of the LRU order). The just-inserted object is never a victim
 * (its fetcher is about to open it). If pinned objects keep the cache over its target, the eviction
 * stops there and warns; the insert itself never fails.
 *
 * Reconcile (after a crash, a missing or damaged database, or `cvmfs-ts cache rebuild`): scan 00..ff;
 * drop rows whose file is gone; drop rows AND files whose size disagrees (a file is never written after
 * its rename into place, so only damage outside our control can cause that); add files without a row,
 * ordered by max(atime, mtime), colder than every known entry.
 */
import Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { readdir, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { ContentHash } from '../format/hash';
import { CvmfsError, describeError } from '../errors';
import { isAlive, selfIdentity } from './process-identity';

export type QuotaKind = 'regular' | 'catalog';

export interface QuotaEntry {
  /** Hex hash with algorithm id, no suffix (the cache file is `<hash[0..2]>/<hash[2..]>`). */
  readonly hash: string;
  readonly size: number;
  /** Access sequence: higher = used more recently. */
  readonly acseq: number;
  readonly description: string;
  readonly kind: QuotaKind;
  /** Persistent pin (`cvmfs-ts cache pin`). */
  readonly pinned: boolean;
  /** Pids of processes that held it at their last flush (open files, attached catalogs). */
  readonly heldBy: readonly number[];
}

export interface QuotaListOptions {
  kind?: QuotaKind;
  /** Only entries pinned persistently or held by a process. */
  pinnedOnly?: boolean;
}

export type RemoveResult = 'removed' | 'not-cached' | 'pinned';

export interface QuotaManager {
  /** False for the null object: nothing is recorded and nothing is ever evicted. */
  readonly managed: boolean;
  /** A verified object was committed to the cache (already renamed into place). */
  insert(hash: ContentHash, size: number, description: string, kind: QuotaKind): void;
  /** A cache hit: the object becomes the most recently used. */
  touch(hash: ContentHash): void;
  /** Protects an object from eviction while it is in use; counted, so pin twice → unpin twice. */
  pin(hash: ContentHash): void;
  unpin(hash: ContentHash): void;
  /** Removes an object from the cache unless it is pinned. */
  remove(hash: ContentHash): Promise<RemoveResult>;
  /** Evicts least recently used, unpinned objects until at most `targetBytes` are used; false if pins prevent it. */
  cleanup(targetBytes: number): Promise<boolean>;
  /** Bytes used by cached objects (as recorded). */
  size(): number;
  /** The limit in bytes; 0 = unmanaged. */
  capacity(): number;
  /** Objects and bytes this process evicted to stay under the limit (metrics). */
  evictions(): { readonly objects: number; readonly bytes: number };
  list(o?: QuotaListOptions): QuotaEntry[];
  /** Used, pinned and object counts as recorded (zeros when unmanaged). */
  usage(): QuotaUsage;
  /** Sets or clears the persistent pin of a cached object; false if it is not in the ledger. */
  setPersistentPin(hash: ContentHash, on: boolean): boolean;
  /** Writes batched touches and pins now. */
  flush(): void;
  /** Flushes, waits for pending unlinks, releases this process's pins. */
  close(): Promise<void>;
}

/** CVMFS_QUOTA_LIMIT <= 0: the cache grows without bound and nobody keeps a ledger. */
export class NoQuota implements QuotaManager {
  readonly managed = false;
  insert(): void {}
  touch(): void {}
  pin(): void {}
  unpin(): void {}
  async remove(): Promise<RemoveResult> {
    return 'not-cached';
  }
  async cleanup(): Promise<boolean> {
    return true;
  }
  size(): number {
    return 0;
  }
  capacity(): number {
    return 0;
  }
  evictions(): { objects: number; bytes: number } {
    return { objects: 0, bytes: 0 };
  }
  list(): QuotaEntry[] {
    return [];
  }
  usage(): QuotaUsage {
    return { bytes: 0, objects: 0, pinnedBytes: 0, lastLimitBytes: 0 };
  }
  setPersistentPin(): boolean {
    return false;
  }
  flush(): void {}
  async close(): Promise<void> {}
}

export const NO_QUOTA: QuotaManager = new NoQuota();

export type QuotaLog = (level: 'info' | 'warn', message: string) => void;

export interface SqliteQuotaOptions {
  /** Limit in bytes; <= 0 or undefined: record, but never evict on our own (the CLI tools). */
  limitBytes?: number;
  log?: QuotaLog;
  /** Batching of touches and pins (see the module comment). */
  flushMs?: number;
  flushOps?: number;
  /** Reconcile with the directory even without evidence of a crash. */
  reconcile?: boolean;
  /** SQLite busy timeout (ms) when another process holds the write lock. */
  busyTimeoutMs?: number;
}

export interface ReconcileReport {
  files: number;
  /** Rows dropped because their file is gone. */
  missing: number;
  /** Files (and rows) removed because their size disagreed with the ledger. */
  damaged: number;
  /** Files added to the ledger. */
  added: number;
}

export interface QuotaUsage {
  bytes: number;
  objects: number;
  pinnedBytes: number;
  /** The limit the last daemon opened this database with (bytes), 0 if none. */
  lastLimitBytes: number;
}

export const CACHEDB = 'cachedb';
const SCHEMA = `
CREATE TABLE IF NOT EXISTS properties (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cache_catalog (sha1 TEXT PRIMARY KEY, size INTEGER, acseq INTEGER, path TEXT, type INTEGER, pinned INTEGER);
CREATE UNIQUE INDEX IF NOT EXISTS idx_cache_catalog_acseq ON cache_catalog (acseq);
CREATE TABLE IF NOT EXISTS usage (id INTEGER PRIMARY KEY CHECK (id = 1), bytes INTEGER NOT NULL, objects INTEGER NOT NULL);
INSERT OR IGNORE INTO usage SELECT 1, IFNULL(SUM(size), 0), COUNT(*) FROM cache_catalog;
CREATE TRIGGER IF NOT EXISTS usage_insert AFTER INSERT ON cache_catalog
  BEGIN UPDATE usage SET bytes = bytes + NEW.size, objects = objects + 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_delete AFTER DELETE ON cache_catalog
  BEGIN UPDATE usage SET bytes = bytes - OLD.size, objects = objects - 1 WHERE id = 1; END;
CREATE TRIGGER IF NOT EXISTS usage_update AFTER UPDATE OF size ON cache_catalog
  BEGIN UPDATE usage SET bytes = bytes - OLD.size + NEW.size WHERE id = 1; END;
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, pid INTEGER NOT NULL, start TEXT NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pins (sha1 TEXT NOT NULL, session INTEGER NOT NULL, PRIMARY KEY (sha1, session)) WITHOUT ROWID;
INSERT OR IGNORE INTO properties VALUES ('schema', '1.0');
`;
const TYPE_OF: Record<QuotaKind, number> = { regular: 0, catalog: 1 };
const WARN_INTERVAL_MS = 60_000;
const UNLINK_PARALLEL = 16;
const SCAN_PARALLEL = 8;

interface Row {
  sha1: string;
  size: number;
}

/** Path of a cached object from its ledger key (`cachePath` without parsing the hash). */
export function objectFile(dir: string, sha1: string): string {
  return join(dir, sha1.slice(0, 2), sha1.slice(2));
}

function isCorruption(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return code === 'SQLITE_CORRUPT' || code === 'SQLITE_NOTADB' || code === 'SQLITE_CORRUPT_INDEX';
}

export class SqliteQuota implements QuotaManager {
  readonly managed = true;
  private readonly limit: number;
  private readonly log: QuotaLog;
  private readonly flushMs: number;
  private readonly flushOps: number;
  /** Touched since the last flush, in access order (re-touching moves a key to the end). */
  private readonly touches = new Map<string, true>();
  /** This process's pin counts, and which of them are recorded in `pins`. */
  private readonly localPins = new Map<string, number>();
  private readonly recordedPins = new Set<string>();
  private readonly dirtyPins = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly unlinking = new Set<Promise<void>>();
  private lastWarning = 0;
  private closed = false;
  private readonly evicted = { objects: 0, bytes: 0 };
  private readonly session: number;
  private readonly st: ReturnType<typeof prepareStatements>;

  private constructor(
    readonly dir: string,
    private readonly db: Database.Database,
    o: SqliteQuotaOptions,
  ) {
    this.limit = Math.max(o.limitBytes ?? 0, 0);
    this.log = o.log ?? (() => undefined);
    this.flushMs = o.flushMs ?? 1000;
    this.flushOps = o.flushOps ?? 1024;
    this.st = prepareStatements(db);
    const me = selfIdentity();
    this.session = this.write(() => {
      const dead = this.reapDeadSessions(-1);
      if (dead > 0) this.log('warn', `cache ${dir}: ${dead} process(es) using it ended without closing it; reconciling`);
      if (this.limit > 0) this.st.setProperty.run('limit', String(this.limit));
      return Number(
        db.prepare('INSERT INTO sessions (pid, start, since) VALUES (?, ?, ?)').run(me.pid, me.start, Date.now()).lastInsertRowid,
      );
    });
  }

  /**
   * Opens (creating, repairing or rebuilding as needed) the ledger of the cache directory `dir`,
   * which must exist with its 00..ff subdirectories. Cleans up to the threshold if over the limit.
   */
  static async open(dir: string, o: SqliteQuotaOptions = {}): Promise<SqliteQuota> {
    const file = join(dir, CACHEDB);
    let db: Database.Database;
    let fresh: boolean;
    try {
      ({ db, fresh } = openDatabase(file, o.busyTimeoutMs ?? 10_000));
    } catch (e) {
      if (!isCorruption(e)) throw new CvmfsError('E_IO', `cache: cannot open ${file}: ${describeError(e)}`, { cause: e });
      const aside = join(dir, 'quarantaine', `cachedb.${Date.now()}`);
      (o.log ?? (() => undefined))('warn', `cache ${dir}: ${file} is damaged (${describeError(e)}); moved to ${aside}, rebuilding`);
      for (const suffix of ['', '-wal', '-shm']) await rename(file + suffix, aside + suffix).catch(() => undefined);
      ({ db, fresh } = openDatabase(file, o.busyTimeoutMs ?? 10_000));
    }
    let quota: SqliteQuota;
    try {
      quota = new SqliteQuota(dir, db, o);
    } catch (e) {
      db.close();
      throw new CvmfsError('E_IO', `cache: cannot use ${file}: ${describeError(e)}`, { cause: e });
    }
    try {
      if (fresh || o.reconcile || quota.st.getProperty.get('needs_reconcile') !== undefined) {
        const r = await quota.reconcile();
        if (r.files > 0 || r.missing > 0) {
          quota.log(
            'info',
            `cache ${dir}: ledger reconciled with ${r.files} files (${r.added} added, ${r.missing} missing, ${r.damaged} damaged removed)`,
          );
        }
      }
      if (quota.limit > 0 && quota.size() > quota.limit) await quota.cleanup(quota.limit / 2);
    } catch (e) {
      await quota.close().catch(() => undefined);
      throw e;
    }
    return quota;
  }

  /**
   * Marks the ledger of `dir` (if there is one) as out of step with the directory, so the next process
   * that opens it reconciles: called when a mount without a quota starts using the directory, since it
   * will add and read objects without telling the ledger.
   */
  static markStale(dir: string): void {
    const file = join(dir, CACHEDB);
    if (!existsSync(file)) return;
    try {
      const db = new Database(file, { timeout: 10_000, fileMustExist: true });
      try {
        db.prepare("INSERT INTO properties (key, value) VALUES ('needs_reconcile', '1') ON CONFLICT (key) DO UPDATE SET value = '1'").run();
      } finally {
        db.close();
      }
    } catch {
      // a damaged ledger is rebuilt at its next open anyway
    }
  }

  /** Pids of the other processes that have the ledger open (running mounts, tools). */
  otherProcesses(): number[] {
    return (this.st.sessions.all(this.session) as { pid: number }[]).map((s) => s.pid);
  }

  capacity(): number {
    return this.limit;
  }

  evictions(): { readonly objects: number; readonly bytes: number } {
    return this.evicted;
  }

  size(): number {
    return this.st.used.get() as number;
  }

  usage(): QuotaUsage {
    const u = this.st.usage.get() as { bytes: number; objects: number };
    const pinnedBytes = this.db
      .prepare(
        'SELECT IFNULL(SUM(size), 0) FROM cache_catalog c WHERE pinned = 1 OR EXISTS (SELECT 1 FROM pins p WHERE p.sha1 = c.sha1)',
      )
      .pluck()
      .get() as number;
    return { ...u, pinnedBytes, lastLimitBytes: Number(this.st.getProperty.get('limit') ?? 0) };
  }

  insert(hash: ContentHash, size: number, description: string, kind: QuotaKind): void {
    if (this.closed) return;
    const key = hash.toString();
    this.touches.delete(key);
    let victims: Row[] = [];
    let reached = true;
    try {
      this.write(() => {
        this.flushInside();
        this.st.upsert.run(key, size, (this.st.maxAcseq.get() as number) + 1, description, TYPE_OF[kind]);
        if (this.limit > 0 && this.size() > this.limit) ({ victims, reached } = this.chooseVictims(this.limit / 2, key));
      });
    } catch (e) {
      this.warn(`cannot record ${key} (${description}): ${describeError(e)}`);
      return;
    }
    if (!reached) this.warnPinned(this.limit / 2);
    this.countEvicted(victims);
    if (victims.length > 0) void this.unlinkFiles(victims.map((v) => v.sha1));
  }

  touch(hash: ContentHash): void {
    if (this.closed) return;
    const key = hash.toString();
    this.touches.delete(key);
    this.touches.set(key, true);
    this.scheduleFlush();
  }

  pin(hash: ContentHash): void {
    if (this.closed) return;
    const key = hash.toString();
    const n = this.localPins.get(key) ?? 0;
    this.localPins.set(key, n + 1);
    if (n === 0) {
      this.dirtyPins.add(key);
      this.scheduleFlush();
    }
  }

  unpin(hash: ContentHash): void {
    const key = hash.toString();
    const n = this.localPins.get(key);
    if (n === undefined) return;
    if (n > 1) {
      this.localPins.set(key, n - 1);
      return;
    }
    this.localPins.delete(key);
    this.dirtyPins.add(key);
    this.scheduleFlush();
  }

  /** Pins held by this process right now (hash → count), for status and tests. */
  heldPins(): ReadonlyMap<string, number> {
    return this.localPins;
  }

  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.touches.size === 0 && ![...this.dirtyPins].some((k) => this.localPins.has(k) !== this.recordedPins.has(k))) {
      this.dirtyPins.clear();
      return;
    }
    try {
      this.write(() => this.flushInside());
    } catch (e) {
      this.warn(`cannot record accesses: ${describeError(e)}`);
    }
  }

  async cleanup(targetBytes: number): Promise<boolean> {
    let victims: Row[] = [];
    let reached = true;
    this.write(() => {
      this.flushInside();
      ({ victims, reached } = this.chooseVictims(targetBytes));
    });
    this.countEvicted(victims);
    await this.unlinkFiles(victims.map((v) => v.sha1));
    if (!reached) this.warnPinned(targetBytes);
    return reached;
  }

  async remove(hash: ContentHash): Promise<RemoveResult> {
    const key = hash.toString();
    const verdict = this.write((): RemoveResult | 'no-row' => {
      this.flushInside();
      this.reapDeadSessions(this.session);
      const row = this.st.get.get(key) as { pinned: number } | undefined;
      if (this.localPins.has(key) || this.st.held.get(key) !== undefined || row?.pinned) return 'pinned';
      if (!row) return 'no-row';
      this.st.deleteRow.run(key);
      return 'removed';
    });
    if (verdict === 'pinned') return 'pinned';
    try {
      await unlink(objectFile(this.dir, key));
      return 'removed';
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new CvmfsError('E_IO', `cache: cannot remove ${key}: ${describeError(e)}`);
      return verdict === 'removed' ? 'removed' : 'not-cached';
    }
  }

  /** Sets or clears the persistent pin of a cached object; false if it is not in the ledger. */
  setPersistentPin(hash: ContentHash, on: boolean): boolean {
    return this.write(() => this.st.sticky.run(on ? 1 : 0, hash.toString()).changes > 0);
  }

  list(o: QuotaListOptions = {}): QuotaEntry[] {
    this.flush();
    const where: string[] = [];
    if (o.kind) where.push(`c.type = ${TYPE_OF[o.kind]}`);
    if (o.pinnedOnly) where.push('(c.pinned = 1 OR EXISTS (SELECT 1 FROM pins q WHERE q.sha1 = c.sha1))');
    const rows = this.db
      .prepare(
        'SELECT c.sha1, c.size, c.acseq, c.path, c.type, c.pinned, ' +
          '(SELECT group_concat(s.pid) FROM pins p JOIN sessions s ON s.id = p.session WHERE p.sha1 = c.sha1) AS held ' +
          `FROM cache_catalog c ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY c.acseq`,
      )
      .all() as { sha1: string; size: number; acseq: number; path: string | null; type: number; pinned: number; held: string | null }[];
    return rows.map((r) => ({
      hash: r.sha1,
      size: r.size,
      acseq: r.acseq,
      description: r.path ?? '',
      kind: r.type === 1 ? 'catalog' : 'regular',
      pinned: r.pinned === 1,
      heldBy: r.held ? [...new Set(r.held.split(',').map(Number))] : [],
    }));
  }

  /**
   * Removes every object that is neither pinned nor held by a running process (after reconciling,
   * so files missing from the ledger go too). Returns what was removed and what was kept.
   */
  async wipe(): Promise<{ removed: number; removedBytes: number; kept: number; keptBytes: number; holders: number[] }> {
    await this.reconcile();
    let victims: Row[] = [];
    this.write(() => {
      this.flushInside();
      this.reapDeadSessions(this.session);
      victims = (this.st.victims.all() as Row[]).filter((r) => !this.localPins.has(r.sha1));
      for (const v of victims) this.st.deleteRow.run(v.sha1);
    });
    await this.unlinkFiles(victims.map((v) => v.sha1));
    const u = this.st.usage.get() as { bytes: number; objects: number };
    const holders = this.db
      .prepare('SELECT DISTINCT s.pid FROM sessions s JOIN pins p ON p.session = s.id WHERE s.id != ?')
      .pluck()
      .all(this.session) as number[];
    return {
      removed: victims.length,
      removedBytes: victims.reduce((a, v) => a + v.size, 0),
      kept: u.objects,
      keptBytes: u.bytes,
      holders,
    };
  }

  /** Makes the ledger agree with the files in 00..ff (see the module comment). */
  async reconcile(): Promise<ReconcileReport> {
    this.flush();
    const before = this.st.maxAcseq.get() as number;
    const files = await scanObjects(this.dir);
    let damaged: string[] = [];
    const report = this.write((): ReconcileReport => {
      this.flushInside();
      this.db.exec('CREATE TEMP TABLE IF NOT EXISTS fscache (sha1 TEXT PRIMARY KEY, size INTEGER, atime REAL); DELETE FROM temp.fscache;');
      const add = this.db.prepare('INSERT OR REPLACE INTO temp.fscache VALUES (?, ?, ?)');
      for (const f of files) add.run(f.sha1, f.size, f.atime);
      const missing = this.db
        .prepare('DELETE FROM cache_catalog WHERE acseq <= ? AND sha1 NOT IN (SELECT sha1 FROM temp.fscache)')
        .run(before).changes;
      const orphans = this.db
        .prepare(
          'SELECT f.sha1, f.size FROM temp.fscache f WHERE NOT EXISTS (SELECT 1 FROM cache_catalog c WHERE c.sha1 = f.sha1) ORDER BY f.atime, f.sha1',
        )
        .all() as Row[];
      damaged = this.db
        .prepare('SELECT c.sha1 FROM cache_catalog c JOIN temp.fscache f ON f.sha1 = c.sha1 WHERE c.size != f.size')
        .pluck()
        .all() as string[];
      for (const d of damaged) this.st.deleteRow.run(d);
      const min = this.st.minAcseq.get() as number | null;
      let seq = (min ?? orphans.length + 1) - orphans.length;
      for (const o of orphans) this.st.upsert.run(o.sha1, o.size, seq++, 'unknown (found in the cache directory)', 0);
      // The triggers keep usage exact; a full pass is the moment to make sure of it.
      this.db.exec('UPDATE usage SET bytes = (SELECT IFNULL(SUM(size), 0) FROM cache_catalog), objects = (SELECT COUNT(*) FROM cache_catalog) WHERE id = 1');
      this.st.deleteProperty.run('needs_reconcile');
      this.db.exec('DROP TABLE temp.fscache');
      return { files: files.length, missing, damaged: damaged.length, added: orphans.length };
    });
    if (damaged.length > 0) {
      this.log('warn', `cache ${this.dir}: removing ${damaged.length} object(s) whose size disagrees with the ledger`);
      await this.unlinkFiles(damaged);
    }
    return report;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    await Promise.all([...this.unlinking]);
    try {
      this.write(() => {
        this.st.dropSessionPins.run(this.session);
        this.st.dropSession.run(this.session);
      });
    } catch (e) {
      this.warn(`cannot end session: ${describeError(e)}`);
    }
    this.db.close();
  }

  /** Waits for unlinks started by evictions (tests, close). */
  async idle(): Promise<void> {
    while (this.unlinking.size > 0) await Promise.all([...this.unlinking]);
  }

  // ---- inside write transactions ----

  /**
   * Runs `fn` in one BEGIN IMMEDIATE transaction. If it fails (rolled back), the batched touches and pin
   * changes that flushInside consumed are put back, so memory never claims what the database lacks.
   */
  private write<T>(fn: () => T): T {
    const touches = this.touches.size > 0 ? [...this.touches.keys()] : [];
    const dirty = this.dirtyPins.size > 0 ? [...this.dirtyPins] : [];
    const recorded = dirty.length > 0 ? new Set(this.recordedPins) : undefined;
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      for (const k of touches) if (!this.touches.has(k)) this.touches.set(k, true);
      for (const k of dirty) this.dirtyPins.add(k);
      if (recorded) {
        this.recordedPins.clear();
        for (const k of recorded) this.recordedPins.add(k);
      }
      throw e;
    }
  }

  private flushInside(): void {
    if (this.touches.size > 0) {
      let seq = (this.st.maxAcseq.get() as number) + 1;
      for (const key of this.touches.keys()) this.st.touch.run(seq++, key);
      this.touches.clear();
    }
    for (const key of this.dirtyPins) {
      const want = this.localPins.has(key);
      if (want && !this.recordedPins.has(key)) {
        this.st.addPin.run(key, this.session);
        this.recordedPins.add(key);
      } else if (!want && this.recordedPins.has(key)) {
        this.st.dropPin.run(key, this.session);
        this.recordedPins.delete(key);
      }
    }
    this.dirtyPins.clear();
  }

  /** Drops the sessions (and pins) of processes that are gone; returns how many. */
  private reapDeadSessions(self: number): number {
    let dead = 0;
    for (const s of this.st.sessions.all(self) as { id: number; pid: number; start: string }[]) {
      if (isAlive({ pid: s.pid, start: s.start })) continue;
      this.st.dropSessionPins.run(s.id);
      this.st.dropSession.run(s.id);
      dead++;
    }
    if (dead > 0) this.st.setProperty.run('needs_reconcile', '1');
    return dead;
  }

  /** Chooses and deletes LRU rows until used <= target; the files are the caller's to unlink. */
  private chooseVictims(target: number, exclude?: string): { victims: Row[]; reached: boolean } {
    this.reapDeadSessions(this.session);
    let used = this.size();
    const victims: Row[] = [];
    if (used <= target) return { victims, reached: true };
    for (const row of this.st.victims.iterate() as IterableIterator<Row>) {
      if (row.sha1 === exclude || this.localPins.has(row.sha1)) continue;
      victims.push(row);
      used -= row.size;
      if (used <= target) break;
    }
    for (const v of victims) this.st.deleteRow.run(v.sha1);
    return { victims, reached: used <= target };
  }

  /** Counted once the transaction that deleted their rows has committed. */
  private countEvicted(victims: readonly Row[]): void {
    this.evicted.objects += victims.length;
    for (const v of victims) this.evicted.bytes += v.size;
  }

  // ---- outside ----

  private scheduleFlush(): void {
    if (this.touches.size + this.dirtyPins.size >= this.flushOps) {
      this.flush();
      return;
    }
    if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        if (!this.closed) this.flush();
      }, this.flushMs);
      this.timer.unref();
    }
  }

  private unlinkFiles(keys: string[]): Promise<void> {
    if (keys.length === 0) return Promise.resolve();
    const job = (async () => {
      for (let i = 0; i < keys.length; i += UNLINK_PARALLEL) {
        await Promise.all(
          keys.slice(i, i + UNLINK_PARALLEL).map((k) =>
            unlink(objectFile(this.dir, k)).catch((e: NodeJS.ErrnoException) => {
              if (e.code !== 'ENOENT') this.warn(`cannot remove ${k}: ${describeError(e)}`);
            }),
          ),
        );
      }
    })();
    this.unlinking.add(job);
    void job.finally(() => this.unlinking.delete(job));
    return job;
  }

  private warnPinned(target: number): void {
    const now = Date.now();
    if (now - this.lastWarning < WARN_INTERVAL_MS) return;
    this.lastWarning = now;
    this.log('warn', `cache ${this.dir}: cannot clean up to ${Math.round(target / 1048576)} MB: the rest is pinned (open files, catalogs)`);
  }

  private warn(message: string): void {
    this.log('warn', `cache ${this.dir}: ${message}`);
  }
}

function prepareStatements(db: Database.Database) {
  return {
    maxAcseq: db.prepare('SELECT IFNULL(MAX(acseq), 0) AS m FROM cache_catalog').pluck(),
    minAcseq: db.prepare('SELECT MIN(acseq) AS m FROM cache_catalog').pluck(),
    upsert: db.prepare(
      'INSERT INTO cache_catalog (sha1, size, acseq, path, type, pinned) VALUES (?, ?, ?, ?, ?, 0) ' +
        'ON CONFLICT (sha1) DO UPDATE SET size = excluded.size, acseq = excluded.acseq, path = excluded.path, type = excluded.type',
    ),
    touch: db.prepare('UPDATE cache_catalog SET acseq = ? WHERE sha1 = ?'),
    used: db.prepare('SELECT bytes FROM usage WHERE id = 1').pluck(),
    usage: db.prepare('SELECT bytes, objects FROM usage WHERE id = 1'),
    get: db.prepare('SELECT sha1, size, pinned FROM cache_catalog WHERE sha1 = ?'),
    held: db.prepare('SELECT 1 FROM pins WHERE sha1 = ? LIMIT 1').pluck(),
    deleteRow: db.prepare('DELETE FROM cache_catalog WHERE sha1 = ?'),
    victims: db.prepare(
      'SELECT sha1, size FROM cache_catalog c WHERE pinned = 0 ' +
        'AND NOT EXISTS (SELECT 1 FROM pins p WHERE p.sha1 = c.sha1) ORDER BY acseq',
    ),
    addPin: db.prepare('INSERT OR IGNORE INTO pins (sha1, session) VALUES (?, ?)'),
    dropPin: db.prepare('DELETE FROM pins WHERE sha1 = ? AND session = ?'),
    sessions: db.prepare('SELECT id, pid, start FROM sessions WHERE id != ?'),
    dropSessionPins: db.prepare('DELETE FROM pins WHERE session = ?'),
    dropSession: db.prepare('DELETE FROM sessions WHERE id = ?'),
    getProperty: db.prepare('SELECT value FROM properties WHERE key = ?').pluck(),
    setProperty: db.prepare('INSERT INTO properties (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    deleteProperty: db.prepare('DELETE FROM properties WHERE key = ?'),
    sticky: db.prepare('UPDATE cache_catalog SET pinned = ? WHERE sha1 = ?'),
  };
}

function openDatabase(file: string, busyTimeoutMs: number): { db: Database.Database; fresh: boolean } {
  const db = new Database(file, { timeout: busyTimeoutMs });
  try {
    db.pragma('journal_mode = WAL');
    // WAL + NORMAL: a killed process loses nothing (the WAL is in the OS); a power cut may lose the
    // last transactions but never corrupts the database. The ledger is rebuildable anyway.
    db.pragma('synchronous = NORMAL');
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') throw Object.assign(new Error(`quick_check: ${String(check)}`), { code: 'SQLITE_CORRUPT' });
    const fresh = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'cache_catalog'").get() === undefined;
    db.transaction(() => db.exec(SCHEMA)).immediate();
    return { db, fresh };
  } catch (e) {
    db.close();
    throw e;
  }
}

/** Every object file in 00..ff with its size and last use (max of atime and mtime, ms). */
async function scanObjects(dir: string): Promise<{ sha1: string; size: number; atime: number }[]> {
  const out: { sha1: string; size: number; atime: number }[] = [];
  const prefixes = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
  for (let i = 0; i < prefixes.length; i += SCAN_PARALLEL) {
    await Promise.all(
      prefixes.slice(i, i + SCAN_PARALLEL).map(async (prefix) => {
        let names: string[];
        try {
          names = await readdir(join(dir, prefix));
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
          throw e;
        }
        await Promise.all(
          names
            .filter((n) => /^[0-9a-f]{30,}(-[a-z0-9]+)?$/.test(n))
            .map(async (name) => {
              try {
                const s = await stat(join(dir, prefix, name));
                if (s.isFile()) out.push({ sha1: prefix + name, size: s.size, atime: Math.max(s.atimeMs, s.mtimeMs) });
              } catch {
                // gone meanwhile (evicted by another process)
              }
            }),
        );
      }),
    );
  }
  return out;
}
