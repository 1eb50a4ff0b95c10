/**
 * A streaming tar reader for image layers and archives: ustar, GNU (`L`/`K` long names, base-256
 * numbers) and PAX (`x` and `g` records).
 *
 * Why not tar-stream: it decodes PAX values as UTF-8, which turns binary xattr values
 * (`SCHILY.xattr.security.capability`, bytes ≥ 0x80) into U+FFFD; node-tar drops xattrs altogether
 * (see docs/libraries.md). Here PAX records are split as bytes and xattr values stay raw Buffers.
 *
 * Pull-based: `readTar` is an async generator of entries; an entry's `body()` streams its data and
 * whatever the consumer leaves unread is skipped when it asks for the next entry. Backpressure is the
 * consumer's pace. `onChunk` sees every byte of the input exactly once, in order, including the bytes
 * after the end-of-archive blocks (the diff_id of a layer is the sha256 of the whole stream).
 */
import type { FileHandle } from 'node:fs/promises';
import { FormatError } from '../errors';

export type TarEntryType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo' | 'other';

export interface TarHeader {
  /** Member name as stored (PAX `path` or GNU long name applied), UTF-8. */
  readonly name: string;
  readonly type: TarEntryType;
  /** The raw type flag, e.g. '0', '5', 'S'; tells what an 'other' entry is. */
  readonly typeflag: string;
  /** Permission bits including setuid/setgid/sticky (07777). */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly uname: string;
  readonly gname: string;
  /** Data bytes that follow the header. */
  readonly size: number;
  /** Seconds since the epoch; PAX may give a fraction. */
  readonly mtime: number;
  /** Hardlink target (a member name) or symlink target. */
  readonly linkname: string;
  readonly devmajor: number;
  readonly devminor: number;
  /** Extended attributes from `SCHILY.xattr.*` and `LIBARCHIVE.xattr.*` PAX records, raw bytes. */
  readonly xattrs: ReadonlyMap<string, Buffer>;
  /** Offset of the entry's data in the input (for reading an uncompressed archive member in place). */
  readonly dataOffset: number;
}

export interface TarEntry {
  readonly header: TarHeader;
  /** The entry's data, once; unread data is skipped by the next step of the reader. */
  body(): AsyncGenerator<Buffer, void, undefined>;
}

export interface TarReadOptions {
  /** Every input chunk, in order, as it is pulled (hashing, counting). */
  readonly onChunk?: (chunk: Buffer) => void;
  /** Names the archive in errors. */
  readonly what?: string;
}

const BLOCK = 512;
/** PAX and GNU long-name records are metadata; anything larger is a broken or hostile archive. */
const MAX_META_SIZE = 16 << 20;

/** Where the reader gets its bytes: a stream (sequential) or a file (positional, skips without reading). */
interface ByteSource {
  readonly offset: number;
  read(n: number): Promise<Buffer>;
  stream(n: number): AsyncGenerator<Buffer, void, undefined>;
  skip(n: number): Promise<number>;
  drain(): Promise<number>;
  close(): Promise<void>;
}

/** Pulls bytes from an async iterator with a small look-ahead buffer. */
class ByteReader implements ByteSource {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  /** Bytes handed out or skipped so far. */
  offset = 0;

