/**
 * Read access to one catalog file (§3). Integers are read as bigint (`safeIntegers`): MD5 path
 * keys and hardlink words use all 64 bits. Older schema revisions lack some columns; the queries
 * adapt to what the file has, as the C++ client does.
 */
import Database from 'better-sqlite3';
import { createHash } from 'node:crypto';
import { ContentHash } from '../format/hash';
import { decodeFlags, type DecodedFlags } from '../format/flags';
import { decodeXattrs, type XattrMap } from '../format/xattr-blob';
import { pathKey, type PathKey } from '../format/path-key';
import { COUNTER_NAMES, unpackHardlinks, zeroCounters, type Counters } from '../format/catalog-schema';
import { FormatError } from '../errors';

export type FileType = 'directory' | 'regular' | 'symlink' | 'fifo' | 'socket' | 'char' | 'block';

const S_IFMT = 0o170000;
const TYPES: Record<number, FileType> = {
  0o040000: 'directory',
  0o100000: 'regular',
  0o120000: 'symlink',
  0o010000: 'fifo',
  0o140000: 'socket',
  0o020000: 'char',
  0o060000: 'block',
};

export function fileTypeOfMode(mode: number): FileType {
  const type = TYPES[mode & S_IFMT];
  if (!type) throw new FormatError(`mode ${mode.toString(8)} has no file type`);
  return type;
}

export interface CatalogEntry {
  readonly rowid: number;
  readonly key: PathKey;
  readonly parentKey: PathKey;
  readonly name: string;
  readonly type: FileType;
  readonly mode: number;
  readonly size: number; // devices: the rdev value
  readonly mtime: number;
  readonly mtimens: number | null;
  readonly uid: number;
  readonly gid: number;
  readonly linkCount: number;
  readonly hardlinkGroup: number;
  readonly hash: ContentHash | undefined;
  readonly symlink: string;
  readonly flags: DecodedFlags;
  readonly rawFlags: number;
  readonly xattrs: XattrMap;
}

export interface Chunk {
  readonly offset: number;
  readonly size: number;
  readonly hash: ContentHash;
}

export interface CatalogReference {
  readonly path: string;
  readonly hash: ContentHash | undefined; // empty `sha1` = unknown (legacy)
  readonly size: number;
}

/**
 * A row as SQLite returns it. A column may hold a value of any type (SQLite's columns are not typed, and
 * a damaged catalog may say anything): toEntry checks each value before use.
 */
interface RawRow {
  rowid: bigint;
  md5path_1: unknown;
  md5path_2: unknown;
  parent_1: unknown;
  parent_2: unknown;
  hardlinks: unknown;
  hash: unknown;
  size: unknown;
  mode: unknown;
  mtime: unknown;
  mtimens: unknown;
  flags: unknown;
  name: unknown;
  symlink: unknown;
  uid: unknown;
  gid: unknown;
  xattr: unknown;
}

/** SQLite's own errors on a damaged file ("database disk image is malformed", a missing table) as FormatError. */
function sqliteError(file: string, e: unknown): unknown {
  return e instanceof Database.SqliteError ? new FormatError(`${file}: ${e.message}`, { cause: e }) : e;
}

function kindOf(v: unknown): string {
  return v === null ? 'NULL' : Buffer.isBuffer(v) ? 'a blob' : typeof v === 'number' ? `the real ${v}` : `'${String(v).slice(0, 40)}'`;
}

/** An INTEGER column; NULL reads as `ifNull` where the format allows it. */
function int(v: unknown, column: string, ifNull?: bigint): bigint {
  if (typeof v === 'bigint') return v;
  if (v === null && ifNull !== undefined) return ifNull;
  throw new FormatError(`catalog column ${column} holds ${kindOf(v)}, not an integer`);
}

/** A TEXT column, read as the C++ client's sqlite3_column_text would (NULL as ""). */
function text(v: unknown): string {
  return v === null ? '' : Buffer.isBuffer(v) ? v.toString('utf8') : String(v);
}

