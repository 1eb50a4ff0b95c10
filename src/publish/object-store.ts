/**
 * The repository's content-addressed storage on local disk (`REPO_DIR/data`, §1.7).
 * Objects are written under `data/txn/` and renamed into place once their hash is known, so a
 * crash or a full disk never leaves a half object under a valid name. An object already present
 * is not rewritten (deduplication; its file keeps its inode and mtime).
 */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { pipeline } from 'node:stream/promises';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, type Hash } from 'node:crypto';
import { Transform, type Writable } from 'node:stream';
import { ContentHash, HashAlgorithm, newHasher, type ObjectSuffix } from '../format/hash';
import { objectPath } from '../format/object-name';
import { zlibCompress, zlibCompressStream } from '../format/compression';
import { CvmfsError } from '../errors';

export interface StoreStats {
  objectsWritten: number;
  objectsReused: number;
  bytesWritten: number; // stored (compressed) bytes of new objects
}

export function ioError(path: string, what: string, e: unknown): CvmfsError {
  const code = (e as NodeJS.ErrnoException).code;
  const reason = code === 'ENOSPC' ? 'no space left on device' : code ?? (e as Error).message;
  return new CvmfsError('E_IO', `${path}: cannot ${what} (${reason})`, { cause: e });
}

/** Where the publisher puts file content: the repository's ObjectStore, or HashOnlyStore (external files). */
export interface ContentStore {
  readonly algorithm: HashAlgorithm;
  /** Stores bytes that are already in their stored form; returns their name. */
  putStored(stored: Buffer, suffix: ObjectSuffix): Promise<ContentHash>;
  /** Starts a streamed object (optionally compressed on the way). */
  startObject(compress: boolean): Promise<ContentWriter>;
}

export interface ContentWriter {
  write(data: Uint8Array): Promise<void>;
  /** Ends the object and names it; it is stored (if this store stores) under that name and `suffix`. */
  commit(suffix: ObjectSuffix): Promise<ContentHash>;
  abort(): Promise<void>;
}

export class ObjectStore implements ContentStore {
  readonly stats: StoreStats = { objectsWritten: 0, objectsReused: 0, bytesWritten: 0 };
  private readonly txnDir: string;

  constructor(
    readonly root: string,
    readonly algorithm: HashAlgorithm,
  ) {
    this.txnDir = join(root, 'data', 'txn');
  }

  /** Creates `data/00`..`data/ff` and `data/txn`, as cvmfs_server mkfs does. */
  async init(): Promise<void> {
    try {
      await mkdir(this.txnDir, { recursive: true });
      for (let i = 0; i < 256; i++) await mkdir(join(this.root, 'data', i.toString(16).padStart(2, '0')), { recursive: true });
    } catch (e) {
      throw ioError(join(this.root, 'data'), 'create the object directories', e);
    }
  }

  pathOf(hash: ContentHash, suffix: ObjectSuffix): string {
    return join(this.root, objectPath(hash, suffix));
  }

  async has(hash: ContentHash, suffix: ObjectSuffix): Promise<boolean> {
    try {
      return (await stat(this.pathOf(hash, suffix))).isFile();
    } catch {
      return false;
    }
  }

  /** Stores bytes that are already in their stored form (compressed or not). */
  async putStored(stored: Buffer, suffix: ObjectSuffix): Promise<ContentHash> {
    const hash = ContentHash.compute(this.algorithm, stored);
    if (await this.has(hash, suffix)) {
      this.stats.objectsReused++;
      return hash;
    }
    const tmp = this.tempName();
    try {
      await writeFile(tmp, stored);
    } catch (e) {
      await rm(tmp, { force: true });
      throw ioError(tmp, 'write object', e);
    }
    await this.commit(tmp, hash, suffix, stored.length);
    return hash;
  }

  /** zlib-compresses and stores a small object (catalog, certificate, metainfo). */
  putCompressed(plain: Buffer, suffix: ObjectSuffix): Promise<ContentHash> {
    return this.putStored(zlibCompress(plain), suffix);
  }

  /** Starts a streamed object: bytes written to it are (optionally) compressed, hashed and spooled. */
  async startObject(compress: boolean): Promise<ObjectWriter> {
    const tmp = this.tempName();
    return new ObjectWriter(this, tmp, compress);
  }

