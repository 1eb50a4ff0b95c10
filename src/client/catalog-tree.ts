/**
 * The mounted catalog tree (§5.2): the root catalog plus nested catalogs attached lazily, the
 * first time a path below their mountpoint is needed. Assigns inodes the C++ client's way — each
 * attached catalog reserves a range of max(rowid) numbers from a gauge starting at 255, so the
 * root entry (row 1) is inode 256 — which keeps inodes stable for the life of a revision.
 * Repeated lookups of a path are answered from an LRU cache without touching SQLite. The first
 * lookup in a directory of up to DIRECTORY_BATCH entries reads all of them with one query and
 * answers its siblings, present or missing, from that (a stat walk, or Python probing sys.path,
 * asks for most names of a directory one by one: one query per directory instead of per name).
 */
import { LRUCache } from 'lru-cache';
import type { ContentHash } from '../format/hash';
import type { CatalogDb, CatalogEntry, Chunk } from '../catalog/catalog-db';
import { CvmfsError } from '../errors';

export const ROOT_INODE = 256;
const INODE_OFFSET = 255;
/** Directories up to this many entries are read whole on the first lookup of one of their names. */
const DIRECTORY_BATCH = 256;
/** Entries kept in directory listings (a directory counts its entries plus one). */
const DIRECTORY_CACHE_ENTRIES = 200_000;

/** Loads (fetches, verifies, opens) a catalog by hash; `mountPath` is for messages. */
export type CatalogLoader = (hash: ContentHash, mountPath: string, expectedSize: number) => Promise<CatalogDb>;

export interface AttachedCatalog {
  /** Where the catalog appears in the mounted tree. */
  readonly mountPath: string;
  /**
   * The catalog's own path for its root (`root_prefix`): equal to mountPath for nested catalogs,
   * "" for a root catalog grafted at a bind mountpoint (§7.2), whose rows are keyed without it.
   */
  readonly rootPrefix: string;
  readonly hash: ContentHash;
  readonly db: CatalogDb;
  readonly inodeOffset: number;
  /** The catalog whose nested_catalogs lists this one (none for the root). */
  readonly parent: AttachedCatalog | undefined;
  /** Hardlink group → inode, filled on first use (§3.12). */
  hardlinkInodes?: Map<number, number>;
}

/** An entry as the file system serves it: catalog row plus where it lives and its inode. */
export interface ResolvedEntry {
  readonly path: string;
  readonly entry: CatalogEntry;
  readonly inode: number;
  readonly catalog: AttachedCatalog;
}

/** A nested catalog or bind mountpoint as its parent lists it. */
interface ChildCatalog {
  readonly path: string; // mounted path
  readonly hash: ContentHash;
  readonly size: number;
  /** The root_prefix the child must declare: its path in the parent (nested) or "" (bind mountpoint). */
  readonly expectedPrefix: string;
}

export class NotFound extends CvmfsError {
  constructor(path: string) {
    super('E_NOT_FOUND', `${path || '/'}: no such entry`);
  }
}

export class NotDirectory extends CvmfsError {
  constructor(path: string) {
    super('E_USAGE', `${path || '/'}: not a directory`);
  }
}

function isBelow(path: string, mountPath: string): boolean {
  return mountPath === '' || path === mountPath || path.startsWith(`${mountPath}/`);
}

export class CatalogTree {
  private readonly attached = new Map<string, AttachedCatalog>();
  private readonly attaching = new Map<string, Promise<AttachedCatalog>>();
  private readonly childrenOf = new WeakMap<AttachedCatalog, ChildCatalog[]>();
  private inodeGauge = INODE_OFFSET;
  private readonly lookups: LRUCache<string, ResolvedEntry | 'missing'>;
  /** Complete listings by directory path (name → entry); 'large' = more than DIRECTORY_BATCH entries. */
  private readonly directories: LRUCache<string, ReadonlyMap<string, ResolvedEntry> | 'large'>;

  private constructor(private readonly load: CatalogLoader) {
    this.lookups = new LRUCache({ max: 65536 });
    this.directories = new LRUCache({ maxSize: DIRECTORY_CACHE_ENTRIES, sizeCalculation: (v) => (v === 'large' ? 1 : v.size + 1) });
  }

  /**
   * `inodeBase`: where this tree's inode numbers start. A tree replacing another starts after the
   * old one's ceiling, so inodes the kernel still holds never name a different file (§5.2).
   */
  static async create(rootHash: ContentHash, load: CatalogLoader, rootSize = 0, inodeBase = INODE_OFFSET): Promise<CatalogTree> {
    const tree = new CatalogTree(load);
    tree.inodeGauge = inodeBase;
    tree.attach('', rootHash, await load(rootHash, '', rootSize));
    return tree;
  }

