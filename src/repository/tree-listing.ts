/**
 * A canonical listing of a whole repository, record for record what `shared/tools/treelist.py
 * ROOT --no-owner` prints for a mount of it by the real client. Used to compare our view of a
 * repository with the reference client's, and a published repository with its source tree.
 *
 * The walk goes through the catalogs as the client's readdir does (§5.2, §5.3): it starts at the
 * root catalog, lists a directory from the catalog that serves it, and at a nested mountpoint
 * switches to the nested catalog. The transition directory is listed once, from the parent's
 * transition entry; the nested catalog's root entry (same path) is never listed as a child because
 * its parent key is that of the mountpoint's parent. Hidden entries (flag 0x8000) are skipped
 * together with everything below them, as readdir skips them.
 *
 * What each record holds (treelist.py): path relative to the root; `mode` as Python's oct();
 * `mtime` as Python's int(st_mtime); regular files: `size` and the sha256 of the content as read
 * through the client (objects fetched, hash-checked against their names, inflated when zlib,
 * chunks in offset order); symlinks: `target` after variant-symlink expansion (§5.5); char/block
 * devices: `rdev` [major, minor] decoded from the `size` column with glibc's major()/minor();
 * `xattr` {name: hex} for catalog xattrs named `user.*` minus the CVMFS magic names treelist
 * drops. A final `{"hardlink_groups": [...]}` record lists regular files sharing an inode: the
 * client gives all entries of one catalog with the same non-zero hardlink group one inode, and
 * treelist groups regular files with st_nlink > 1 by inode.
 *
 * Memory: one stored object at a time (a file's bulk object or one chunk); inflation streams into
 * the hash. Records are produced lazily, in treelist's output order.
 *
 * Not covered: bind mountpoints (§7.2) are listed as plain directories without descending (they
 * only occur below the hidden `/.cvmfs`); external files (§7.1) have no content in `data/` and
 * make the listing fail with E_NOT_FOUND.
 */
import { createHash, type Hash } from 'node:crypto';
import type { CatalogDb, CatalogEntry } from '../catalog/catalog-db';
import type { ContentHash } from '../format/hash';
import { Compression } from '../format/flags';
import { zlibDecompressStream } from '../format/compression';
import { expandVariantSymlink } from '../format/variant-symlink';
import { fetchVerified, type Repository } from './repository';
import { CvmfsError, FormatError } from '../errors';

export interface TreeEntry {
  /** Relative to the repository root, no leading slash. */
  path: string;
  /** Python's oct(st_mode), e.g. "0o100644". */
  mode: string;
  mtime: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: [number, number];
  xattr?: Record<string, string>;
}

export interface HardlinkGroupsRecord {
  hardlink_groups: string[][];
}

export type TreeRecord = TreeEntry | HardlinkGroupsRecord;

export interface ListTreeOptions {
  /** Environment for variant symlinks (the client's process environment); `{}` = nothing set. */
  env?: Readonly<Record<string, string | undefined>>;
  /**
   * treelist.py always drops a directory named `.cvmfs` at the top level, hidden or not (its
   * `--skip-hidden-cvmfs` switch is not actually parsed). Default true, to match it. Entries with
   * the hidden flag are skipped regardless, as the client's readdir skips them.
   */
  skipHiddenCvmfs?: boolean;
}

export function isHardlinkGroupsRecord(r: TreeRecord): r is HardlinkGroupsRecord {
  return 'hardlink_groups' in r;
}

/** Magic xattrs of the CVMFS client that treelist.py never reports (copied from treelist.py). */
export const TREELIST_MAGIC_XATTRS: ReadonlySet<string> = new Set(
  (
    'authz catalog_counters chunk_list chunks compression direct_io expires external_file external_host ' +
    'external_timeout external_url fqrn hash host host_list hitrate inode_max lhash logbuffer maxfd ' +
    'ncleanup24 nclg ndiropen ndownload nioerr nopen pid proxy proxy_list proxy_list_external pubkeys ' +
    'rawlink repo_counters repo_metainfo revision root_hash rx speed tag timeout timeout_direct ' +
    'timestamp_last_ioerr uptime usedfd useddirp version'
  )
    .split(' ')
    .map((n) => `user.${n}`),
);

/** glibc `gnu_dev_major` / `gnu_dev_minor` of a dev_t (64-bit, as stored in the `size` column). */
export function deviceNumbers(dev: number | bigint): [number, number] {
  const d = BigInt.asUintN(64, BigInt(dev));
  const hi = (d >> 32n) & 0xffffffffn; // (unsigned int)(dev >> 32)
  const mid = (d >> 12n) & 0xffffffffn; // (unsigned int)(dev >> 12)
  const major = ((d >> 8n) & 0xfffn) | (hi & ~0xfffn & 0xffffffffn);
  const minor = (d & 0xffn) | (mid & ~0xffn & 0xffffffffn);
  return [Number(major), Number(minor)];
}

/** Python's `int(st.st_mtime)`: st_mtime is the double sec + nsec * 1e-9, truncated toward zero. */
export function pythonIntMtime(sec: number, nsec: number | null): number {
  if (!nsec) return sec;
  return Math.trunc(sec + nsec * 1e-9);
}

