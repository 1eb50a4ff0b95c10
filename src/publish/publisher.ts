/**
 * `cvmfs-ts publish`: turns a source directory into the next revision of a repository (§6).
 *
 * Order of writes, so that readers and crashes only ever see whole revisions:
 *   objects (data/, each renamed into place) → catalogs bottom-up → certificate → whitelist →
 *   manifest, replaced last by an atomic rename.
 * A failure at any point leaves the previous manifest, and with it the previous revision, intact.
 */
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { BigIntStats } from 'node:fs';
import { HashAlgorithm, type ContentHash } from '../format/hash';
import { DEFAULT_CHUNK_SIZES, type ChunkSizes } from '../format/chunker';
import { Compression, type EntryKind } from '../format/flags';
import { DEFAULT_TTL_SECONDS } from '../format/catalog-schema';
import { parseDirtab, dirtabMatches, type Dirtab } from '../format/dirtab';
import { signManifest, ROOT_PATH_MD5 } from '../format/manifest';
import { createWhitelist, signWhitelist } from '../format/whitelist';
import { CatalogDb, type CatalogEntry, type CatalogReference } from '../catalog/catalog-db';
import { repositoryPath } from '../format/path-key';
import { Repository } from '../repository/repository';
import { DirectorySource } from '../repository/object-source';
import { HashOnlyStore, ObjectStore, ioError, type ContentStore, type StoreStats } from './object-store';
import { CatalogWriter, type CatalogCounters, type NewEntry } from './catalog-writer';
import { ingestFile, type IngestedContent } from './file-ingest';
import { listDirectory, lstatSource, readSymlink, readXattrs, type SourceEntry } from './source-tree';
import {
  PreviousTree,
  carriedEntry,
  isDirectoryChild,
  unionChildren,
  type PreviousCatalog,
  type PreviousDir,
  type UnionChild,
} from './previous-tree';
import { loadKeys } from './keys';
import { CvmfsError, SourceError } from '../errors';

export interface PublishProgress {
  /** Called once per source entry published. */
  entry?(path: string): void;
  /** Called with the number of file bytes read. */
  bytes?(n: number): void;
}

export interface PublishOptions {
  fqrn: string;
  source: string;
  repoDir: string;
  keysDir: string;
  ttl?: number;
  algorithm?: HashAlgorithm;
  /** Chunk sizes, or false for no chunking. */
  chunking?: ChunkSizes | false;
  /** Store file content uncompressed (compression "none"). */
  uncompressed?: boolean;
  /**
   * Publish every regular file as external (§7.1, `cvmfs_server publish -X`): flag 128, compression
   * none, hashes over the plain bytes, and no data objects: the content is served by an external
   * data server under the file's repository path.
   */
  external?: boolean;
  now?: Date;
  progress?: PublishProgress;
  /**
   * Union ("ingest") mode, like `cvmfs_server ingest`: the new revision is the previous one
   * overlaid by `source`, which then holds only what is added or replaced, e.g. a staging
   * directory of new container layers. Per directory, a name the source has is published from
   * the source (a directory in both keeps the source's attributes and is merged again below);
   * a name only the previous revision has is carried over unchanged: files, symlinks and
   * special files as their previous rows (content hash, chunks, flags, xattrs, mode, owner,
   * times; hardlink groups renumbered, and dropped when one member is left), directories merged
   * the same way, and nested catalogs the source does not touch kept by reference (same object,
   * size and counters; their rows are not read). A directory that was a nested catalog stays
   * one. Nothing is deleted. Dirtab rules come from the source's own `.cvmfsdirtab` and apply
   * to the source's directories only. Without a previous revision this is a plain publish.
   *
   * An image ingest needs nothing more than
   * `publish({ fqrn, repoDir, keysDir, source: stagingDir, union: true, nestedCatalogs: layerDirs })`.
   */
  union?: boolean;
  /**
   * Directories that start a nested catalog although they hold no `.cvmfscatalog` file, and get
   * none (a container layer's root must show exactly the layer's files; the client only needs
   * the catalog structure: the mountpoint row (flag 2) in the parent, the root row (flag 32) in
   * the nested catalog, the parent's `nested_catalogs` row). Repository paths, with or without
   * the leading slash (`/.layers`, `.layers/ab/<hex>/layerfs`); each must name a directory of
   * `source`, not the root, and its parent directories must be real directories too.
   */
  nestedCatalogs?: readonly string[];
}

