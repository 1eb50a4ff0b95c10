/**
 * Writes tar members in the PAX-extended ustar format that Go's archive/tar (docker, buildkit) writes:
 * a ustar header, preceded by a PAX `x` record when a field does not fit (long or non-ASCII names,
 * big ids or sizes, sub-second mtimes) or the member has xattrs (`SCHILY.xattr.NAME`, raw bytes).
 *
 * Whole buffers, no streaming: it serves small layers (the thin image's thin.json, test fixtures).
 */
import type { TarEntryType } from './tar-reader';

export interface TarWriteEntry {
  readonly name: string;
  readonly type: Exclude<TarEntryType, 'other'>;
  /** Permission bits incl. setuid/setgid/sticky; default 0644 for files, 0755 for directories, 0777 for symlinks. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  readonly uname?: string;
  readonly gname?: string;
  /** Seconds since the epoch; default 0. */
  readonly mtime?: number;
  /** Hardlink target (member name) or symlink target. */
  readonly linkname?: string;
  readonly devmajor?: number;
  readonly devminor?: number;
  /** Written as `SCHILY.xattr.NAME` PAX records; values are raw bytes. */
  readonly xattrs?: Readonly<Record<string, Buffer | string>>;
  /** Content of a regular file. */
  readonly data?: Uint8Array;
}

const BLOCK = 512;
const FLAGS: Record<TarWriteEntry['type'], string> = {
  file: '0',
  link: '1',
  symlink: '2',
  'character-device': '3',
  'block-device': '4',
  directory: '5',
  fifo: '6',
};

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  // The length prefix counts its own digits.
  let digits = 1;
  while (String(body.length + digits).length !== digits) digits++;
  return Buffer.concat([Buffer.from(String(body.length + digits), 'latin1'), body]);
}

function octal(buf: Buffer, offset: number, width: number, value: number): boolean {
  const s = Math.max(0, Math.floor(value)).toString(8);
  if (s.length > width - 1) return false;
  buf.write(s.padStart(width - 1, '0') + '\0', offset, width, 'latin1');
  return true;
}

function header(name: string, flag: string, e: TarWriteEntry, size: number, mode: number): { block: Buffer; overflow: Map<string, string> } {
  const b = Buffer.alloc(BLOCK);
  const overflow = new Map<string, string>();
  const nameBytes = Buffer.from(name, 'utf8');
  const ascii = nameBytes.length === name.length;
  if (ascii && nameBytes.length <= 100) b.write(name, 0, 100, 'utf8');
  else {
    overflow.set('path', name);
    b.write(name.slice(0, 99).replace(/[^\x20-\x7e]/g, '_'), 0, 99, 'latin1');
  }
  octal(b, 100, 8, mode);
  if (!octal(b, 108, 8, e.uid ?? 0)) overflow.set('uid', String(e.uid));
  if (!octal(b, 116, 8, e.gid ?? 0)) overflow.set('gid', String(e.gid));
  if (!octal(b, 124, 12, size)) overflow.set('size', String(size));
  const mtime = e.mtime ?? 0;
  if (!octal(b, 136, 12, mtime) || mtime !== Math.floor(mtime)) overflow.set('mtime', String(mtime));
  b[156] = flag.charCodeAt(0);
  const link = e.linkname ?? '';
  const linkBytes = Buffer.from(link, 'utf8');
  if (linkBytes.length <= 100 && linkBytes.length === link.length) b.write(link, 157, 100, 'utf8');
  else overflow.set('linkpath', link);
  b.write('ustar\x0000', 257, 8, 'latin1');
  b.write((e.uname ?? '').slice(0, 31), 265, 32, 'utf8');
  b.write((e.gname ?? '').slice(0, 31), 297, 32, 'utf8');
  octal(b, 329, 8, e.devmajor ?? 0);
  octal(b, 337, 8, e.devminor ?? 0);
  return { block: b, overflow };
}

function checksum(b: Buffer): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
}

function padded(data: Uint8Array): Buffer[] {
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return pad ? [Buffer.from(data), Buffer.alloc(pad)] : [Buffer.from(data)];
}

/** One member (with its PAX record when needed), padded to whole blocks. */
export function tarEntry(e: TarWriteEntry): Buffer {
  const data = e.type === 'file' ? (e.data ?? new Uint8Array()) : new Uint8Array();
  const mode = e.mode ?? (e.type === 'directory' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644);
  const name = e.type === 'directory' && !e.name.endsWith('/') ? `${e.name}/` : e.name;
  const { block, overflow } = header(name, FLAGS[e.type], e, data.length, mode);
  const records: Buffer[] = [];
  for (const [k, v] of overflow) records.push(paxRecord(k, Buffer.from(v, 'utf8')));
  for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, Buffer.isBuffer(v) ? v : Buffer.from(v, 'utf8')));
  const out: Buffer[] = [];
  if (records.length > 0) {
    const pax = Buffer.concat(records);
    const paxName = `PaxHeaders.0/${name.replace(/\/$/, '').split('/').pop() ?? ''}`.slice(0, 99).replace(/[^\x20-\x7e]/g, '_');
    const ph = header(paxName, 'x', { name: paxName, type: 'file' }, pax.length, 0o644).block;
    checksum(ph);
    out.push(ph, ...padded(pax));
  }
  checksum(block);
  out.push(block, ...padded(data));
  return Buffer.concat(out);
}

/** The end-of-archive marker: two zero blocks. */
export function tarEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/** A complete archive of `entries`, in order. */
export function buildTar(entries: readonly TarWriteEntry[]): Buffer {
  return Buffer.concat([...entries.map(tarEntry), tarEnd()]);
}