  constructor(
    private readonly it: AsyncIterator<unknown>,
    private readonly onChunk: ((chunk: Buffer) => void) | undefined,
  ) {}

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const r = await this.it.next();
    if (r.done) {
      this.ended = true;
      return false;
    }
    const v = r.value;
    const b = Buffer.isBuffer(v) ? v : v instanceof Uint8Array ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : Buffer.from(String(v));
    this.onChunk?.(b);
    if (b.length > 0) {
      this.chunks.push(b);
      this.buffered += b.length;
    }
    return true;
  }

  /** Exactly n bytes, or fewer only at the end of the input. */
  async read(n: number): Promise<Buffer> {
    while (this.buffered < n && (await this.fill()));
    const take = Math.min(n, this.buffered);
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, take);
    const rest = all.subarray(take);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.buffered = rest.length;
    this.offset += take;
    return out;
  }

  /** Up to n bytes as they arrive, without joining chunks. Returns fewer only at the end of the input. */
  async *stream(n: number): AsyncGenerator<Buffer, void, undefined> {
    let left = n;
    while (left > 0) {
      if (this.buffered === 0 && !(await this.fill())) return;
      if (this.chunks.length === 0) continue;
      const head = this.chunks[0];
      const piece = head.length <= left ? head : head.subarray(0, left);
      if (piece === head) this.chunks.shift();
      else this.chunks[0] = head.subarray(left);
      this.buffered -= piece.length;
      this.offset += piece.length;
      left -= piece.length;
      yield piece;
    }
  }

  /** Skips n bytes; returns how many there were. */
  async skip(n: number): Promise<number> {
    let skipped = 0;
    for await (const piece of this.stream(n)) skipped += piece.length;
    return skipped;
  }

  /** Reads everything that is left (so onChunk sees it), returning its length. */
  async drain(): Promise<number> {
    let n = this.buffered;
    this.chunks = [];
    this.buffered = 0;
    while (await this.fill()) {
      n += this.buffered;
      this.chunks = [];
      this.buffered = 0;
    }
    this.offset += n;
    return n;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** Positional reads from an open file: skipping member data costs nothing. */
class FileReader implements ByteSource {
  offset = 0;
  constructor(
    private readonly fh: FileHandle,
    private readonly fileSize: number,
  ) {}

  async read(n: number): Promise<Buffer> {
    const want = Math.max(0, Math.min(n, this.fileSize - this.offset));
    const buf = Buffer.alloc(want);
    let got = 0;
    while (got < want) {
      const { bytesRead } = await this.fh.read(buf, got, want - got, this.offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.offset += got;
    return buf.subarray(0, got);
  }

  async *stream(n: number): AsyncGenerator<Buffer, void, undefined> {
    let left = n;
    while (left > 0) {
      const piece = await this.read(Math.min(left, 1 << 20));
      if (piece.length === 0) return;
      left -= piece.length;
      yield piece;
    }
  }

  async skip(n: number): Promise<number> {
    const k = Math.max(0, Math.min(n, this.fileSize - this.offset));
    this.offset += k;
    return k;
  }

  async drain(): Promise<number> {
    return this.skip(this.fileSize - this.offset);
  }

  async close(): Promise<void> {
    // The caller owns the file handle.
  }
}

function cstring(b: Buffer, start: number, len: number, encoding: BufferEncoding = 'utf8'): string {
  const field = b.subarray(start, start + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? field.length : nul).toString(encoding);
}

/** An octal ASCII field (space/NUL padded) or a GNU base-256 number (high bit of the first byte set). */
function numeric(b: Buffer, start: number, len: number, what: string): number {
  const field = b.subarray(start, start + len);
  if (field[0] & 0x80) {
    // Base-256, big-endian two's complement; 0xff first byte = negative (only mtimes can be).
    const negative = field[0] === 0xff;
    let v = negative ? -1 : field[0] & 0x7f;
    for (let i = 1; i < field.length; i++) v = v * 256 + field[i];
    if (!Number.isSafeInteger(v)) throw new FormatError(`tar header ${what} does not fit a safe integer`);
    return v;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ \0]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new FormatError(`tar header ${what} ${JSON.stringify(text)} is not octal`);
  return parseInt(text, 8);
}

function checksumOk(block: Buffer): boolean {
  const stored = numeric(block, 148, 8, 'checksum');
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : block[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  // Some old tars summed signed chars; both are accepted, as GNU tar does.
  return stored === unsigned || stored === signed;
}

const TYPES: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file', // contiguous file: a regular file everywhere that matters
  '1': 'link',
  '2': 'symlink',
  '3': 'character-device',
  '4': 'block-device',
  '5': 'directory',
  '6': 'fifo',
};

type Pax = Map<string, Buffer>;

/** `LEN key=value\n` records, split as bytes so binary values survive. */
function parsePax(data: Buffer, what: string): Pax {
  const out: Pax = new Map();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding some writers leave
    const space = data.indexOf(0x20, pos);
    if (space < 0) throw new FormatError(`${what}: malformed PAX record`);
    const len = Number(data.subarray(pos, space).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= space - pos + 1 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw new FormatError(`${what}: malformed PAX record length`);
    }
    const record = data.subarray(space + 1, pos + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new FormatError(`${what}: PAX record without '='`);
    out.set(record.subarray(0, eq).toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

function paxNumber(pax: Pax, key: string, fallback: number, what: string): number {
  const v = pax.get(key);
  if (v === undefined) return fallback;
  const n = Number(v.toString('latin1'));
  if (!Number.isFinite(n)) throw new FormatError(`${what}: PAX ${key} ${JSON.stringify(v.toString('latin1'))} is not a number`);
  return n;
}

function paxXattrs(pax: Pax): Map<string, Buffer> {
  const x = new Map<string, Buffer>();
  for (const [key, value] of pax) {
    if (key.startsWith('SCHILY.xattr.')) x.set(key.slice('SCHILY.xattr.'.length), value);
    // libarchive's form: URL-encoded name, base64 value.
    else if (key.startsWith('LIBARCHIVE.xattr.')) {
      x.set(decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length)), Buffer.from(value.toString('latin1'), 'base64'));
    }
  }
  return x;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function padding(size: number): number {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/**
 * The entries of the tar stream `source`. Throws FormatError for a truncated or malformed archive.
 * After the end-of-archive marker the rest of the input is read (for `onChunk`) and ignored.
 */
export function readTar(source: AsyncIterable<unknown>, options: TarReadOptions = {}): AsyncGenerator<TarEntry, void, undefined> {
  return entries(new ByteReader(source[Symbol.asyncIterator](), options.onChunk), options.what ?? 'tar archive');
}

/**
 * The entries of an uncompressed tar file through positional reads: member data is skipped without
 * reading it, so indexing a large archive reads only its headers. `onChunk` is not supported here.
 */
export async function* readTarFile(fh: FileHandle, what = 'tar archive'): AsyncGenerator<TarEntry, void, undefined> {
  const { size } = await fh.stat();
  yield* entries(new FileReader(fh, size), what);
}

async function* entries(r: ByteSource, what: string): AsyncGenerator<TarEntry, void, undefined> {
  let globalPax: Pax = new Map();
  let pax: Pax | undefined;
  let longName: string | undefined;
  let longLink: string | undefined;
  let finished = false;
  try {
    for (;;) {
      const block = await r.read(BLOCK);
      if (block.length === 0) break; // EOF without end marker: tolerated like GNU tar does
      if (block.length < BLOCK) throw new FormatError(`${what}: truncated header at byte ${r.offset - block.length}`);
      if (isZeroBlock(block)) {
        await r.drain();
        break;
      }
      if (!checksumOk(block)) throw new FormatError(`${what}: header checksum mismatch at byte ${r.offset - BLOCK}`);
      const typeflag = String.fromCharCode(block[156]);
      const size = numeric(block, 124, 12, 'size');
      if (typeflag === 'x' || typeflag === 'g' || typeflag === 'L' || typeflag === 'K') {
        if (size > MAX_META_SIZE) throw new FormatError(`${what}: a ${size}-byte metadata record`);
        const data = await r.read(size);
        if (data.length < size) throw new FormatError(`${what}: truncated metadata record`);
        await r.skip(padding(size));
        if (typeflag === 'x') pax = parsePax(data, what);
        else if (typeflag === 'g') globalPax = new Map([...globalPax, ...parsePax(data, what)]);
        else if (typeflag === 'L') longName = cstring(data, 0, data.length);
        else longLink = cstring(data, 0, data.length);
        continue;
      }
      const merged: Pax = pax ? new Map([...globalPax, ...pax]) : globalPax;
      const magic = block.subarray(257, 263).toString('latin1');
      // ustar has a name prefix; the GNU format keeps other fields there.
      const prefix = magic === 'ustar\0' ? cstring(block, 345, 155) : '';
      let name = longName ?? (prefix ? `${prefix}/${cstring(block, 0, 100)}` : cstring(block, 0, 100));
      let linkname = longLink ?? cstring(block, 157, 100);
      if (merged.has('path')) name = merged.get('path')!.toString('utf8');
      if (merged.has('linkpath')) linkname = merged.get('linkpath')!.toString('utf8');
      const header: TarHeader = {
        name,
        type: TYPES[typeflag] ?? 'other',
        typeflag,
        mode: numeric(block, 100, 8, 'mode') & 0o7777,
        uid: paxNumber(merged, 'uid', numeric(block, 108, 8, 'uid'), what),
        gid: paxNumber(merged, 'gid', numeric(block, 116, 8, 'gid'), what),
        uname: merged.get('uname')?.toString('utf8') ?? cstring(block, 265, 32),
        gname: merged.get('gname')?.toString('utf8') ?? cstring(block, 297, 32),
        size: paxNumber(merged, 'size', size, what),
        mtime: paxNumber(merged, 'mtime', numeric(block, 136, 12, 'mtime'), what),
        linkname,
        devmajor: numeric(block, 329, 8, 'devmajor'),
        devminor: numeric(block, 337, 8, 'devminor'),
        xattrs: paxXattrs(merged),
        dataOffset: r.offset,
      };
      pax = undefined;
      longName = undefined;
      longLink = undefined;
      if (!Number.isSafeInteger(header.size) || header.size < 0) throw new FormatError(`${what}: ${name}: bad size`);
      // Hardlinks, symlinks, devices, FIFOs and directories carry no data, whatever the size field says
      // (GNU tar may store a directory's size; it is never followed by data).
      const dataSize = header.type === 'file' || header.type === 'other' ? header.size : 0;
      let left = dataSize;
      const body = async function* (): AsyncGenerator<Buffer, void, undefined> {
        for await (const piece of r.stream(left)) {
          left -= piece.length;
          yield piece;
        }
        if (left > 0) throw new FormatError(`${what}: ${name}: truncated data`);
      };
      yield { header, body };
      if (left > 0 && (await r.skip(left)) < left) throw new FormatError(`${what}: ${name}: truncated data`);
      left = 0;
      await r.skip(padding(dataSize));
    }
    finished = true;
  } finally {
    // Stop the input when the consumer gave up early (or on an error), so files and sockets close.
    if (!finished) await r.close();
  }
}
