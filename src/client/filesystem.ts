/**
 * The read-only file system of one mounted revision, independent of any FUSE binding: paths in,
 * typed results out, failures as CvmfsErrors (mapped to errno at the FUSE edge only).
 * Metadata comes from the catalog tree; content from the object fetcher, lazily — a read fetches
 * only the chunks it touches.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import type { CatalogTree, ResolvedEntry } from './catalog-tree';
import type { FetchRequest, ObjectFetcher } from './object-fetcher';
import type { ContentHash } from '../format/hash';
import { magicXattr, magicXattrNames, type MountStatus } from './magic-xattrs';
import { expandVariantSymlink } from '../format/variant-symlink';
import type { Chunk } from '../catalog/catalog-db';
import { CvmfsError } from '../errors';

export interface FsStat {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: Date;
  mtime: Date;
  ctime: Date;
}

export interface FsStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

export interface OwnershipPolicy {
  /** CVMFS_CLAIM_OWNERSHIP: everything appears owned by this uid/gid. */
  claim?: { uid: number; gid: number };
  uidMap?: ReadonlyMap<number | '*', number>;
  gidMap?: ReadonlyMap<number | '*', number>;
}

export interface FilesystemOptions {
  tree: CatalogTree;
  fetcher: ObjectFetcher;
  status: MountStatus;
  ownership: OwnershipPolicy;
  /** Environment for variant symlinks: the process environment plus every parameter (§5.5). */
  env: Readonly<Record<string, string | undefined>>;
  magicXattrsVisibility: 'always' | 'rootonly' | 'never';
  /** Cache capacity and use in bytes, for statfs (§5.4). */
  cacheUsage: () => { capacity: number; used: number };
  /** Keeps objects an open file uses from being evicted (the cache's quota manager); none = no quota. */
  pins?: ObjectPins;
  /** Chunks fetched ahead of a sequential reader of a chunked file (CVMFS_TS_READAHEAD_CHUNKS); 0 = none. */
  readaheadChunks?: number;
}

/** Pin/unpin of cache objects (counted: every pin is matched by one unpin). */
export interface ObjectPins {
  pin(hash: ContentHash): void;
  unpin(hash: ContentHash): void;
}

/** Misuse of an entry: the FUSE edge turns each kind into its errno (EROFS, ENOTDIR, …). */
export type MisuseKind = 'read-only' | 'not-a-directory' | 'not-a-symlink' | 'not-a-file' | 'exists' | 'bad-handle';

export class MisuseError extends CvmfsError {
  constructor(
    readonly kind: MisuseKind,
    path: string,
  ) {
    super('E_USAGE', `${path || '/'}: ${kind.replaceAll('-', ' ')}`);
  }
}

/**
 * What an open handle reads: equal keys mean equal bytes (the content hash, or the chunk hashes),
 * so the FUSE edge can tell whether a new open of a path reads what an older handle reads.
 */
export interface HandleContent {
  readonly key: string;
  readonly size: number;
}

interface OpenFile {
  readonly resolved: ResolvedEntry;
  readonly content: HandleContent;
  /** Non-chunked: the cached object, opened on first read. */
  whole?: Promise<FileHandle>;
  /** Chunked: chunk list sorted by offset, and handles of the chunks read so far. */
  chunks?: Chunk[];
  chunkHandles: Map<number, Promise<FileHandle>>;
  /** The chunk the previous read ended in (-1: none yet), to tell sequential readers. */
  lastChunk: number;
  /** Chunks up to this index have been asked for ahead of the reader. */
  readaheadUpTo: number;
}

const S_IFMT = 0o170000;
const MAX_CHUNK_HANDLES = 8;
const ACCESS_MODE = constants.O_RDONLY | constants.O_WRONLY | constants.O_RDWR;

/** FUSE path ("/", "/a/b") to catalog path ("", "/a/b"). */
export function catalogPath(fusePath: string): string {
  return fusePath === '/' ? '' : fusePath.replace(/\/+$/, '');
}

export class Filesystem {
  private readonly files = new Map<number, OpenFile>();
  private nextHandle = 1;
  counters = { open: 0, opendir: 0, ioErrors: 0 };

