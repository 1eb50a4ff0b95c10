/**
 * Builds one catalog file (§3) in a temporary SQLite database while the publisher walks the tree,
 * keeping its statistics counters as rows are added (§3.11).
 */
import Database from 'better-sqlite3';
import { CATALOG_DDL, SCHEMA_REVISION, SCHEMA_VERSION, addCounters, packHardlinks, zeroCounters, type Counters } from '../format/catalog-schema';
import { encodeFlags, Compression, type EntryKind } from '../format/flags';
import { encodeXattrs, type XattrMap } from '../format/xattr-blob';
import { pathKey, parentPath, ROOT_PARENT_KEY } from '../format/path-key';
import type { ContentHash } from '../format/hash';
import type { HashAlgorithm } from '../format/hash';

export interface ChunkRecord {
  readonly offset: number;
  readonly size: number;
  readonly hash: ContentHash;
}

export interface NewEntry {
  readonly path: string; // full repository path, "" for the root
  readonly kind: EntryKind;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: number;
  /** null: unknown, as in a row carried over from a catalog older than schema revision 7. */
  readonly mtimens: number | null;
  /** Regular file: bytes; directory: st_size; symlink: target length; device: rdev. */
  readonly size: number;
  readonly linkCount: number;
  readonly hardlinkGroup?: number;
  readonly algorithm: HashAlgorithm;
  readonly hash?: ContentHash;
  readonly chunks?: readonly ChunkRecord[];
  readonly compression?: Compression;
  /** Regular file whose content lives on the external data server, not in data/ (§7.1). */
  readonly external?: boolean;
  /** Regular file the client opens with direct I/O (flag 0x10000); only ever carried over. */
  readonly directIo?: boolean;
  readonly symlink?: string;
  readonly xattrs?: XattrMap;
  readonly nestedMountpoint?: boolean;
  readonly nestedRoot?: boolean;
  /** A directory grafting another root catalog (§7.2; /.cvmfs/snapshots/<tag>). */
  readonly bindMountpoint?: boolean;
  readonly hidden?: boolean;
}

export interface CatalogCounters {
  self: Counters;
  subtree: Counters;
}

export interface CatalogProperties {
  revision: number;
  lastModified: number;
  previousRevision?: ContentHash;
  ttl?: number; // root catalog only
}

export class CatalogWriter {
  private readonly db: Database.Database;
  private readonly insertEntry: Database.Statement;
  private readonly insertChunk: Database.Statement;
  private readonly insertNested: Database.Statement;
  private readonly insertBind: Database.Statement;
  readonly counters: CatalogCounters = { self: zeroCounters(), subtree: zeroCounters() };
  private lastHardlinkGroup = 0;

