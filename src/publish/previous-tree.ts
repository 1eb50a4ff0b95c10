/**
 * The previous revision as the union publish mode (`PublishOptions.union`) sees it: directory
 * listings read from the catalog that serves each directory (§5.2), rows turned back into entries
 * for the catalog writer, and nested catalogs carried over by reference, with what they add to
 * their new parent's `subtree_` counters worked out without reading them where possible.
 */
import type { CatalogDb, CatalogEntry, CatalogReference, Chunk, FileType } from '../catalog/catalog-db';
import type { Repository } from '../repository/repository';
import type { ContentHash } from '../format/hash';
import type { EntryKind } from '../format/flags';
import { COUNTER_NAMES, addCounters, zeroCounters, type Counters } from '../format/catalog-schema';
import type { NewEntry } from './catalog-writer';
import type { SourceEntry } from './source-tree';
import { FormatError } from '../errors';

/** One catalog of the previous revision. */
export interface PreviousCatalog {
  readonly hash: ContentHash;
  readonly db: CatalogDb;
  /** Its `nested_catalogs` and `bind_mountpoints` rows, by path. */
  readonly nested: ReadonlyMap<string, CatalogReference>;
  readonly binds: ReadonlyMap<string, CatalogReference>;
  /** Its own stored counters. */
  readonly counters: { self: Counters; subtree: Counters };
}

/** A directory of the previous revision and the catalog that lists its children. */
export interface PreviousDir {
  readonly path: string;
  /** Its row in `catalog`: the nested root entry when the directory starts that catalog. */
  readonly entry: CatalogEntry;
  readonly catalog: PreviousCatalog;
}

/** A reference of the previous revision that is kept as it is: the subtree below it is not read. */
export type Transition =
  | { kind: 'nested'; ref: CatalogReference & { hash: ContentHash } }
  | { kind: 'bind'; ref: CatalogReference & { hash: ContentHash } };

/** One name of a directory being published: from the source, from the previous revision, or both. */
export type UnionChild =
  | { name: string; source: SourceEntry; previous?: CatalogEntry }
  | { name: string; source?: undefined; previous: CatalogEntry };

/** Source and previous children merged by name, sorted by name bytes as listDirectory sorts. */
export function unionChildren(source: readonly SourceEntry[], previous: readonly CatalogEntry[]): UnionChild[] {
  const byName = new Map<string, UnionChild>();
  for (const e of previous) byName.set(e.name, { name: e.name, previous: e });
  for (const s of source) byName.set(s.name, { name: s.name, source: s, previous: byName.get(s.name)?.previous });
  return [...byName.values()].sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
}

/** Whether a merged child is a directory in the result (the source's kind wins). */
export function isDirectoryChild(c: UnionChild): boolean {
  return c.source ? c.source.stats.isDirectory() : c.previous.type === 'directory';
}

function entryKind(type: FileType): EntryKind {
  return type === 'directory' || type === 'regular' || type === 'symlink' ? type : 'special';
}

/**
 * A previous row as an entry for the catalog writer: same content hash, chunks, flags, xattrs,
 * mode, owner and times. The nested-root flag is not carried: a carried row never starts a
 * catalog. `group` is the row's hardlink group renumbered for the new catalog (group ids are
 * catalog-wide, §3.12); a file whose group has no other member left loses it.
 */
export function carriedEntry(
  path: string,
  e: CatalogEntry,
  chunks: readonly Chunk[] = [],
  group?: { id: number; count: number },
): NewEntry {
  return {
    path,
    kind: entryKind(e.type),
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtime: e.mtime,
    mtimens: e.mtimens,
    size: e.size,
    linkCount: group ? group.count : e.hardlinkGroup > 0 ? 1 : e.linkCount,
    hardlinkGroup: group?.id,
    algorithm: e.flags.algorithm,
    hash: e.hash,
    chunks,
    compression: e.flags.compression,
    external: e.flags.external,
    directIo: e.flags.directIo,
    symlink: e.symlink,
    xattrs: e.xattrs,
    nestedMountpoint: e.flags.nestedMountpoint,
    bindMountpoint: e.flags.bindMountpoint,
    hidden: e.flags.hidden,
  };
}

function byPath(refs: readonly CatalogReference[]): Map<string, CatalogReference> {
  return new Map(refs.map((r) => [r.path, r]));
}

export class PreviousTree {
  private readonly catalogs = new Map<string, Promise<PreviousCatalog>>();
  /**
   * What each previous catalog met so far adds to its parent's `subtree_` counters (its self_ +
   * subtree_), by hash.
   */
  private readonly contributions = new Map<string, Counters>();

  constructor(private readonly repo: Repository) {}

  async root(): Promise<PreviousDir> {
    const catalog = await this.open(this.repo.rootHash);
    const entry = catalog.db.lookup('');
    if (!entry) throw new FormatError('previous revision: the root catalog has no root entry');
    return { path: '', entry, catalog };
  }