/** Compares strings by Unicode code point, like Python's str ordering. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!;
    const y = b.codePointAt(i)!;
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++; // both were the same astral character
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

interface DirectoryFrame {
  /** Full catalog path, "" for the root. */
  path: string;
  /** The catalog serving the directory's listing. */
  db: CatalogDb;
  catalogKey: string;
}

/** Reads the repository's whole tree in treelist.py order, ending with the hardlink_groups record. */
export async function* listTree(repo: Repository, opts: ListTreeOptions = {}): AsyncGenerator<TreeRecord> {
  const env = opts.env ?? {};
  const skipCvmfs = opts.skipHiddenCvmfs ?? true;
  const content = new ContentReader(repo);
  const inodeGroups = new Map<string, string[]>();

  const stack: DirectoryFrame[] = [{ path: '', db: await repo.rootCatalog(), catalogKey: repo.rootHash.toString() }];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const nested = new Map(dir.db.nestedCatalogs().map((r) => [r.path, r]));
    let children = dir.db.list(dir.path).filter((e) => !e.flags.hidden);
    if (dir.path === '' && skipCvmfs) children = children.filter((e) => !(e.name === '.cvmfs' && e.type === 'directory'));
    children.sort((a, b) => compareCodePoints(a.name, b.name));

    const subdirectories: DirectoryFrame[] = [];
    for (const e of children) {
      const path = `${dir.path}/${e.name}`;
      const rel = path.slice(1);
      const record: TreeEntry = {
        path: rel,
        mode: `0o${e.mode.toString(8)}`,
        mtime: pythonIntMtime(e.mtime, e.mtimens),
      };
      switch (e.type) {
        case 'regular':
          record.size = e.size;
          record.sha256 = await content.sha256(dir.db, path, e);
          if (e.hardlinkGroup !== 0 && e.linkCount > 1) {
            const key = `${dir.catalogKey}:${e.hardlinkGroup}`;
            const group = inodeGroups.get(key);
            if (group) group.push(rel);
            else inodeGroups.set(key, [rel]);
          }
          break;
        case 'symlink':
          record.target = expandVariantSymlink(e.symlink, env);
          break;
        case 'char':
        case 'block':
          record.rdev = deviceNumbers(e.size);
          break;
        case 'directory': {
          const ref = nested.get(path);
          if (ref) {
            if (!ref.hash) throw new FormatError(`nested catalog at ${path} has no content hash`);
            subdirectories.push({ path, db: await repo.catalog(ref.hash), catalogKey: ref.hash.toString() });
          } else if (e.flags.nestedMountpoint) {
            throw new FormatError(`${path} is marked as a nested catalog mountpoint but its catalog does not list it`);
          } else if (!e.flags.bindMountpoint) {
            subdirectories.push({ path, db: dir.db, catalogKey: dir.catalogKey });
          }
          break;
        }
        default:
          break;
      }
      const xattr = userXattrs(e);
      if (xattr) record.xattr = xattr;
      yield record;
    }
    for (let i = subdirectories.length - 1; i >= 0; i--) stack.push(subdirectories[i]!);
  }

  const groups = [...inodeGroups.values()]
    .filter((g) => g.length > 1)
    .map((g) => [...g].sort(compareCodePoints))
    .sort(compareStringLists);
  yield { hardlink_groups: groups };
}

function userXattrs(e: CatalogEntry): Record<string, string> | undefined {
  const names = [...e.xattrs.keys()]
    .filter((n) => n.startsWith('user.') && !TREELIST_MAGIC_XATTRS.has(n))
    .sort(compareCodePoints);
  if (names.length === 0) return undefined;
  return Object.fromEntries(names.map((n) => [n, e.xattrs.get(n)!.toString('hex')]));
}

/** sha256 of file contents as the client serves them, one stored object in memory at a time. */
class ContentReader {
  private readonly cache = new Map<string, string>();
  constructor(private readonly repo: Repository) {}

  async sha256(db: CatalogDb, path: string, e: CatalogEntry): Promise<string> {
    if (e.flags.external) {
      throw new CvmfsError('E_NOT_FOUND', `${path}: external file; its content is not stored in the repository`);
    }
    const hasher = createHash('sha256');
    if (e.flags.chunked) {
      const chunks = db.chunks(path, e);
      if (chunks.length > 0) {
        for (const c of chunks) await this.feed(hasher, c.hash, 'P', e.flags.compression, `${path} chunk at ${c.offset}`);
        return hasher.digest('hex');
      }
    }
    if (e.hash) {
      const key = `${e.hash.toString()}/${e.flags.compression}`;
      const known = this.cache.get(key);
      if (known) return known;
      await this.feed(hasher, e.hash, '', e.flags.compression, path);
      const digest = hasher.digest('hex');
      this.cache.set(key, digest);
      return digest;
    }
    if (e.size === 0) return hasher.digest('hex');
    throw new FormatError(`${path}: regular file of ${e.size} bytes has neither a content hash nor chunks`);
  }