export interface PublishResult {
  revision: number;
  rootHash: ContentHash;
  entries: number;
  fileBytes: number;
  catalogsWritten: number;
  /** Previous catalogs kept: rebuilt identical, or (union) carried over by reference. */
  catalogsReused: number;
  /** Union mode: rows copied from the previous revision (rows inside catalogs kept by reference not counted). */
  entriesCarried: number;
  objects: StoreStats;
}

const MARKER = '.cvmfscatalog';
const INGEST_CONCURRENCY = 4;
const DIRTAB = '.cvmfsdirtab';
const MASTER_REPLICA_TEXT = 'This file marks the repository as replicatable to stratum 1 servers\n';

/** One catalog under construction, with where it hangs in the tree. */
interface CatalogBuild {
  writer: CatalogWriter;
  mountPath: string;
  /**
   * Union mode: nested catalogs referenced unchanged, by the previous catalog that listed them;
   * their counters are added as one sum when the build finishes (PreviousTree.contribution).
   */
  carried: Map<PreviousCatalog, CatalogReference[]>;
}

/** Numbers the groups among `members` (one key per member) that have more than one member, in order of appearance. */
function numberGroups<K>(members: Iterable<K>, writer: CatalogWriter): Map<K, { id: number; count: number }> {
  const counts = new Map<K, number>();
  for (const k of members) counts.set(k, (counts.get(k) ?? 0) + 1);
  const groups = new Map<K, { id: number; count: number }>();
  for (const [k, count] of counts) if (count > 1) groups.set(k, { id: writer.newHardlinkGroup(), count });
  return groups;
}

function kindOf(stats: BigIntStats): EntryKind {
  if (stats.isDirectory()) return 'directory';
  if (stats.isFile()) return 'regular';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'special';
}

export class Publisher {
  private readonly store: ObjectStore;
  /** Where file content goes: the object store, or nowhere (names only) for external files. */
  private readonly contentStore: ContentStore;
  private readonly fileCompression: Compression;
  private readonly algorithm: HashAlgorithm;
  private readonly chunking: ChunkSizes | false;
  private readonly now: Date;
  private readonly txnDir: string;
  private previous: Repository | undefined;
  /** Set in union mode when there is a previous revision. */
  private previousTree: PreviousTree | undefined;
  private dirtab: Dirtab | undefined;
  /** `nestedCatalogs` in catalog notation. */
  private requestedCatalogs = new Set<string>();
  private entries = 0;
  private entriesCarried = 0;
  private fileBytes = 0;
  private catalogsWritten = 0;
  private catalogsReused = 0;
  private readonly tempFiles = new Set<string>();

  constructor(private readonly o: PublishOptions) {
    this.algorithm = o.algorithm ?? HashAlgorithm.Sha1;
    this.chunking = o.chunking === undefined ? DEFAULT_CHUNK_SIZES : o.chunking;
    this.now = o.now ?? new Date();
    this.store = new ObjectStore(resolve(o.repoDir), this.algorithm);
    this.contentStore = o.external ? new HashOnlyStore(this.algorithm) : this.store;
    this.fileCompression = o.uncompressed || o.external ? Compression.None : Compression.Zlib;
    this.txnDir = join(resolve(o.repoDir), 'data', 'txn');
  }