  private tree: CatalogTree;

  constructor(private readonly o: FilesystemOptions) {
    this.tree = o.tree;
  }

  /** Serves a new revision from now on; handles opened before keep what they resolved. */
  setTree(tree: CatalogTree): void {
    this.tree = tree;
  }

  async getattr(path: string): Promise<FsStat> {
    return this.stat(await this.tree.lookup(catalogPath(path)));
  }

  stat(r: ResolvedEntry): FsStat {
    const e = r.entry;
    const isDevice = e.type === 'char' || e.type === 'block';
    const size = e.type === 'symlink' ? Buffer.byteLength(this.symlinkTarget(r)) : isDevice ? 0 : e.size;
    const time = new Date(e.mtime * 1000 + Math.floor((e.mtimens ?? 0) / 1e6));
    return {
      ino: r.inode,
      mode: e.mode,
      nlink: e.linkCount,
      uid: this.owner(e.uid, this.o.ownership.uidMap, this.o.ownership.claim?.uid),
      gid: this.owner(e.gid, this.o.ownership.gidMap, this.o.ownership.claim?.gid),
      size,
      rdev: isDevice ? e.size : 0,
      blksize: 4096,
      blocks: 1 + Math.floor(size / 512),
      atime: time,
      mtime: time,
      ctime: time,
    };
  }

  private owner(id: number, map: ReadonlyMap<number | '*', number> | undefined, claimed: number | undefined): number {
    if (claimed !== undefined) return claimed;
    return map?.get(id) ?? map?.get('*') ?? id;
  }

  async readdir(path: string): Promise<{ names: string[]; stats: FsStat[] }> {
    this.counters.opendir++;
    const children = await this.tree.list(catalogPath(path));
    return { names: children.map((c) => c.entry.name), stats: children.map((c) => this.stat(c)) };
  }

  private symlinkTarget(r: ResolvedEntry): string {
    return expandVariantSymlink(r.entry.symlink, this.o.env);
  }

  async readlink(path: string): Promise<string> {
    const r = await this.tree.lookup(catalogPath(path));
    if (r.entry.type !== 'symlink') throw new MisuseError('not-a-symlink', path);
    return this.symlinkTarget(r);
  }

  /** Opens a regular file for reading; returns a handle number. Nothing is fetched yet. */
  async open(path: string, flags: number): Promise<number> {
    const r = await this.tree.lookup(catalogPath(path));
    if ((flags & ACCESS_MODE) !== constants.O_RDONLY || flags & constants.O_TRUNC) throw new MisuseError('read-only', path);
    if (flags & constants.O_EXCL) throw new MisuseError('exists', path);
    if ((r.entry.mode & S_IFMT) !== 0o100000) throw new MisuseError('not-a-file', path);
    this.counters.open++;
    const chunks = r.entry.flags.chunked ? this.tree.chunks(r) : undefined;
    const file: OpenFile = { resolved: r, content: contentOf(r.entry.hash, r.entry.size, chunks), chunks, chunkHandles: new Map(), lastChunk: -1, readaheadUpTo: -1 };
    const handle = this.nextHandle++;
    this.files.set(handle, file);
    return handle;
  }

  /** The content an open handle reads (fixed at open: a revision update does not change it). */
  handleContent(handle: number): HandleContent {
    return this.openFile(handle).content;
  }

  /** Attributes of the entry a handle opened, which may be gone from the current revision. */
  handleStat(handle: number): FsStat {
    return this.stat(this.openFile(handle).resolved);
  }

  private openFile(handle: number): OpenFile {
    const file = this.files.get(handle);
    if (!file) throw new MisuseError('bad-handle', String(handle));
    return file;
  }