  get root(): AttachedCatalog {
    return this.attached.get('')!;
  }

  /** One past the highest inode this tree can hand out so far. */
  get inodeCeiling(): number {
    return this.inodeGauge;
  }

  /** Number of attached catalogs (magic xattr user.nclg). */
  get loadedCount(): number {
    return this.attached.size;
  }

  catalogs(): AttachedCatalog[] {
    return [...this.attached.values()];
  }

  private attach(mountPath: string, hash: ContentHash, db: CatalogDb, parent?: AttachedCatalog): AttachedCatalog {
    const catalog: AttachedCatalog = { mountPath, rootPrefix: db.rootPrefix(), hash, db, inodeOffset: this.inodeGauge, parent };
    this.inodeGauge += db.maxRowid();
    this.attached.set(mountPath, catalog);
    return catalog;
  }

  /** The deepest attached catalog whose mountpoint contains `path`. */
  private deepestAttached(path: string): AttachedCatalog {
    let best = this.root;
    for (const c of this.attached.values()) {
      if (c.mountPath.length > best.mountPath.length && isBelow(path, c.mountPath)) best = c;
    }
    return best;
  }

  /** Catalog-internal path of a mounted path (they differ below bind mountpoints). */
  private static dbPath(c: AttachedCatalog, path: string): string {
    return c.rootPrefix + path.slice(c.mountPath.length);
  }

  /**
   * Nested catalogs and bind mountpoints of a catalog, with their mounted paths. Read once per
   * attached catalog (its content is fixed by its hash): every uncached lookup walks them, and
   * querying SQLite each time cost about three times the row lookup itself (bench/fs profile).
   */
  private children(c: AttachedCatalog): ChildCatalog[] {
    let known = this.childrenOf.get(c);
    if (!known) {
      known = CatalogTree.readChildren(c);
      this.childrenOf.set(c, known);
    }
    return known;
  }

  private static readChildren(c: AttachedCatalog): ChildCatalog[] {
    const mounted = (dbPath: string) => c.mountPath + dbPath.slice(c.rootPrefix.length);
    const result: ChildCatalog[] = [];
    for (const r of c.db.nestedCatalogs()) {
      if (r.hash) result.push({ path: mounted(r.path), hash: r.hash, size: r.size, expectedPrefix: r.path });
    }
    for (const r of c.db.bindMountpoints()) {
      if (r.hash) result.push({ path: mounted(r.path), hash: r.hash, size: r.size, expectedPrefix: '' });
    }
    return result;
  }

  /** Attaches the catalog mounted at `ref.path` below `parent` (once, even if asked concurrently). */
  private attachChild(parent: AttachedCatalog, ref: ChildCatalog): Promise<AttachedCatalog> {
    const existing = this.attached.get(ref.path);
    if (existing) return Promise.resolve(existing);
    let pending = this.attaching.get(ref.path);
    if (!pending) {
      pending = (async () => {
        const db = await this.load(ref.hash, ref.path, ref.size);
        if (db.rootPrefix() !== ref.expectedPrefix) {
          throw new CvmfsError('E_FORMAT', `catalog ${ref.hash} claims root '${db.rootPrefix()}', expected '${ref.expectedPrefix}'`);
        }
        return this.attached.get(ref.path) ?? this.attach(ref.path, ref.hash, db, parent);
      })().finally(() => this.attaching.delete(ref.path));
      this.attaching.set(ref.path, pending);
    }
    return pending;
  }

  /**
   * Finds the catalog that holds `path`, attaching nested catalogs on the way. With
   * `forListing` false, a nested mountpoint itself is served from its parent's transition entry,
   * so stat-ing a mountpoint does not load the catalog below it.
   */
  private async catalogFor(path: string, forListing: boolean): Promise<AttachedCatalog> {
    let current = this.deepestAttached(path);
    for (;;) {
      const ref = this.children(current).find((r) => isBelow(path, r.path) && r.path !== current.mountPath);
      if (!ref) return current;
      if (ref.path === path && !forListing) return current;
      current = await this.attachChild(current, ref);
    }
  }