  async run(): Promise<PublishResult> {
    const keys = await loadKeys(this.o.fqrn, this.o.keysDir);
    const sourceRoot = resolve(this.o.source);
    const rootStats = await lstatSource(sourceRoot);
    if (!rootStats.isDirectory()) throw new SourceError(sourceRoot, 'is not a directory');
    await mkdir(resolve(this.o.repoDir), { recursive: true }).catch((e) => {
      throw ioError(this.o.repoDir, 'create the repository directory', e);
    });
    await this.store.init();
    const unlock = await this.lock();
    try {
      this.previous = await this.openPrevious();
      if (this.o.union && this.previous) this.previousTree = new PreviousTree(this.previous);
      this.requestedCatalogs = await this.readRequestedCatalogs(sourceRoot);
      this.dirtab = await this.readDirtab(sourceRoot);
      const revision = (this.previous?.manifest.revision ?? 0) + 1;
      const root = await this.publishTree(sourceRoot, rootStats, revision);
      const certificate = await this.store.putCompressed(keys.certificate.pem, 'X');
      await this.writeAtomically('.cvmfswhitelist', signWhitelist(
        createWhitelist({ fqrn: this.o.fqrn, certificate: keys.certificate, now: this.now }),
        keys.masterKey,
        this.algorithm,
      ));
      await this.ensureMasterReplica();
      const previousT = this.previous?.manifest.publishTimestamp ?? 0;
      const manifest = signManifest(
        {
          rootCatalog: root.hash,
          rootCatalogSize: root.size,
          rootPathHash: ROOT_PATH_MD5,
          ttl: this.o.ttl ?? DEFAULT_TTL_SECONDS,
          revision,
          garbageCollectable: false,
          alternativePath: false,
          fqrn: this.o.fqrn,
          certificate,
          // Never behind the previous revision, or clients reject it as a rollback.
          publishTimestamp: Math.max(previousT, Math.floor(this.now.getTime() / 1000)),
        },
        keys.repositoryKey,
      );
      await this.writeAtomically('.cvmfspublished', manifest);
      return {
        revision,
        rootHash: root.hash,
        entries: this.entries,
        fileBytes: this.fileBytes,
        catalogsWritten: this.catalogsWritten,
        catalogsReused: this.catalogsReused,
        entriesCarried: this.entriesCarried,
        objects: this.store.stats,
      };
    } finally {
      for (const f of this.tempFiles) await rm(f, { force: true });
      await this.previous?.close();
      await unlock();
    }
  }