  async read(handle: number, buffer: Buffer, length: number, position: number): Promise<number> {
    const file = this.openFile(handle);
    const size = file.resolved.entry.size;
    const end = Math.min(position + length, size);
    if (position >= end) return 0;
    try {
      if (!file.chunks) {
        const fh = await this.wholeHandle(file);
        return await readFully(fh, buffer, 0, end - position, position);
      }
      let done = 0;
      const first = findChunk(file.chunks, position);
      const last = findChunk(file.chunks, end - 1);
      // Sequential: this read starts in the chunk the previous one ended in, or the next one.
      if (first === file.lastChunk || first === file.lastChunk + 1) this.readAhead(file, last);
      file.lastChunk = last;
      for (let index = first; index < file.chunks.length && position + done < end; index++) {
        const chunk = file.chunks[index]!;
        const from = position + done - chunk.offset;
        const want = Math.min(chunk.size - from, end - position - done);
        const fh = await this.chunkHandle(file, index);
        const n = await readFully(fh, buffer, done, want, from);
        done += n;
        if (n < want) break;
      }
      return done;
    } catch (e) {
      this.counters.ioErrors++;
      throw e;
    }
  }

  /** Fetches the chunks after `index` into the cache in the background (they are opened when read). */
  private readAhead(file: OpenFile, index: number): void {
    const n = this.o.readaheadChunks ?? 0;
    const chunks = file.chunks!;
    for (let next = Math.max(index + 1, file.readaheadUpTo + 1); next <= index + n && next < chunks.length; next++) {
      file.readaheadUpTo = next;
      if (file.chunkHandles.has(next)) continue;
      // Failures surface when the reader gets there (its own fetch tries again).
      this.o.fetcher.fetch({ ...objectRequest(file.resolved, chunks[next], next), priority: 'readahead' }).catch(() => undefined);
    }
  }

  private wholeHandle(file: OpenFile): Promise<FileHandle> {
    if (!file.whole) {
      file.whole = this.openObject(objectRequest(file.resolved));
      // A failed fetch fails this handle's later reads at once (the kernel retries a failed page
      // read, which would pay the whole failover budget again); a new open tries again.
      file.whole.catch(() => undefined);
    }
    return file.whole;
  }

  private chunkHandle(file: OpenFile, index: number): Promise<FileHandle> {
    let pending = file.chunkHandles.get(index);
    if (!pending) {
      pending = this.openObject(objectRequest(file.resolved, file.chunks![index]!, index));
      pending.catch(() => undefined); // kept: later reads of this chunk fail at once, as above
      file.chunkHandles.set(index, pending);
      // Sequential readers move forward: keep only the most recent few chunk files open.
      if (file.chunkHandles.size > MAX_CHUNK_HANDLES) {
        const [oldest, old] = file.chunkHandles.entries().next().value as [number, Promise<FileHandle>];
        file.chunkHandles.delete(oldest);
        void this.closeObject(old, file.chunks![oldest]!.hash);
      }
    }
    return pending;
  }

  async release(handle: number): Promise<void> {
    const file = this.files.get(handle);
    this.files.delete(handle);
    if (!file) return;
    const closing = [...file.chunkHandles].map(([index, h]) => this.closeObject(h, file.chunks![index]!.hash));
    if (file.whole) closing.push(this.closeObject(file.whole, file.resolved.entry.hash!));
    await Promise.all(closing);
  }

  /**
   * Pins the object (so the cache does not evict it while this handle uses it), fetches it and opens
   * the cache file. Pinned BEFORE the fetch, so an eviction can never pick it between the fetch and
   * the open in this process; another mount sharing the cache may still have unlinked it just after
   * our lookup (its eviction sees our pin only after our next quota flush), hence the retry on ENOENT.
   * The pin is released by closeObject, or here if the open fails.
   */
  private async openObject(req: FetchRequest): Promise<FileHandle> {
    this.o.pins?.pin(req.hash);
    try {
      for (let attempt = 1; ; attempt++) {
        const path = await this.o.fetcher.fetch(req);
        try {
          return await open(path, 'r');
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw e;
        }
      }
    } catch (e) {
      this.o.pins?.unpin(req.hash);
      throw e;
    }
  }

  /** Closes a handle from openObject (if it opened) and releases its pin. */
  private async closeObject(pending: Promise<FileHandle>, hash: ContentHash): Promise<void> {
    let fh: FileHandle;
    try {
      fh = await pending;
    } catch {
      return; // openObject released the pin already
    }
    this.o.pins?.unpin(hash);
    await fh.close().catch(() => undefined);
  }