  /** Renames a finished temporary file into place, or drops it if the object exists already. */
  async commit(tmp: string, hash: ContentHash, suffix: ObjectSuffix, size: number): Promise<void> {
    const target = this.pathOf(hash, suffix);
    if (await this.has(hash, suffix)) {
      await rm(tmp, { force: true });
      this.stats.objectsReused++;
      return;
    }
    try {
      await rename(tmp, target);
    } catch (e) {
      await rm(tmp, { force: true });
      throw ioError(target, 'store object', e);
    }
    this.stats.objectsWritten++;
    this.stats.bytesWritten += size;
  }

  /** Removes leftovers of an interrupted publish. */
  async cleanTxn(): Promise<void> {
    await rm(this.txnDir, { recursive: true, force: true });
    await mkdir(this.txnDir, { recursive: true });
  }

  private tempName(): string {
    return join(this.txnDir, `obj.${process.pid}.${randomBytes(6).toString('hex')}`);
  }
}

/**
 * One object being streamed to disk: plain bytes in → (zlib) → hash + temp file.
 * `finish` returns the content hash of the stored bytes; the caller then commits it with the
 * suffix it decides on (a single-piece file is a whole-file object, otherwise chunks are `P`).
 */
export class ObjectWriter implements ContentWriter {
  private readonly hasher: Hash;
  private readonly head: Writable;
  private storedBytes = 0;
  private readonly done: Promise<void>;

  constructor(
    private readonly store: ObjectStore,
    readonly tmp: string,
    compress: boolean,
  ) {
    const hasher = (this.hasher = newHasher(store.algorithm));
    // Hash the stored (compressed) bytes on their way to disk.
    const tap = new Transform({
      transform: (chunk: Buffer, _encoding, callback) => {
        hasher.update(chunk);
        this.storedBytes += chunk.length;
        callback(null, chunk);
      },
    });
    const out = createWriteStream(tmp, { flags: 'wx' });
    if (compress) {
      const deflate = zlibCompressStream();
      this.head = deflate;
      this.done = pipeline(deflate, tap, out);
    } else {
      this.head = tap;
      this.done = pipeline(tap, out);
    }
    this.done.catch(() => undefined); // observed in write/finish
  }

  async write(data: Uint8Array): Promise<void> {
    if (!this.head.write(data)) {
      await Promise.race([once(this.head, 'drain'), this.done]).catch((e) => {
        throw ioError(this.tmp, 'write object', e);
      });
    }
  }

  /** Flushes and closes the temp file; returns the hash and stored size. */
  async finish(): Promise<{ hash: ContentHash; storedSize: number }> {
    this.head.end();
    try {
      await this.done;
    } catch (e) {
      await rm(this.tmp, { force: true });
      throw ioError(this.tmp, 'write object', e);
    }
    return { hash: ContentHash.of(this.store.algorithm, this.hasher.digest()), storedSize: this.storedBytes };
  }

  async commit(suffix: ObjectSuffix): Promise<ContentHash> {
    const { hash, storedSize } = await this.finish();
    await this.store.commit(this.tmp, hash, suffix, storedSize);
    return hash;
  }

  async abort(): Promise<void> {
    this.head.destroy();
    await this.done.catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}

/**
 * Names content without storing it: external files (§7.1) are published by hash only, their bytes
 * stay on the external data server. External content is uncompressed, so the names are hashes of
 * the plain bytes, which is what the client checks the downloaded bytes against.
 */
export class HashOnlyStore implements ContentStore {
  constructor(readonly algorithm: HashAlgorithm) {}

  async putStored(stored: Buffer): Promise<ContentHash> {
    return ContentHash.compute(this.algorithm, stored);
  }

  async startObject(compress: boolean): Promise<ContentWriter> {
    if (compress) throw new CvmfsError('E_USAGE', 'external content is published uncompressed');
    const hasher = newHasher(this.algorithm);
    return {
      write: async (data) => {
        hasher.update(data);
      },
      commit: async () => ContentHash.of(this.algorithm, hasher.digest()),
      abort: async () => undefined,
    };
  }
}