  children(dir: PreviousDir): CatalogEntry[] {
    return dir.catalog.db.list(dir.path);
  }

  chunks(dir: PreviousDir, path: string, e: CatalogEntry): Chunk[] {
    return e.flags.chunked ? dir.catalog.db.chunks(path, e) : [];
  }

  /**
   * Whether directory `e` (child `path` of `dir`) is a nested or bind mountpoint. Flag and table
   * must agree: following only one of them would lose or misplace a whole subtree.
   */
  transition(dir: PreviousDir, path: string, e: CatalogEntry): Transition | undefined {
    for (const kind of ['nested', 'bind'] as const) {
      const ref = (kind === 'nested' ? dir.catalog.nested : dir.catalog.binds).get(path);
      const flagged = kind === 'nested' ? e.flags.nestedMountpoint : e.flags.bindMountpoint;
      if (!ref && !flagged) continue;
      const table = kind === 'nested' ? 'nested_catalogs' : 'bind_mountpoints';
      const where = `the catalog of ${dir.catalog.db.rootPrefix() || '/'}`;
      if (!ref) throw new FormatError(`previous revision: ${path} is flagged as a ${kind} mountpoint but ${table} of ${where} does not list it`);
      if (!flagged) throw new FormatError(`previous revision: ${table} of ${where} lists ${path} but its row lacks the mountpoint flag`);
      if (!ref.hash) throw new FormatError(`previous revision: the ${kind} catalog at ${path} has no content hash`);
      return { kind, ref: { ...ref, hash: ref.hash } };
    }
    return undefined;
  }

  /**
   * Directory `e` (child `path` of `dir`) for listing its children: in the same catalog, or at a
   * nested mountpoint the root entry of the nested catalog. Undefined for a bind mountpoint, whose
   * content is another revision's tree, not part of this one.
   */
  async enter(dir: PreviousDir, path: string, e: CatalogEntry): Promise<PreviousDir | undefined> {
    const t = this.transition(dir, path, e);
    if (t?.kind === 'bind') return undefined;
    if (!t) return { path, entry: e, catalog: dir.catalog };
    const catalog = await this.open(t.ref.hash);
    const entry = catalog.db.lookup(path);
    if (!entry) throw new FormatError(`previous revision: the nested catalog at ${path} has no root entry`);
    return { path, entry, catalog };
  }

  /**
   * What nested catalogs carried over by reference add to the `subtree_` counters of the catalog
   * that now lists them, all of them listed in `parent` before. Reading each would mean fetching
   * and inflating every carried catalog (a container layer's has ~100k rows) on every publish, so
   * the sum is derived from the old parent: its `subtree_` counters are the sum over all its
   * references (§3.11; verify.ts checks that), minus what the references not carried here add,
   * and those are usually the ones rebuilt from the source, hence already open. Catalogs are read
   * only when counters are not known otherwise, and then whichever set is smaller.
   */
  async contribution(parent: PreviousCatalog, carried: readonly CatalogReference[]): Promise<Counters> {
    const carriedPaths = new Set(carried.map((r) => r.path));
    const rest = [...parent.nested.values()].filter((r) => !carriedPaths.has(r.path));
    const unknown = rest.filter((r) => !r.hash || !this.contributions.has(r.hash.toString()));
    if (unknown.length < carried.length) {
      const total = { ...parent.counters.subtree };
      for (const r of rest) {
        const c = await this.contributionOf(r);
        for (const n of COUNTER_NAMES) total[n] -= c[n];
      }
      // A negative count means the old parent's counters were not the sum of its children's.
      if (COUNTER_NAMES.every((n) => total[n] >= 0)) return total;
    }
    const total = zeroCounters();
    for (const r of carried) addCounters(total, await this.contributionOf(r));
    return total;
  }

  private async contributionOf(ref: CatalogReference): Promise<Counters> {
    if (!ref.hash) throw new FormatError(`previous revision: the nested catalog at ${ref.path} has no content hash`);
    const known = this.contributions.get(ref.hash.toString());
    if (known) return known;
    const counters = await this.repo.peekCatalog(ref.hash, (db) => db.counters());
    return this.remember(ref.hash, counters);
  }

  private remember(hash: ContentHash, c: { self: Counters; subtree: Counters }): Counters {
    const sum = { ...c.self };
    addCounters(sum, c.subtree);
    this.contributions.set(hash.toString(), sum);
    return sum;
  }

  private open(hash: ContentHash): Promise<PreviousCatalog> {
    let catalog = this.catalogs.get(hash.toString());
    if (!catalog) {
      catalog = (async () => {
        const db = await this.repo.catalog(hash);
        const counters = db.counters();
        this.remember(hash, counters);
        return { hash, db, nested: byPath(db.nestedCatalogs()), binds: byPath(db.bindMountpoints()), counters };
      })();
      this.catalogs.set(hash.toString(), catalog);
    }
    return catalog;
  }
}