  /** The objects a regular file consists of (its chunks, or one object), as fetch requests (talk `pin`/`evict`). */
  async objectRequests(path: string): Promise<FetchRequest[]> {
    const r = await this.tree.lookup(catalogPath(path));
    if ((r.entry.mode & S_IFMT) !== 0o100000) throw new MisuseError('not-a-file', path);
    if (!r.entry.flags.chunked) return r.entry.hash ? [objectRequest(r)] : [];
    return this.tree.chunks(r).map((c, index) => objectRequest(r, c, index));
  }

  /** Zeroes the I/O error count (talk `reset error counters`; user.nioerr). */
  resetErrorCounters(): void {
    this.counters.ioErrors = 0;
  }

  /** Catalog xattrs first, then magic ones; undefined = no such attribute (ENODATA). */
  async getxattr(path: string, name: string): Promise<Buffer | undefined> {
    const r = await this.tree.lookup(catalogPath(path));
    const stored = r.entry.xattrs.get(name);
    if (stored) return stored;
    const magic = await magicXattr(name, r, this.o.status);
    return magic === undefined ? undefined : Buffer.from(magic);
  }

  async listxattr(path: string): Promise<string[]> {
    const r = await this.tree.lookup(catalogPath(path));
    const names = [...r.entry.xattrs.keys()];
    const visibility = this.o.magicXattrsVisibility;
    if (visibility === 'always' || (visibility === 'rootonly' && r.path === '')) {
      for (const m of magicXattrNames(r)) if (!names.includes(m)) names.push(m);
    }
    return names;
  }

  statfs(): FsStatfs {
    const { capacity, used } = this.o.cacheUsage();
    const { self, subtree } = this.tree.root.db.counters();
    const files = self.regular + self.symlink + self.special + self.dir + subtree.regular + subtree.symlink + subtree.special + subtree.dir;
    let loaded = 0;
    for (const c of this.tree.catalogs()) {
      const s = c.db.counters().self;
      loaded += s.regular + s.symlink + s.special + s.dir;
    }
    return {
      bsize: 512,
      frsize: 512,
      blocks: Math.floor(capacity / 512),
      bfree: Math.floor(Math.max(capacity - used, 0) / 512),
      bavail: Math.floor(Math.max(capacity - used, 0) / 512),
      files,
      ffree: Math.max(files - loaded, 0),
      favail: Math.max(files - loaded, 0),
      namemax: 255,
    };
  }
}

function contentOf(hash: ContentHash | undefined, size: number, chunks: Chunk[] | undefined): HandleContent {
  // The bulk hash names the bytes; without one (chunked, legacy or empty), the chunk list does.
  const key = hash ? hash.toString() : chunks ? chunks.map((c) => `${c.offset}:${c.hash.toString()}`).join(',') : '';
  return { key: `${key}/${size}`, size };
}

/** The fetch request of a non-chunked file's object, or of one of its chunks. */
function objectRequest(r: ResolvedEntry, chunk?: Chunk, index = 0): FetchRequest {
  const e = r.entry;
  const compressed = e.flags.compression === 0;
  if (!chunk) {
    return { hash: e.hash!, suffix: '', compressed, size: e.size, description: r.path, path: r.path, external: e.flags.external ? { path: r.path } : undefined };
  }
  return {
    hash: chunk.hash,
    suffix: 'P',
    compressed,
    size: chunk.size,
    description: `${r.path} chunk ${index} at ${chunk.offset}`,
    path: r.path,
    external: e.flags.external ? { path: r.path, range: { offset: chunk.offset, size: chunk.size } } : undefined,
  };
}

/** Index of the chunk containing `offset` (binary search over sorted offsets). */
function findChunk(chunks: Chunk[], offset: number): number {
  let lo = 0;
  let hi = chunks.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (chunks[mid]!.offset <= offset) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

async function readFully(fh: FileHandle, buffer: Buffer, at: number, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buffer, at + done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}