  /** Looks up a path ("" is the root); throws NotFound. */
  async lookup(path: string): Promise<ResolvedEntry> {
    const cached = this.lookups.get(path);
    if (cached === 'missing') throw new NotFound(path);
    if (cached) return cached;
    if (path !== '') {
      const slash = path.lastIndexOf('/');
      const siblings = await this.smallDirectory(path.slice(0, slash));
      if (siblings) {
        const found = siblings.get(path.slice(slash + 1));
        this.lookups.set(path, found ?? 'missing');
        if (!found) throw new NotFound(path);
        return found;
      }
    }
    const catalog = await this.catalogFor(path, false);
    const entry = catalog.db.lookup(CatalogTree.dbPath(catalog, path));
    if (!entry) {
      this.lookups.set(path, 'missing');
      throw new NotFound(path);
    }
    const resolved: ResolvedEntry = { path, entry, inode: this.inodeOf(catalog, entry, path), catalog };
    this.lookups.set(path, resolved);
    return resolved;
  }

  /** Children of a directory, hidden entries skipped (§5.3), in catalog order. */
  async list(path: string): Promise<ResolvedEntry[]> {
    const dir = await this.lookup(path);
    if (dir.entry.type !== 'directory') throw new NotDirectory(path);
    const known = this.directories.get(path);
    const children = known && known !== 'large' ? known : await this.readDirectory(path);
    return [...children.values()].filter((c) => !c.entry.flags.hidden);
  }

  /**
   * Every entry of directory `path` (hidden ones too), read with one query and kept; at most
   * `limit` (undefined when there are more, remembered as 'large').
   */
  private async readDirectory(path: string): Promise<ReadonlyMap<string, ResolvedEntry>>;
  private async readDirectory(path: string, limit: number): Promise<ReadonlyMap<string, ResolvedEntry> | undefined>;
  private async readDirectory(path: string, limit?: number): Promise<ReadonlyMap<string, ResolvedEntry> | undefined> {
    const catalog = await this.catalogFor(path, true);
    const entries = catalog.db.list(CatalogTree.dbPath(catalog, path), limit === undefined ? undefined : limit + 1);
    if (limit !== undefined && entries.length > limit) {
      this.directories.set(path, 'large');
      return undefined;
    }
    const children = new Map<string, ResolvedEntry>();
    for (const entry of entries) {
      const childPath = `${path}/${entry.name}`;
      // Keep an entry already handed out (same object for the same path).
      const earlier = this.lookups.get(childPath);
      children.set(entry.name, earlier && earlier !== 'missing' ? earlier : { path: childPath, entry, inode: this.inodeOf(catalog, entry, childPath), catalog });
    }
    this.directories.set(path, children);
    return children;
  }

  /** The complete listing of a small directory, or undefined (large, missing, not a directory). */
  private async smallDirectory(path: string): Promise<ReadonlyMap<string, ResolvedEntry> | undefined> {
    const known = this.directories.get(path);
    if (known !== undefined) return known === 'large' ? undefined : known;
    let dir: ResolvedEntry;
    try {
      dir = await this.lookup(path);
    } catch (e) {
      if (e instanceof NotFound) return undefined; // the row lookup says so again, for the full path
      throw e;
    }
    if (dir.entry.type !== 'directory') return undefined;
    return this.readDirectory(path, DIRECTORY_BATCH);
  }

  chunks(resolved: ResolvedEntry): Chunk[] {
    return resolved.catalog.db.chunks(CatalogTree.dbPath(resolved.catalog, resolved.path), resolved.entry);
  }

  private inodeOf(catalog: AttachedCatalog, entry: CatalogEntry, path: string): number {
    if (path === '') return ROOT_INODE; // whatever the revision, the root keeps its inode
    // A nested catalog's root entry keeps the inode of its parent's transition entry, so the
    // inode does not change when the nested catalog is attached.
    if (catalog.parent && catalog.mountPath === path) {
      const transition = catalog.parent.db.lookup(CatalogTree.dbPath(catalog.parent, path));
      if (transition) return catalog.parent.inodeOffset + transition.rowid;
    }
    if (entry.hardlinkGroup > 0 && entry.type !== 'directory') {
      catalog.hardlinkInodes ??= this.hardlinkGroupInodes(catalog);
      const inode = catalog.hardlinkInodes.get(entry.hardlinkGroup);
      if (inode !== undefined) return inode;
    }
    return catalog.inodeOffset + entry.rowid;
  }

  /** Group members share the inode of the group's first row, computed once per catalog. */
  private hardlinkGroupInodes(catalog: AttachedCatalog): Map<number, number> {
    const map = new Map<number, number>();
    for (const { group, rowid } of catalog.db.hardlinkGroups()) map.set(group, catalog.inodeOffset + rowid);
    return map;
  }
}
