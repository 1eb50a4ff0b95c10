/**
 * Read access to the files of an image layout, wherever they live: a directory (`oci:`) or the members
 * of a tar archive (`oci-archive:`, `docker-archive:`), read in place.
 *
 * An archive is indexed once by its headers (positional reads, member data is not read) and members
 * are then streamed straight from their offsets, so nothing is extracted. A gzip- or zstd-compressed
 * archive is first decompressed to a temporary file, removed by `close()`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CvmfsError, FormatError } from '../errors';
import { decompressed, detectCompression } from './decompress';
import { readTarFile } from './tar-reader';

export interface LayoutFiles {
  /** Names the location in errors. */
  readonly where: string;
  /** Byte size of a file; E_NOT_FOUND when it is missing. */
  size(rel: string): Promise<number>;
  /** A whole small file; E_NOT_FOUND when missing, E_FORMAT when larger than `max`. */
  readFile(rel: string, max: number): Promise<Buffer>;
  /** The file's bytes; E_NOT_FOUND when missing (before any stream exists). */
  open(rel: string): Promise<Readable>;
  /** The first bytes of a file (compression sniffing). */
  head(rel: string, n: number): Promise<Buffer>;
  close(): Promise<void>;
}

function notFound(where: string, rel: string, cause?: unknown): CvmfsError {
  return new CvmfsError('E_NOT_FOUND', `${where}: ${rel} is missing`, cause ? { cause } : undefined);
}

function safeRel(rel: string, where: string): string {
  const n = posix.normalize(rel).replace(/^(\.\/)+/, '');
  if (n.startsWith('/') || n === '..' || n.startsWith('../')) throw new FormatError(`${where}: ${JSON.stringify(rel)} points outside the layout`);
  return n;
}

/** Files of a directory. */
export class DirectoryFiles implements LayoutFiles {
  constructor(private readonly dir: string) {}

  get where(): string {
    return this.dir;
  }

  private path(rel: string): string {
    return join(this.dir, safeRel(rel, this.dir));
  }

  async size(rel: string): Promise<number> {
    try {
      const st = await stat(this.path(rel));
      if (!st.isFile()) throw notFound(this.dir, rel);
      return st.size;
    } catch (e) {
      if (CvmfsError.is(e)) throw e;
      throw notFound(this.dir, rel, e);
    }
  }

  async readFile(rel: string, max: number): Promise<Buffer> {
    const size = await this.size(rel);
    if (size > max) throw new FormatError(`${this.dir}: ${rel} is ${size} bytes, too large`);
    return readFile(this.path(rel));
  }

  async open(rel: string): Promise<Readable> {
    await this.size(rel);
    return createReadStream(this.path(rel), { highWaterMark: 1 << 20 });
  }

  async head(rel: string, n: number): Promise<Buffer> {
    const fh = await open(this.path(rel), 'r').catch((e: unknown) => {
      throw notFound(this.dir, rel, e);
    });
    try {
      const buf = Buffer.alloc(n);
      const { bytesRead } = await fh.read(buf, 0, n, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  async close(): Promise<void> {
    // Nothing held open.
  }
}

interface Member {
  readonly offset: number;
  readonly size: number;
  /** Set for symlinks and hardlinks: the member (or, for symlinks, relative path) they point to. */
  readonly link?: { readonly kind: 'symlink' | 'hardlink'; readonly target: string };
}

/** Members of an uncompressed tar file, read in place. */
export class TarFiles implements LayoutFiles {
  private constructor(
    readonly where: string,
    private readonly file: string,
    private readonly members: ReadonlyMap<string, Member>,
    private readonly tempDir: string | undefined,
  ) {}

  /** Indexes `archive` (decompressing it to a file under `tmpDir` first when it is compressed). */
  static async open(archive: string, tmpDir = tmpdir()): Promise<TarFiles> {
    let file = archive;
    let tempDir: string | undefined;
    let fh;
    try {
      fh = await open(archive, 'r');
    } catch (e) {
      throw new CvmfsError('E_NOT_FOUND', `${archive}: cannot open the archive: ${(e as Error).message}`, { cause: e });
    }
    try {
      const head = Buffer.alloc(4);
      const { bytesRead } = await fh.read(head, 0, 4, 0);
      if (detectCompression(head.subarray(0, bytesRead)) !== 'none') {
        await fh.close();
        fh = undefined;
        tempDir = await mkdtemp(join(tmpDir, 'cvmfs-ts-archive-'));
        file = join(tempDir, 'archive.tar');
        const { stream } = await decompressed(createReadStream(archive));
        await pipeline(stream, createWriteStream(file));
        fh = await open(file, 'r');
      }
      const members = new Map<string, Member>();
      for await (const e of readTarFile(fh, archive)) {
        const h = e.header;
        const name = h.name.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
        if (h.type === 'file') members.set(name, { offset: h.dataOffset, size: h.size });
        else if (h.type === 'symlink') members.set(name, { offset: 0, size: 0, link: { kind: 'symlink', target: h.linkname } });
        else if (h.type === 'link') members.set(name, { offset: 0, size: 0, link: { kind: 'hardlink', target: h.linkname.replace(/^(\.\/)+/, '') } });
      }
      return new TarFiles(archive, file, members, tempDir);
    } catch (e) {
      if (tempDir) await rm(tempDir, { recursive: true, force: true });
      throw e;
    } finally {
      await fh?.close();
    }
  }

  /** Follows symlinks and hardlinks to a member with data (at most 16 hops, like a kernel's ELOOP). */
  private member(rel: string): Member {
    let name = safeRel(rel, this.where);
    for (let hops = 0; hops < 16; hops++) {
      const m = this.members.get(name);
      if (!m) throw notFound(this.where, rel);
      if (!m.link) return m;
      name =
        m.link.kind === 'hardlink'
          ? safeRel(m.link.target, this.where)
          : safeRel(m.link.target.startsWith('/') ? m.link.target : posix.join(posix.dirname(name), m.link.target), this.where);
    }
    throw new FormatError(`${this.where}: ${rel}: too many levels of links`);
  }

  async size(rel: string): Promise<number> {
    return this.member(rel).size;
  }

  async readFile(rel: string, max: number): Promise<Buffer> {
    const m = this.member(rel);
    if (m.size > max) throw new FormatError(`${this.where}: ${rel} is ${m.size} bytes, too large`);
    const chunks: Buffer[] = [];
    for await (const c of await this.open(rel)) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  async open(rel: string): Promise<Readable> {
    const m = this.member(rel);
    if (m.size === 0) return Readable.from([], { objectMode: false });
    return createReadStream(this.file, { start: m.offset, end: m.offset + m.size - 1, highWaterMark: 1 << 20 });
  }

  async head(rel: string, n: number): Promise<Buffer> {
    const m = this.member(rel);
    const fh = await open(this.file, 'r');
    try {
      const buf = Buffer.alloc(Math.min(n, m.size));
      const { bytesRead } = await fh.read(buf, 0, buf.length, m.offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  async close(): Promise<void> {
    if (this.tempDir) await rm(this.tempDir, { recursive: true, force: true });
  }
}