  constructor(
    readonly file: string,
    /** Mount path of this catalog: "" for the root catalog. */
    readonly mountPath: string,
  ) {
    this.db = new Database(file);
    this.db.pragma('journal_mode = OFF'); // a temporary build file: nothing to recover
    this.db.pragma('synchronous = OFF');
    for (const ddl of CATALOG_DDL) this.db.exec(ddl);
    this.insertEntry = this.db.prepare(
      'INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, mtimens,' +
        ' flags, name, symlink, uid, gid, xattr) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.insertChunk = this.db.prepare('INSERT INTO chunks (md5path_1, md5path_2, offset, size, hash) VALUES (?, ?, ?, ?, ?)');
    this.insertNested = this.db.prepare('INSERT INTO nested_catalogs (path, sha1, size) VALUES (?, ?, ?)');
    this.insertBind = this.db.prepare('INSERT INTO bind_mountpoints (path, sha1, size) VALUES (?, ?, ?)');
    this.db.exec('BEGIN');
  }

  /** Hardlink group ids are catalog-wide (§3.12). */
  newHardlinkGroup(): number {
    return ++this.lastHardlinkGroup;
  }

  add(e: NewEntry): void {
    const key = pathKey(e.path);
    const parent = parentPath(e.path);
    const parentKey = parent === undefined ? ROOT_PARENT_KEY : pathKey(parent);
    const chunked = (e.chunks?.length ?? 0) > 0;
    const xattr = e.xattrs ? encodeXattrs(e.xattrs) : undefined;
    const flags = encodeFlags({
      kind: e.kind,
      nestedMountpoint: e.nestedMountpoint,
      nestedRoot: e.nestedRoot,
      bindMountpoint: e.bindMountpoint,
      hidden: e.hidden,
      chunked,
      external: e.external,
      directIo: e.directIo,
      compression: e.compression ?? Compression.Zlib,
      algorithm: e.hash || chunked ? e.algorithm : undefined,
    });
    this.insertEntry.run(
      key.md5path1,
      key.md5path2,
      parentKey.md5path1,
      parentKey.md5path2,
      packHardlinks(e.hardlinkGroup ?? 0, e.linkCount),
      e.hash ? e.hash.digest : null,
      e.size,
      e.mode,
      e.mtime,
      e.mtimens,
      flags,
      e.path === '' ? '' : e.path.slice(e.path.lastIndexOf('/') + 1),
      e.symlink ?? '',
      e.uid,
      e.gid,
      xattr ?? null,
    );
    for (const c of e.chunks ?? []) this.insertChunk.run(key.md5path1, key.md5path2, c.offset, c.size, c.hash.digest);
    this.count(e, chunked, xattr !== undefined);
  }

  private count(e: NewEntry, chunked: boolean, hasXattrs: boolean): void {
    const s = this.counters.self;
    if (hasXattrs) s.xattr++;
    switch (e.kind) {
      case 'directory':
        s.dir++;
        return;
      case 'symlink':
        s.symlink++;
        return;
      case 'special':
        s.special++;
        return;
      case 'regular':
        s.regular++;
        s.file_size += e.size;
        if (chunked) {
          s.chunked++;
          s.chunks += e.chunks!.length;
          s.chunked_size += e.size;
        }
        if (e.external) {
          s.external++;
          s.external_file_size += e.size;
        }
    }
  }

  /** Registers a finished direct child catalog and folds its counters into `subtree_`. */
  addNestedCatalog(path: string, hash: ContentHash, uncompressedSize: number, child: CatalogCounters): void {
    this.referenceNestedCatalog(path, hash, uncompressedSize);
    this.addSubtreeCounters(child.self);
    this.addSubtreeCounters(child.subtree);
  }

  /**
   * Registers a direct child catalog without its counters, for a child whose counters are only
   * known later as part of a sum: the caller must pass them to addSubtreeCounters before finish.
   */
  referenceNestedCatalog(path: string, hash: ContentHash, uncompressedSize: number): void {
    this.insertNested.run(path, hash.toString(), uncompressedSize);
    this.counters.self.nested++;
  }

  addSubtreeCounters(c: Counters): void {
    addCounters(this.counters.subtree, c);
  }

  /** Registers a bind mountpoint (§7.2); the grafted root catalog counts in no counter. */
  addBindMountpoint(path: string, hash: ContentHash, uncompressedSize: number): void {
    this.insertBind.run(path, hash.toString(), uncompressedSize);
  }

  /** Writes statistics and properties and closes the database. */
  finish(p: CatalogProperties): void {
    const stat = this.db.prepare('INSERT INTO statistics (counter, value) VALUES (?, ?)');
    for (const [prefix, counters] of [['self', this.counters.self], ['subtree', this.counters.subtree]] as const) {
      for (const [name, value] of Object.entries(counters)) stat.run(`${prefix}_${name}`, value);
    }
    const prop = this.db.prepare('INSERT INTO properties (key, value) VALUES (?, ?)');
    prop.run('schema', SCHEMA_VERSION);
    prop.run('schema_revision', String(SCHEMA_REVISION));
    if (this.mountPath !== '') prop.run('root_prefix', this.mountPath);
    if (p.ttl !== undefined) prop.run('TTL', String(p.ttl));
    prop.run('last_modified', String(p.lastModified));
    prop.run('revision', String(p.revision));
    if (p.previousRevision) prop.run('previous_revision', p.previousRevision.toString());
    this.db.exec('COMMIT');
    this.db.close();
  }

  /** Abandons the build (the caller removes the file). */
  discard(): void {
    if (this.db.open) {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
      this.db.close();
    }
  }
}