  /** One publisher per repository at a time; a lock left by a dead process is taken over. */
  private async lock(): Promise<() => Promise<void>> {
    const file = join(this.txnDir, 'publish.lock');
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const handle = await open(file, 'wx');
        await handle.writeFile(String(process.pid));
        await handle.close();
        return () => rm(file, { force: true });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(file, 'create lock', e);
        const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
        if (pid > 0 && pid !== process.pid && isAlive(pid)) {
          throw new CvmfsError('E_IO', `${this.o.repoDir}: another publish (pid ${pid}) is running`);
        }
        await rm(file, { force: true });
      }
    }
    throw new CvmfsError('E_IO', `${file}: cannot take the publish lock`);
  }

  private async openPrevious(): Promise<Repository | undefined> {
    const source = new DirectorySource(this.o.repoDir);
    if (!(await source.getOptional('.cvmfspublished'))) return undefined;
    try {
      return await Repository.open(source, { fqrn: this.o.fqrn });
    } catch (e) {
      throw new CvmfsError(CvmfsError.is(e) ? e.code : 'E_IO', `previous revision in ${this.o.repoDir} is unreadable: ${(e as Error).message}`, { cause: e });
    }
  }

  private async readDirtab(sourceRoot: string): Promise<Dirtab | undefined> {
    const file = join(sourceRoot, DIRTAB);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new SourceError(file, `cannot read (${(e as NodeJS.ErrnoException).code})`, { cause: e });
    }
    try {
      return parseDirtab(text);
    } catch (e) {
      throw new SourceError(file, (e as Error).message, { cause: e });
    }
  }

  /**
   * `nestedCatalogs` in catalog notation, each checked now to be a directory of the source, so
   * that a wrong path fails before anything is written, not after a long ingest.
   */
  private async readRequestedCatalogs(sourceRoot: string): Promise<Set<string>> {
    const paths = new Set<string>();
    for (const given of this.o.nestedCatalogs ?? []) {
      const path = repositoryPath(given);
      if (path === '') throw new CvmfsError('E_USAGE', `nestedCatalogs: '${given}' is the repository root, which always has its own catalog`);
      let absPath = sourceRoot;
      for (const part of path.slice(1).split('/')) {
        absPath = join(absPath, part);
        // lstat, as the walk does: a symlink to a directory is not walked into.
        const stats = await lstatSource(absPath).catch((e: unknown) => {
          throw new SourceError(absPath, `does not exist, but nestedCatalogs names ${path}`, { cause: e });
        });
        if (!stats.isDirectory()) throw new SourceError(absPath, `is not a directory, but nestedCatalogs names ${path}`);
      }
      paths.add(path);
    }
    return paths;
  }

  private async publishTree(sourceRoot: string, rootStats: BigIntStats, revision: number): Promise<{ hash: ContentHash; size: number }> {
    const root = this.newCatalog('');
    const source: SourceEntry = { name: '', absPath: sourceRoot, stats: rootStats };
    await this.publishDirectory('', root, source, await this.previousTree?.root());
    return this.finishCatalog(root, revision);
  }

  private newCatalog(mountPath: string): CatalogBuild {
    const file = join(this.txnDir, `catalog.${process.pid}.${randomBytes(6).toString('hex')}.db`);
    this.tempFiles.add(file);
    return { writer: new CatalogWriter(file, mountPath), mountPath, carried: new Map() };
  }

  /**
   * Publishes directory `repoPath` and everything below it. `catalog` is the catalog the
   * directory belongs to; if the directory starts a nested catalog, it is created here.
   * `source` is the directory in the source tree, `previous` the same directory in the previous
   * revision (union mode only); at least one of them is given.
   */
  private async publishDirectory(
    repoPath: string,
    catalog: CatalogBuild,
    source: SourceEntry | undefined,
    previous: PreviousDir | undefined,
  ): Promise<void> {
    const sourceChildren = source ? await listDirectory(source.absPath) : [];
    const children = unionChildren(sourceChildren, previous ? this.previousTree!.children(previous) : []);
    const hasMarker = children.some((c) => c.name === MARKER);
    const byDirtab = source !== undefined && repoPath !== '' && this.dirtab !== undefined && dirtabMatches(this.dirtab, repoPath);
    // A nested catalog of the previous revision stays one in union mode: what made it one (a
    // marker, a dirtab rule, nestedCatalogs) need not be in the source, and nothing is deleted.
    const wasCatalog = previous?.entry.flags.nestedRoot === true;
    const startsCatalog = repoPath !== '' && (hasMarker || byDirtab || wasCatalog || this.requestedCatalogs.has(repoPath));
    const entry = source
      ? await this.directoryEntry(source.absPath, repoPath, source.stats, 2 + children.filter(isDirectoryChild).length)
      : carriedEntry(repoPath, previous!.entry);
    let own = catalog;
    if (startsCatalog) {
      catalog.writer.add({ ...entry, nestedMountpoint: true });
      own = this.newCatalog(repoPath);
      own.writer.add({ ...entry, nestedRoot: true });
    } else {
      catalog.writer.add(entry);
    }
    if (source) this.counted(repoPath);
    else this.entriesCarried++;
    if (source && byDirtab && !hasMarker) own.writer.add(await this.virtualMarker(repoPath, source.stats));

    const groups = this.hardlinkGroups(sourceChildren, own.writer);
    const carriedGroups = this.carriedHardlinkGroups(children, own.writer);
    const contents = await this.ingestAll(sourceChildren);
    for (const child of children) {
      const childPath = `${repoPath}/${child.name}`;
      if (!child.source) {
        await this.carryOver(childPath, child.previous, previous!, own, carriedGroups);
      } else if (child.source.stats.isDirectory()) {
        const before = child.previous?.type === 'directory' ? await this.previousTree!.enter(previous!, childPath, child.previous) : undefined;
        await this.publishDirectory(childPath, own, child.source, before);
      } else {
        const ino = child.source.stats.ino;
        own.writer.add(await this.fileEntry(child.source, childPath, contents.get(ino), groups.get(ino)));
        this.counted(childPath);
      }
    }

    if (startsCatalog) {
      const finished = await this.finishCatalog(own);
      catalog.writer.addNestedCatalog(repoPath, finished.hash, finished.size, finished.counters);
    }
  }

  /**
   * Union mode: entry `e` of previous directory `dir`, absent from the source, goes into
   * `own` unchanged. A nested catalog is kept by reference (its mountpoint row copied, its
   * counters summed at the end of the build); a bind mountpoint likewise.
   */
  private async carryOver(
    path: string,
    e: CatalogEntry,
    dir: PreviousDir,
    own: CatalogBuild,
    groups: Map<number, { id: number; count: number }>,
  ): Promise<void> {
    const tree = this.previousTree!;
    if (e.type === 'directory') {
      const transition = tree.transition(dir, path, e);
      if (!transition) {
        await this.publishDirectory(path, own, undefined, { path, entry: e, catalog: dir.catalog });
        return;
      }
      own.writer.add(carriedEntry(path, e));
      this.entriesCarried++;
      const { ref } = transition;
      if (transition.kind === 'bind') {
        own.writer.addBindMountpoint(path, ref.hash, ref.size);
        return;
      }
      own.writer.referenceNestedCatalog(path, ref.hash, ref.size);
      let refs = own.carried.get(dir.catalog);
      if (!refs) own.carried.set(dir.catalog, (refs = []));
      refs.push(ref);
      this.catalogsReused++;
      return;
    }
    own.writer.add(carriedEntry(path, e, tree.chunks(dir, path, e), groups.get(e.hardlinkGroup)));
    this.entriesCarried++;
  }

  private counted(path: string): void {
    this.entries++;
    this.o.progress?.entry?.(path);
  }

  /** Hardlinks are kept only within one directory (CVMFS_IGNORE_XDIR_HARDLINKS, §3.12). */
  private hardlinkGroups(children: SourceEntry[], writer: CatalogWriter): Map<bigint, { id: number; count: number }> {
    return numberGroups(children.filter((c) => c.stats.isFile() && c.stats.nlink > 1n).map((c) => c.stats.ino), writer);
  }

  /**
   * Union mode: new group ids for the previous hardlink groups among the carried files of one
   * directory, counting only the names the source did not replace.
   */
  private carriedHardlinkGroups(children: UnionChild[], writer: CatalogWriter): Map<number, { id: number; count: number }> {
    const members = children.flatMap((c) =>
      !c.source && c.previous.type === 'regular' && c.previous.hardlinkGroup > 0 ? [c.previous.hardlinkGroup] : []);
    return numberGroups(members, writer);
  }

  /**
   * Stores the regular files of one directory, a few at a time: zlib runs on libuv's thread pool,
   * so compression of one file overlaps reading and hashing of others. Keyed by inode, so the
   * names of a hardlink group share one read.
   */
  private async ingestAll(children: SourceEntry[]): Promise<Map<bigint, IngestedContent>> {
    const files = new Map<bigint, SourceEntry>();
    for (const c of children) if (c.stats.isFile() && !files.has(c.stats.ino)) files.set(c.stats.ino, c);
    const queue = [...files.values()];
    const contents = new Map<bigint, IngestedContent>();
    const worker = async () => {
      for (let next = queue.shift(); next; next = queue.shift()) contents.set(next.stats.ino, await this.ingest(next));
    };
    await Promise.all(Array.from({ length: Math.min(INGEST_CONCURRENCY, queue.length) }, worker));
    return contents;
  }

  private async ingest(child: SourceEntry): Promise<IngestedContent> {
    const chunking = this.chunking && child.stats.size > BigInt(this.chunking.min) ? this.chunking : false;
    const content = await ingestFile(child.absPath, Number(child.stats.size), this.contentStore, {
      chunking,
      compress: this.fileCompression === Compression.Zlib,
      onBytes: (n) => this.o.progress?.bytes?.(n),
    });
    // A file that changed while we read it would be published torn: refuse.
    const after = await lstatSource(child.absPath);
    if (
      BigInt(content.size) !== child.stats.size ||
      after.size !== child.stats.size ||
      after.mtimeNs !== child.stats.mtimeNs ||
      after.ino !== child.stats.ino
    ) {
      throw new SourceError(child.absPath, 'changed while being published');
    }
    this.fileBytes += content.size;
    return content;
  }

  private baseEntry(path: string, stats: BigIntStats): Omit<NewEntry, 'kind' | 'size' | 'linkCount'> {
    return {
      path,
      mode: Number(stats.mode),
      uid: Number(stats.uid),
      gid: Number(stats.gid),
      mtime: Number(stats.mtimeNs / 1_000_000_000n),
      mtimens: Number(stats.mtimeNs % 1_000_000_000n),
      algorithm: this.algorithm,
    };
  }

  private async directoryEntry(absPath: string, path: string, stats: BigIntStats, linkCount: number): Promise<NewEntry> {
    return {
      ...this.baseEntry(path, stats),
      kind: 'directory',
      size: Number(stats.size),
      linkCount,
      xattrs: await readXattrs(absPath),
    };
  }

  private async fileEntry(
    child: SourceEntry,
    path: string,
    content: IngestedContent | undefined,
    group: { id: number; count: number } | undefined,
  ): Promise<NewEntry> {
    const base = this.baseEntry(path, child.stats);
    const kind = kindOf(child.stats);
    switch (kind) {
      case 'symlink': {
        const target = await readSymlink(child.absPath);
        return { ...base, kind, size: Buffer.byteLength(target), linkCount: 1, symlink: target };
      }
      case 'special':
        return {
          ...base,
          kind,
          // Devices store their rdev in `size` (§3.3); FIFOs and sockets 0.
          size: child.stats.isCharacterDevice() || child.stats.isBlockDevice() ? Number(child.stats.rdev) : 0,
          linkCount: 1,
          xattrs: await readXattrs(child.absPath),
        };
      default:
        return {
          ...base,
          kind: 'regular',
          size: content!.size,
          linkCount: group?.count ?? 1,
          hardlinkGroup: group?.id,
          hash: content!.hash,
          chunks: content!.chunks,
          compression: this.fileCompression,
          external: this.o.external,
          xattrs: await readXattrs(child.absPath),
        };
    }
  }

  /** The `.cvmfscatalog` a dirtab rule implies: an empty file, as cvmfs_server creates it (zlib("") object). */
  private async virtualMarker(dirPath: string, dirStats: BigIntStats): Promise<NewEntry> {
    return {
      ...this.baseEntry(`${dirPath}/${MARKER}`, dirStats),
      kind: 'regular',
      mode: 0o100644,
      // The directory's time, not the publish time: an unchanged subtree must yield an unchanged catalog.
      size: 0,
      linkCount: 1,
      hash: await this.store.putCompressed(Buffer.alloc(0), ''),
    };
  }

  /** Finds the previous revision's catalog mounted at `mountPath`, if there was one. */
  private async previousCatalog(mountPath: string): Promise<{ hash: ContentHash; db: CatalogDb } | undefined> {
    if (!this.previous) return undefined;
    let hash = this.previous.rootHash;
    let db = await this.previous.catalog(hash);
    while (db.rootPrefix() !== mountPath) {
      const ref = db.nestedCatalogs().find((r) => mountPath === r.path || mountPath.startsWith(`${r.path}/`));
      if (!ref?.hash) return undefined;
      hash = ref.hash;
      db = await this.previous.catalog(hash);
    }
    return { hash, db };
  }

  /**
   * Closes a catalog and stores it, unless the previous revision holds an identical one: then
   * the old object is kept, so unchanged subtrees cost nothing on re-publish.
   */
  private async finishCatalog(
    build: CatalogBuild,
    rootRevision?: number,
  ): Promise<{ hash: ContentHash; size: number; counters: CatalogCounters }> {
    const previous = await this.previousCatalog(build.mountPath);
    const isRoot = build.mountPath === '';
    for (const [parent, refs] of build.carried) {
      build.writer.addSubtreeCounters(await this.previousTree!.contribution(parent, refs));
    }
    build.writer.finish({
      revision: rootRevision ?? (previous ? previous.db.revision() + 1 : 1),
      lastModified: Math.floor(this.now.getTime() / 1000),
      previousRevision: previous?.hash,
      ttl: isRoot ? this.o.ttl ?? DEFAULT_TTL_SECONDS : undefined,
    });
    const counters = build.writer.counters;
    const file = build.writer.file;
    if (previous && !isRoot) {
      const fresh = new CatalogDb(file);
      const unchanged = fresh.contentDigest() === previous.db.contentDigest();
      fresh.close();
      if (unchanged) {
        this.catalogsReused++;
        await rm(file, { force: true });
        this.tempFiles.delete(file);
        const size = (await readFile(previous.db.file)).length;
        return { hash: previous.hash, size, counters };
      }
    }
    const plain = await readFile(file);
    const hash = await this.store.putCompressed(plain, 'C');
    this.catalogsWritten++;
    await rm(file, { force: true });
    this.tempFiles.delete(file);
    return { hash, size: plain.length, counters };
  }

  private async writeAtomically(name: string, data: Buffer): Promise<void> {
    const target = join(resolve(this.o.repoDir), name);
    const tmp = join(this.txnDir, `${name}.${process.pid}.${randomBytes(4).toString('hex')}`);
    this.tempFiles.add(tmp);
    try {
      await writeFile(tmp, data);
      await rename(tmp, target);
    } catch (e) {
      throw ioError(target, 'write', e);
    }
    this.tempFiles.delete(tmp);
  }

  private async ensureMasterReplica(): Promise<void> {
    const file = join(resolve(this.o.repoDir), '.cvmfs_master_replica');
    await writeFile(file, MASTER_REPLICA_TEXT, { flag: 'wx' }).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'EEXIST') throw ioError(file, 'write', e);
    });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function publish(o: PublishOptions): Promise<PublishResult> {
  return new Publisher(o).run();
}