/** A BLOB column (a hash): a blob or NULL. */
function blob(v: unknown, column: string): Buffer | null {
  if (v === null || Buffer.isBuffer(v)) return v;
  throw new FormatError(`catalog column ${column} holds ${kindOf(v)}, not a blob`);
}

/** A decimal property such as schema_revision; anything else reads as 0, like the C++ String2Uint64. */
function decimalProperty(v: string | undefined): number {
  return v !== undefined && /^\d{1,15}$/.test(v) ? Number(v) : 0;
}

export class CatalogDb {
  private readonly db: Database.Database;
  readonly schemaRevision: number;
  private readonly byKey: Database.Statement<[bigint, bigint], RawRow>;
  private readonly byParent: Database.Statement<[bigint, bigint], RawRow>;
  private readonly byParentLimited: Database.Statement<[bigint, bigint, number], RawRow>;
  private readonly chunkRows: Database.Statement<[bigint, bigint], { offset: unknown; size: unknown; hash: unknown }>;

  constructor(readonly file: string) {
    let db: Database.Database | undefined;
    try {
      db = this.db = new Database(file, { readonly: true, fileMustExist: true });
      this.db.defaultSafeIntegers(true);
      this.db.pragma('temp_store = 2');
      // Catalog pages come straight from the page cache instead of being copied (a mounted catalog is read a lot).
      this.db.pragma('mmap_size = 268435456');
      const props = this.properties();
      const schema = props.get('schema');
      if (schema !== '2.5' && schema !== '2.4') throw new FormatError(`catalog schema '${schema}' is not supported`);
      this.schemaRevision = decimalProperty(props.get('schema_revision'));
      // A damaged schema (a table or column missing) fails here, not at the first lookup.
      const columns = new Set(
        (this.db.prepare('PRAGMA table_info(catalog)').all() as { name: string }[]).map((c) => c.name),
      );
      const select =
        'SELECT rowid, md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, ' +
        `${columns.has('mtimens') ? 'mtimens' : 'NULL AS mtimens'}, flags, name, symlink, uid, gid, ` +
        `${columns.has('xattr') ? 'xattr' : 'NULL AS xattr'} FROM catalog`;
      this.byKey = this.db.prepare(`${select} WHERE md5path_1 = ? AND md5path_2 = ?`);
      this.byParent = this.db.prepare(`${select} WHERE parent_1 = ? AND parent_2 = ?`);
      this.byParentLimited = this.db.prepare(`${select} WHERE parent_1 = ? AND parent_2 = ? LIMIT ?`);
      this.chunkRows = this.db.prepare(
        'SELECT offset, size, hash FROM chunks WHERE md5path_1 = ? AND md5path_2 = ? ORDER BY offset ASC',
      );
    } catch (e) {
      db?.close(); // else every refused file stays open
      if (e instanceof FormatError) throw e;
      throw new FormatError(`${file} is not a readable catalog`, { cause: e });
    }
  }

  close(): void {
    this.db.close();
  }

  /** Runs a query, turning SQLite's errors on a damaged file into FormatError. */
  private guard<T>(fn: () => T): T {
    try {
      return fn();
    } catch (e) {
      throw sqliteError(this.file, e);
    }
  }

  /** Steps through a query's rows, each step guarded (a damaged page may show up half-way). */
  private *iterate<T>(statement: Database.Statement): IterableIterator<T> {
    const rows = this.guard(() => statement.iterate() as IterableIterator<T>);
    try {
      for (;;) {
        const next = this.guard(() => rows.next());
        if (next.done) return;
        yield next.value;
      }
    } finally {
      rows.return?.(); // a consumer that stops early must not leave the statement busy
    }
  }

  /** Rows with a NULL or non-text key are skipped; values read as text. */
  properties(): Map<string, string> {
    const rows = this.guard(() => this.db.prepare('SELECT key, value FROM properties').all() as { key: unknown; value: unknown }[]);
    return new Map(rows.filter((r) => typeof r.key === 'string' && r.value !== null).map((r) => [r.key as string, text(r.value)]));
  }