  private async feed(hasher: Hash, hash: ContentHash, suffix: '' | 'P', compression: Compression, what: string) {
    const stored = await fetchVerified(this.repo.source, hash, suffix);
    if (compression === Compression.None) hasher.update(stored);
    else await inflateInto(stored, (b) => hasher.update(b), what);
  }
}

/** Inflates a zlib object chunk by chunk into `sink`; resolves to the inflated length. */
export function inflateInto(stored: Buffer, sink: (data: Buffer) => void, what: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const inflate = zlibDecompressStream();
    let length = 0;
    inflate.on('data', (b: Buffer) => {
      length += b.length;
      sink(b);
    });
    inflate.on('end', () => resolve(length));
    inflate.on('error', (e) => reject(new FormatError(`${what}: stored object is not a valid zlib stream`, { cause: e })));
    inflate.end(stored);
  });
}

function compareStringLists(a: readonly string[], b: readonly string[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const c = compareCodePoints(a[i]!, b[i]!);
    if (c !== 0) return c;
  }
  return a.length - b.length;
}

// ---------------------------------------------------------------------------------------------
// Serialization exactly as treelist.py: json.dumps(record, sort_keys=True), one record a line.

/** Python's `json.dumps(value, sort_keys=True)` with default separators and ensure_ascii. */
export function pythonJsonDumps(value: unknown): string {
  if (value === null || value === undefined) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'number') {
    if (!Number.isInteger(value)) throw new FormatError(`cannot serialize the non-integer ${value} like Python`);
    return String(value);
  }
  if (typeof value === 'bigint') return value.toString();
  if (typeof value === 'string') return pythonJsonString(value);
  if (Array.isArray(value)) return `[${value.map(pythonJsonDumps).join(', ')}]`;
  if (typeof value === 'object') {
    const keys = Object.keys(value as object)
      .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
      .sort(compareCodePoints);
    return `{${keys.map((k) => `${pythonJsonString(k)}: ${pythonJsonDumps((value as Record<string, unknown>)[k])}`).join(', ')}}`;
  }
  throw new FormatError(`cannot serialize a ${typeof value} like Python's json`);
}

const SHORT_ESCAPES: Record<string, string> = {
  '"': '\\"',
  '\\': '\\\\',
  '\n': '\\n',
  '\r': '\\r',
  '\t': '\\t',
  '\b': '\\b',
  '\f': '\\f',
};

/** ensure_ascii: everything outside ' '..'~' becomes \uXXXX (lowercase, UTF-16 units). */
function pythonJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const ch = s[i]!;
    const unit = s.charCodeAt(i);
    const short = SHORT_ESCAPES[ch];
    if (short) out += short;
    else if (unit >= 0x20 && unit <= 0x7e) out += ch;
    else out += `\\u${unit.toString(16).padStart(4, '0')}`;
  }
  return `${out}"`;
}

/** One line of treelist output (without the newline). */
export function formatTreeRecord(record: TreeRecord): string {
  return pythonJsonDumps(record);
}

/**
 * Orders entries as treelist.py's os.walk prints them: a directory's entries are printed together,
 * sorted by name, when the walk reaches the directory; directories are reached depth-first in
 * sorted order. So an entry sorts by its parent's component list (component-wise, a prefix
 * first), then by its name.
 */
export function compareTreePaths(a: string, b: string): number {
  const pa = a.split('/');
  const pb = b.split('/');
  const na = pa.pop()!;
  const nb = pb.pop()!;
  const n = Math.min(pa.length, pb.length);
  for (let i = 0; i < n; i++) {
    const c = compareCodePoints(pa[i]!, pb[i]!);
    if (c !== 0) return c;
  }
  if (pa.length !== pb.length) return pa.length - pb.length;
  return compareCodePoints(na, nb);
}

function formatSorted(records: TreeRecord[]): string {
  const entries: TreeEntry[] = [];
  const groups: string[][] = [];
  for (const r of records) {
    if (isHardlinkGroupsRecord(r)) groups.push(...r.hardlink_groups.map((g) => [...g].sort(compareCodePoints)));
    else entries.push(r);
  }
  entries.sort((x, y) => compareTreePaths(x.path, y.path));
  groups.sort(compareStringLists);
  const lines = entries.map(formatTreeRecord);
  lines.push(formatTreeRecord({ hardlink_groups: groups }));
  return lines.map((l) => `${l}\n`).join('');
}

/**
 * The whole treelist.py output: entries in os.walk order, then one `hardlink_groups` line (from
 * the hardlink_groups record(s) among the input; empty when there is none). Accepts an array or
 * the async generator of listTree (then returns a promise).
 */
export function formatTreeListing(records: Iterable<TreeRecord>): string;
export function formatTreeListing(records: AsyncIterable<TreeRecord>): Promise<string>;
export function formatTreeListing(records: Iterable<TreeRecord> | AsyncIterable<TreeRecord>): string | Promise<string> {
  if (Symbol.asyncIterator in records) {
    return (async () => {
      const all: TreeRecord[] = [];
      for await (const r of records) all.push(r);
      return formatSorted(all);
    })();
  }
  return formatSorted([...records]);
}