  /** The catalog's mount path: its `root_prefix`, "" for a root catalog. */
  rootPrefix(): string {
    return this.properties().get('root_prefix') ?? '';
  }

  revision(): number {
    return decimalProperty(this.properties().get('revision'));
  }

  /** self_ and subtree_ counters; missing rows read as 0. */
  counters(): { self: Counters; subtree: Counters } {
    const self = zeroCounters();
    const subtree = zeroCounters();
    const rows = this.guard(() => this.db.prepare('SELECT counter, value FROM statistics').all() as { counter: unknown; value: unknown }[]);
    const values = new Map(rows.map((r) => [r.counter, Number(int(r.value, `statistics ${text(r.counter)}`, 0n))]));
    for (const n of COUNTER_NAMES) {
      self[n] = values.get(`self_${n}`) ?? 0;
      subtree[n] = values.get(`subtree_${n}`) ?? 0;
    }
    return { self, subtree };
  }

  lookup(path: string): CatalogEntry | undefined {
    return this.lookupKey(pathKey(path));
  }

  lookupKey(key: PathKey): CatalogEntry | undefined {
    const row = this.guard(() => this.byKey.get(key.md5path1, key.md5path2));
    return row && toEntry(row);
  }

  /** Children of `path` in rowid order (hidden entries included; the caller decides); at most `limit`. */
  list(path: string, limit?: number): CatalogEntry[] {
    const key = pathKey(path);
    const rows = limit === undefined ? this.guard(() => this.byParent.all(key.md5path1, key.md5path2)) : this.guard(() => this.byParentLimited.all(key.md5path1, key.md5path2, limit));
    return rows.map(toEntry);
  }

  chunks(path: string, entry: CatalogEntry): Chunk[] {
    const key = pathKey(path);
    return this.guard(() => this.chunkRows.all(key.md5path1, key.md5path2)).map((r) => ({
      offset: Number(int(r.offset, 'chunks.offset')),
      size: Number(int(r.size, 'chunks.size')),
      hash: ContentHash.of(entry.flags.algorithm, blob(r.hash, 'chunks.hash') ?? Buffer.alloc(0)),
    }));
  }

  /** Highest row id: the size of the inode range the catalog reserves when mounted (§5.2). */
  maxRowid(): number {
    const row = this.guard(() => this.db.prepare('SELECT max(rowid) AS m FROM catalog').get() as { m: bigint | null });
    return Number(row.m ?? 0n);
  }

  /** For each hardlink group, its first row (the inode all its members share, §3.12). */
  hardlinkGroups(): { group: number; rowid: number }[] {
    const rows = this.guard(() => this.db
      .prepare('SELECT hardlinks >> 32 AS g, min(rowid) AS r FROM catalog WHERE hardlinks >= 4294967296 GROUP BY g')
      .all() as { g: bigint; r: bigint }[]);
    return rows.map((x) => ({ group: Number(x.g), rowid: Number(x.r) }));
  }

  /** Every entry, for whole-catalog checks and tree listings. */
  *allEntries(): IterableIterator<CatalogEntry> {
    const select = this.byKey.source.replace(/ WHERE .*$/, '');
    for (const row of this.iterate<RawRow>(this.guard(() => this.db.prepare(select)))) yield toEntry(row);
  }

  /** All chunk rows, for whole-catalog object checks. */
  allChunkHashes(): { key: PathKey; hash: Buffer }[] {
    const rows = this.guard(() => this.db.prepare('SELECT md5path_1, md5path_2, hash FROM chunks').all() as {
      md5path_1: unknown;
      md5path_2: unknown;
      hash: unknown;
    }[]);
    return rows.map((r) => ({
      key: { md5path1: int(r.md5path_1, 'chunks.md5path_1'), md5path2: int(r.md5path_2, 'chunks.md5path_2') },
      hash: blob(r.hash, 'chunks.hash') ?? Buffer.alloc(0),
    }));
  }

  /**
   * A digest of everything the catalog says about the tree (rows, chunks, nested references,
   * properties other than revision bookkeeping): equal digests mean a re-publish may keep the
   * previous catalog object instead of writing an identical one under a new revision.
   */
  contentDigest(): string {
    const hash = createHash('sha256');
    const feed = (sql: string) => {
      for (const row of this.iterate<unknown[]>(this.guard(() => this.db.prepare(sql).raw()))) {
        hash.update(JSON.stringify(row, (_k, v: unknown) =>
          typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? v.toString('hex') : v));
        hash.update('\n');
      }
      hash.update('--\n');
    };
    feed('SELECT md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, ' +
      `${this.schemaRevision >= 7 ? 'mtimens' : 'NULL'}, flags, name, symlink, uid, gid, ` +
      `${this.schemaRevision >= 2 ? 'xattr' : 'NULL'} FROM catalog ORDER BY md5path_1, md5path_2`);
    feed('SELECT md5path_1, md5path_2, offset, size, hash FROM chunks ORDER BY md5path_1, md5path_2, offset');
    feed('SELECT path, sha1, size FROM nested_catalogs ORDER BY path');
    feed("SELECT key, value FROM properties WHERE key NOT IN ('revision', 'last_modified', 'previous_revision') ORDER BY key");
    return hash.digest('hex');
  }

  nestedCatalogs(): CatalogReference[] {
    return this.references('nested_catalogs');
  }

  bindMountpoints(): CatalogReference[] {
    return this.schemaRevision >= 4 ? this.references('bind_mountpoints') : [];
  }

  private references(table: string): CatalogReference[] {
    const hasSize = this.schemaRevision >= 1;
    const rows = this.guard(() => this.db.prepare(`SELECT path, sha1, ${hasSize ? 'size' : '0 AS size'} FROM ${table}`).all() as {
      path: unknown;
      sha1: unknown;
      size: unknown;
    }[]);
    return rows.map((r) => {
      if (typeof r.path !== 'string') throw new FormatError(`${table}.path holds ${kindOf(r.path)}, not a path`);
      if (r.sha1 !== null && typeof r.sha1 !== 'string') throw new FormatError(`${table}.sha1 holds ${kindOf(r.sha1)}, not a hash`);
      return { path: r.path, hash: r.sha1 ? ContentHash.parse(r.sha1) : undefined, size: Number(int(r.size, `${table}.size`, 0n)) };
    });
  }
}

function toEntry(r: RawRow): CatalogEntry {
  const rawFlags = Number(int(r.flags, 'flags'));
  const flags = decodeFlags(rawFlags);
  const mode = Number(int(r.mode, 'mode'));
  const { group, linkCount } = unpackHardlinks(int(r.hardlinks, 'hardlinks', 1n));
  const hash = blob(r.hash, 'hash');
  return {
    rowid: Number(r.rowid),
    key: { md5path1: int(r.md5path_1, 'md5path_1'), md5path2: int(r.md5path_2, 'md5path_2') },
    parentKey: { md5path1: int(r.parent_1, 'parent_1'), md5path2: int(r.parent_2, 'parent_2') },
    name: text(r.name),
    type: fileTypeOfMode(mode),
    mode,
    size: Number(int(r.size, 'size', 0n)),
    mtime: Number(int(r.mtime, 'mtime', 0n)),
    mtimens: r.mtimens === null ? null : Number(int(r.mtimens, 'mtimens')),
    uid: Number(int(r.uid, 'uid', 0n)),
    gid: Number(int(r.gid, 'gid', 0n)),
    linkCount,
    hardlinkGroup: group,
    hash: hash && hash.length > 0 ? ContentHash.of(flags.algorithm, hash) : undefined,
    symlink: text(r.symlink),
    flags,
    rawFlags,
    xattrs: decodeXattrs(Buffer.isBuffer(r.xattr) ? r.xattr : null),
  };
}
