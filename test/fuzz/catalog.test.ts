/**
 * Fuzzing catalog databases (§3) with the real fixture's catalogs (made by cvmfs_server 2.12):
 *
 * - bytes: the SQLite file with bytes changed (header, schema page, b-tree page headers, anywhere),
 *   pages copied or zeroed, the file cut; each mutant written to a file and opened with CatalogDb;
 * - rows: values of every kind put into the columns through SQL (flags, mode, hardlinks, hash, name,
 *   symlink, xattr, chunk offsets/sizes/hashes, nested catalog paths/hashes, properties, statistics),
 *   rows deleted or added, tables and columns dropped or renamed.
 *
 * Every mutant goes through the CatalogDb API (lookup, list, chunks, nestedCatalogs, counters, properties,
 * scans) and through a CatalogTree (lookups across the nested catalogs): every failure must be a
 * CvmfsError, every value returned must be sane (strings where strings belong, finite numbers), and no
 * file descriptor may leak.
 *
 * Most row mutants are applied to one live file through a second connection and undone row by row
 * afterwards (re-opening a catalog costs more than the whole check); mutants that change the schema or
 * what the constructor reads are built in memory and written to a file of their own.
 */
import t from 'tap';
import { mkdtempSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { inflateSync } from 'node:zlib';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { CatalogDb, type CatalogEntry, type CatalogReference, type Chunk } from '../../src/catalog/catalog-db';
import { CatalogTree } from '../../src/client/catalog-tree';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { objectPath } from '../../src/format/object-name';
import { pathKey, parentPath } from '../../src/format/path-key';
import { encodeXattrs } from '../../src/format/xattr-blob';
import { COUNTER_NAMES } from '../../src/format/catalog-schema';
import { CvmfsError } from '../../src/errors';
import { check, fuzzConfig, fuzzLoopAsync, mutate, Tally, typed, typedAsync, type FuzzConfig, type Rng } from '../helpers/fuzz';

const REPO = resolve(__dirname, '../../../shared/fixtures/real-small/repo');
const cfg = fuzzConfig(120); // generous: CI runs two test files at once on two cores
/**
 * FUZZ_RUNS catalog mutants in all: 12 % byte mutants (each needs a file of its own and a fresh open, so
 * they are the slow kind), the rest row mutants.
 */
const byteCfg: FuzzConfig = { ...cfg, runs: Math.round(cfg.runs * 0.12), timeLimitMs: Math.min(cfg.timeLimitMs, 15_000) };
const rowCfg: FuzzConfig = { ...cfg, runs: cfg.runs - byteCfg.runs };

// ---------------------------------------------------------------------------------------------------
// The fixture's catalogs

const manifestText = readFileSync(join(REPO, '.cvmfspublished'), 'latin1');
const ROOT_HASH = ContentHash.parse(/^C(.*)$/m.exec(manifestText)![1]!);
const ROOT_SIZE = Number(/^B(.*)$/m.exec(manifestText)![1]);
const catalogBytes = (hash: ContentHash): Buffer => inflateSync(readFileSync(join(REPO, objectPath(hash, 'C'))));
const ROOT_BYTES = catalogBytes(ROOT_HASH);
const PAGE = ROOT_BYTES.readUInt16BE(16) === 1 ? 65536 : ROOT_BYTES.readUInt16BE(16);

const dir = mkdtempSync(join(tmpdir(), 'cvmfs-ts-fuzz-catalog-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

function writeCatalog(name: string, bytes: Buffer): string {
  const file = join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

const pristine = new CatalogDb(writeCatalog('root.db', ROOT_BYTES));
const NESTED_HASH = pristine.nestedCatalogs()[0]!.hash!;
const nested = new CatalogDb(writeCatalog('nested.db', catalogBytes(NESTED_HASH)));
const INNER_HASH = nested.nestedCatalogs()[0]!.hash!;
const inner = new CatalogDb(writeCatalog('inner.db', catalogBytes(INNER_HASH)));
t.teardown(() => [pristine, nested, inner].forEach((d) => d.close()));
t.equal(pristine.lookup('/random-1.5M.bin')?.flags.chunked, true, 'the fixture has a chunked file');

/** Entries whose rows are mutated and then looked at. */
const PROBES = [
  '', '/text.txt', '/random-1.5M.bin', '/xattr.txt', '/hardlinks/original.txt', '/hardlinks/second-name.txt',
  '/link-variant', '/link-rel', '/nested', '/many/f001.txt', '/deep/d01', '/fifo', '/empty.txt',
  '/dir with space/\u00f1and\u00fa/inner file.txt', '/added', '/run.sh', '/\u00fcn\u00efc\u00f8d\u00e9-\u540d\u524d-\u0444\u0430\u0439\u043b.txt',
];
/** Paths only looked up (through the tree: some live in the nested catalogs). */
const TREE_PATHS = [...PROBES, '/many', '/nested/inner', '/nested/inner/d.txt', '/does-not-exist', '/text.txt/below-a-file', '/nested/nope'];
for (const p of PROBES) t.ok(pristine.lookup(p), `probe ${p || '/'} exists`);

const ROWID = new Map(PROBES.map((p) => [p, BigInt(pristine.lookup(p)!.rowid)]));

// ---------------------------------------------------------------------------------------------------
// Exercising one catalog

type Outcome = { ok: true } | { ok: false; error: CvmfsError };

function saneEntry(e: CatalogEntry | undefined, what: string): void {
  if (e === undefined) return;
  check(typeof e.name === 'string' && typeof e.symlink === 'string', `${what}: name or symlink is not a string`);
  for (const [k, v] of Object.entries({
    rowid: e.rowid, mode: e.mode, size: e.size, mtime: e.mtime, uid: e.uid, gid: e.gid,
    linkCount: e.linkCount, hardlinkGroup: e.hardlinkGroup, rawFlags: e.rawFlags,
  })) {
    check(Number.isFinite(v), `${what}: ${k} is ${v}`);
  }
  check(e.mtimens === null || Number.isFinite(e.mtimens), `${what}: mtimens is ${e.mtimens}`);
  check(e.hash === undefined || e.hash instanceof ContentHash, `${what}: hash is not a ContentHash`);
  check(typeof e.key.md5path1 === 'bigint' && typeof e.parentKey.md5path2 === 'bigint', `${what}: keys are not bigints`);
  check(e.xattrs instanceof Map, `${what}: xattrs is not a map`);
}

function saneChunks(chunks: Chunk[], what: string): void {
  for (const c of chunks) {
    check(Number.isFinite(c.offset) && Number.isFinite(c.size), `${what}: chunk at ${c.offset} of ${c.size}`);
    check(c.hash instanceof ContentHash, `${what}: chunk hash is not a ContentHash`);
  }
}

function saneRefs(refs: CatalogReference[], what: string): void {
  for (const r of refs) {
    check(typeof r.path === 'string', `${what}: path ${String(r.path)} is not a string`);
    check(r.hash === undefined || r.hash instanceof ContentHash, `${what}: hash is not a ContentHash`);
    check(Number.isFinite(r.size), `${what}: size is ${r.size}`);
  }
}

class Exercise {
  constructor(
    readonly tally: Tally,
    readonly what: string,
  ) {}

  run<T>(op: string, fn: () => T, sane?: (v: T, what: string) => void): T | undefined {
    const r = typed(`${op} on ${this.what}`, fn);
    this.tally.outcome(op, r as Outcome);
    if (!r.ok) return undefined;
    sane?.(r.value, `${op} on ${this.what}`);
    return r.value;
  }

  async runAsync<T>(op: string, fn: () => Promise<T>, sane?: (v: T, what: string) => void): Promise<T | undefined> {
    const r = await typedAsync(`${op} on ${this.what}`, fn);
    this.tally.outcome(op, r as Outcome);
    if (!r.ok) return undefined;
    sane?.(r.value, `${op} on ${this.what}`);
    return r.value;
  }
}

/** The CatalogDb API on the given paths; `full` adds the whole-catalog scans. */
function exerciseDb(x: Exercise, db: CatalogDb, paths: readonly string[], full: boolean, rng: Rng): void {
  for (const path of paths) {
    const e = x.run('lookup', () => db.lookup(path), saneEntry);
    if (e && e.type === 'regular') x.run('chunks', () => db.chunks(path, e), saneChunks);
    if (!e || e.type === 'directory') x.run('list', () => db.list(path), (es, w) => es.forEach((c) => saneEntry(c, w)));
    const parent = parentPath(path);
    if (parent !== undefined && rng.bool(0.3)) x.run('list', () => db.list(parent), (es, w) => es.forEach((c) => saneEntry(c, w)));
  }
  // The whole-catalog queries, each in about half of the cases (every call prepares a statement).
  const some = () => full || rng.bool(0.5);
  x.run('nestedCatalogs', () => db.nestedCatalogs(), saneRefs);
  if (some()) x.run('bindMountpoints', () => db.bindMountpoints(), saneRefs);
  if (some()) x.run('counters', () => db.counters(), (c, w) => {
    for (const n of COUNTER_NAMES) check(Number.isFinite(c.self[n]) && Number.isFinite(c.subtree[n]), `${w}: counter ${n}`);
  });
  if (some()) x.run('properties', () => db.properties());
  if (some()) x.run('rootPrefix', () => db.rootPrefix(), (v, w) => check(typeof v === 'string', `${w}: root prefix ${v}`));
  if (some()) x.run('revision', () => db.revision(), (v, w) => check(Number.isSafeInteger(v), `${w}: revision ${v}`));
  if (some()) x.run('maxRowid', () => db.maxRowid(), (v, w) => check(Number.isFinite(v), `${w}: max rowid ${v}`));
  if (some()) x.run('hardlinkGroups', () => db.hardlinkGroups(), (gs, w) =>
    gs.forEach((g) => check(Number.isFinite(g.group) && Number.isFinite(g.rowid), `${w}: group ${g.group}`)));
  if (full) {
    x.run('allEntries', () => [...db.allEntries()], (es, w) => es.forEach((e) => saneEntry(e, w)));
    x.run('allChunkHashes', () => db.allChunkHashes());
    x.run('contentDigest', () => db.contentDigest());
  }
}

/** Lookups and listings through a CatalogTree whose root is `root`; nested catalogs are the pristine ones. */
async function exerciseTree(x: Exercise, root: CatalogDb, paths: readonly string[]): Promise<void> {
  const load = async (hash: ContentHash, mountPath: string): Promise<CatalogDb> => {
    if (mountPath === '') return root;
    if (hash.equals(NESTED_HASH)) return nested;
    if (hash.equals(INNER_HASH)) return inner;
    throw new CvmfsError('E_NOT_FOUND', `catalog ${hash} is not in the repository`);
  };
  const tree = await x.runAsync('tree.create', () => CatalogTree.create(ROOT_HASH, load, ROOT_SIZE));
  if (!tree) return;
  for (const path of paths) {
    const r = await x.runAsync('tree.lookup', () => tree.lookup(path), (v, w) => {
      saneEntry(v.entry, w);
      check(Number.isSafeInteger(v.inode), `${w}: inode ${v.inode}`);
    });
    if (r && r.entry.type === 'regular') x.run('tree.chunks', () => tree.chunks(r), saneChunks);
    if (r && r.entry.type === 'directory') {
      await x.runAsync('tree.list', () => tree.list(path), (es, w) => es.forEach((e) => check(Number.isSafeInteger(e.inode), `${w}: inode`)));
    }
  }
}

/**
 * A new CatalogTree costs ~10 ms (its lookup cache preallocates 65,536 slots), more than the rest of a
 * case: only some cases build one.
 */
const TREE_SHARE = 0.025;

function openFds(): number {
  return readdirSync('/proc/self/fd').length;
}

// ---------------------------------------------------------------------------------------------------
// (a) Byte mutants of the SQLite file

const BOUNDARY_16 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x1ff, 0x200, 0xfff, 0x1000, 0x7fff, 0x8000, 0xfffe, 0xffff];
const BOUNDARY_32 = [0, 1, 2, 28, 29, 0x7fffffff, 0x80000000, 0xffffffff, ROOT_BYTES.length / PAGE];

/** In-place edits inside [start, end): the page layout stays, so SQLite gets past the first check more often. */
function editInPlace(rng: Rng, buf: Buffer, start: number, end: number): void {
  const at = start + rng.int(Math.max(1, end - start));
  if (at >= buf.length) return;
  switch (rng.int(6)) {
    case 0:
      buf[at] ^= 1 << rng.int(8);
      break;
    case 1:
      buf[at] = rng.int(256);
      break;
    case 2:
      if (at + 2 <= buf.length) buf.writeUInt16BE(rng.pick(BOUNDARY_16), at);
      break;
    case 3:
      if (at + 4 <= buf.length) buf.writeUInt32BE(rng.pick(BOUNDARY_32), at);
      break;
    case 4:
      buf.fill(rng.bool() ? 0 : 0xff, at, Math.min(buf.length, at + rng.count(32, 0.8)));
      break;
    case 5: {
      const from = rng.int(buf.length);
      buf.copy(buf, at, from, Math.min(buf.length, from + rng.count(64, 0.8)));
      break;
    }
  }
}

function byteMutant(rng: Rng): Buffer {
  const pages = ROOT_BYTES.length / PAGE;
  const kind = rng.weighted([[15, 'header'], [15, 'schema'], [25, 'page-header'], [20, 'anywhere'], [8, 'copy-page'], [4, 'zero-page'], [5, 'cut'], [8, 'shift']] as const);
  if (kind === 'shift') return mutate(rng, ROOT_BYTES, { max: 2 }); // inserts and deletes move every page after them
  const buf = Buffer.from(ROOT_BYTES);
  const edits = rng.count(4);
  for (let k = 0; k < edits; k++) {
    const page = rng.int(pages);
    const pageStart = page * PAGE + (page === 0 ? 100 : 0);
    switch (kind) {
      case 'header':
        editInPlace(rng, buf, 0, 100);
        break;
      case 'schema':
        editInPlace(rng, buf, 100, PAGE);
        break;
      case 'page-header':
        editInPlace(rng, buf, pageStart, pageStart + 12);
        break;
      case 'anywhere':
        editInPlace(rng, buf, 0, buf.length);
        break;
      case 'copy-page':
        ROOT_BYTES.copy(buf, page * PAGE, rng.int(pages) * PAGE, (rng.int(pages) + 1) * PAGE);
        break;
      case 'zero-page':
        buf.fill(0, page * PAGE, (page + 1) * PAGE);
        break;
      case 'cut':
        return buf.subarray(0, rng.bool() ? rng.int(pages) * PAGE : rng.int(buf.length));
    }
  }
  return buf;
}

t.test('byte mutants of the root catalog file', async (t) => {
  const tally = new Tally();
  const fdsBefore = openFds();
  await fuzzLoopAsync(t, byteCfg, 'catalog/bytes', 10_000, async (rng, i) => {
    const bytes = byteMutant(rng);
    const file = writeCatalog(`bytes-${i}.db`, bytes);
    const x = new Exercise(tally, `byte mutant ${i} (${bytes.length} bytes)`);
    try {
      const db = x.run('open', () => new CatalogDb(file));
      if (!db) return;
      try {
        exerciseDb(x, db, [rng.pick(PROBES), rng.pick(PROBES), rng.pick(PROBES)], rng.bool(0.12), rng);
        if (rng.bool(TREE_SHARE)) await exerciseTree(x, db, [rng.pick(TREE_PATHS), rng.pick(TREE_PATHS)]);
      } finally {
        db.close();
      }
    } finally {
      for (const suffix of ['', '-journal', '-wal', '-shm']) {
        try {
          unlinkSync(file + suffix);
        } catch {
          // not there
        }
      }
    }
  });
  t.comment(`outcomes: ${tally}`);
  t.ok(openFds() <= fdsBefore + 4, `no file descriptors leaked (${fdsBefore} before, ${openFds()} after)`);
});

// ---------------------------------------------------------------------------------------------------
// (b) Row mutants

type Value = null | bigint | number | string | Buffer;

const INTS = [0n, 1n, -1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 1n, 2n ** 53n + 1n, 2n ** 63n - 1n, -(2n ** 63n)];
const REALS = [1.5, -0.5, 0.1, 1e300, -1e300, Infinity, -Infinity];
const TEXTS = ['', 'abc', '123', '2.5', '-1', '0x10', 'NULL', '\u540d\u524d', 'x'.repeat(1000), 'a\0b', '9'.repeat(30)];

function anyValue(rng: Rng): Value {
  switch (rng.int(6)) {
    case 0:
      return null;
    case 1:
      return rng.pick(INTS);
    case 2:
      return BigInt(rng.int(0x1_0000_0000)) - 0x8000_0000n;
    case 3:
      return rng.pick(REALS);
    case 4:
      return rng.pick(TEXTS);
    default:
      return rng.bytes(rng.pick([0, 1, 16, 19, 20, 21, 40]));
  }
}

const S_IF = [0o040000, 0o100000, 0o120000, 0o010000, 0o140000, 0o020000, 0o060000, 0, 0o170000, 0o030000];
const XATTR_SAMPLE = encodeXattrs(new Map([['user.color', Buffer.from('blue')], ['user.binary', Buffer.from([0, 1, 0xff])]]))!;
const HEXES = [NESTED_HASH, INNER_HASH, ROOT_HASH, ContentHash.compute(HashAlgorithm.Rmd160, 'x'), ContentHash.compute(HashAlgorithm.Shake128, 'y')].map(String);

/** A value for `column` of `table`, often of the right kind, sometimes anything (integers kept to 64 bits). */
function valueFor(rng: Rng, table: string, column: string, current: Value): Value {
  const v = anyValueFor(rng, table, column, current);
  return typeof v === 'bigint' ? BigInt.asIntN(64, v) : v;
}

function anyValueFor(rng: Rng, table: string, column: string, current: Value): Value {
  if (rng.bool(0.2)) return anyValue(rng);
  const cur = typeof current === 'bigint' ? current : 0n;
  const big = (n: number) => BigInt(n);
  switch (`${table}.${column}`) {
    case 'catalog.flags':
      return rng.pick([
        cur ^ big(1 << rng.int(18)),
        (cur & ~0x700n) | big(rng.int(8) << 8),
        (cur & ~0x3800n) | big(rng.int(8) << 11),
        big(rng.u32()),
        cur | 0x1_0000_0000n,
      ]);
    case 'catalog.mode':
      return rng.pick([big(rng.pick(S_IF) | rng.int(0o7777)), cur ^ big(1 << rng.int(17)), cur + 0x1_0000_0000n, -1n]);
    case 'catalog.hardlinks':
      return rng.pick([(big(rng.int(5)) << 32n) | big(rng.int(4)), (2n ** 31n) << 32n, -(1n << 32n), 1n << 62n, 0n, null]);
    case 'catalog.hash':
    case 'chunks.hash':
      return rng.pick<Value>([rng.bytes(rng.pick([0, 16, 19, 20, 21, 32])), rng.pick(HEXES), null, Buffer.alloc(20)]);
    case 'catalog.name':
      return rng.pick<Value>(['', '/', 'a/b', '.', '..', 'n'.repeat(300), '\u540d', 'a\0b', null, Buffer.from('f\xff')]);
    case 'catalog.symlink':
      return rng.pick<Value>(['', '$(X)', '$(X:-y)', '$(', '${X}', '/'.repeat(5000), '\0', null, 42n]);
    case 'catalog.xattr':
      return rng.pick<Value>([mutate(rng, XATTR_SAMPLE), rng.bytes(rng.int(40)), XATTR_SAMPLE.toString('latin1'), null]);
    case 'catalog.md5path_1':
    case 'catalog.md5path_2':
    case 'catalog.parent_1':
    case 'catalog.parent_2':
    case 'chunks.md5path_1':
    case 'chunks.md5path_2': {
      const key = pathKey(rng.pick(PROBES));
      return rng.pick([key.md5path1, key.md5path2, 0n, cur + 1n, rng.pick(INTS)]);
    }
    case 'chunks.offset':
    case 'chunks.size':
    case 'catalog.size':
      return rng.pick([cur + big(rng.range(-2, 2)), -cur, cur * 2n, 2n ** 53n + 1n, -1n, 0n]);
    case 'nested_catalogs.path':
    case 'bind_mountpoints.path':
      return rng.pick<Value>(['/nested', '', '/', '/nested/inner', '/nope', '/text.txt', '/nested/', '/Nested', null, 5n]);
    case 'nested_catalogs.sha1':
    case 'bind_mountpoints.sha1':
      return rng.pick<Value>([...HEXES, HEXES[0]!.toUpperCase(), HEXES[0]!.slice(1), `${HEXES[0]}C`, '', null, 5n, Buffer.from(HEXES[0]!)]);
    case 'properties.value':
      return rng.pick<Value>(['2.5', '2.4', '2.6', '', '0', '1', '3', '6', '7', '8', '-1', 'abc', '1e999', '/nested', null, 2.5, 7n]);
    default:
      return rng.pick([cur + 1n, cur - 1n, -cur, ...INTS.slice(0, 4)]);
  }
}

const COLUMNS: Record<string, readonly string[]> = {
  catalog: ['md5path_1', 'md5path_2', 'parent_1', 'parent_2', 'hardlinks', 'hash', 'size', 'mode', 'mtime', 'mtimens', 'flags', 'name', 'symlink', 'uid', 'gid', 'xattr'],
  chunks: ['md5path_1', 'md5path_2', 'offset', 'size', 'hash'],
  nested_catalogs: ['path', 'sha1', 'size'],
  bind_mountpoints: ['path', 'sha1', 'size'],
  properties: ['key', 'value'],
  statistics: ['counter', 'value'],
};
const TABLES = Object.keys(COLUMNS);

/** One connection that edits rows (anything it touches is recorded) and puts them back from the pristine copy. */
class RowEditor {
  readonly touched = new Map<string, Set<bigint>>();
  private readonly stmts = new Map<string, Database.Statement>();

  constructor(readonly db: Database.Database) {}

  private stmt(sql: string): Database.Statement {
    let s = this.stmts.get(sql);
    if (!s) this.stmts.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  private touch(table: string, rowid: bigint): void {
    let set = this.touched.get(table);
    if (!set) this.touched.set(table, (set = new Set()));
    set.add(rowid);
  }

  rowids(table: string): bigint[] {
    return (this.stmt(`SELECT rowid AS r FROM main.${table}`).all() as { r: bigint }[]).map((x) => x.r);
  }

  row(table: string, rowid: bigint): Record<string, Value> | undefined {
    return this.stmt(`SELECT * FROM main.${table} WHERE rowid = ?`).get(rowid) as Record<string, Value> | undefined;
  }

  set(table: string, column: string, rowid: bigint, value: Value): void {
    this.touch(table, rowid);
    this.stmt(`UPDATE OR IGNORE main.${table} SET ${column} = ? WHERE rowid = ?`).run(value, rowid);
  }

  delete(table: string, rowid: bigint): void {
    this.touch(table, rowid);
    this.stmt(`DELETE FROM main.${table} WHERE rowid = ?`).run(rowid);
  }

  insert(table: string, row: Record<string, Value>): void {
    const cols = COLUMNS[table]!;
    const info = this.stmt(`INSERT OR IGNORE INTO main.${table} (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`)
      .run(...cols.map((c) => row[c] ?? null));
    if (info.changes > 0) this.touch(table, BigInt(info.lastInsertRowid));
  }

  /** Puts every touched row back as the pristine copy has it (rowids included). */
  restore(): void {
    this.db.transaction(() => {
      for (const [table, rowids] of this.touched) {
        const cols = COLUMNS[table]!.join(', ');
        for (const r of rowids) this.stmt(`DELETE FROM main.${table} WHERE rowid = ?`).run(r);
        for (const r of rowids) {
          this.stmt(`INSERT INTO main.${table} (rowid, ${cols}) SELECT rowid, ${cols} FROM p.${table} WHERE rowid = ?`).run(r);
        }
      }
    })();
    this.touched.clear();
  }

  /** Rows that differ from the pristine copy (0 after a correct restore). */
  differences(): number {
    let n = 0;
    for (const table of TABLES) {
      const cols = `rowid, ${COLUMNS[table]!.join(', ')}`;
      const q = (a: string, b: string) =>
        (this.db.prepare(`SELECT count(*) AS n FROM (SELECT ${cols} FROM ${a}.${table} EXCEPT SELECT ${cols} FROM ${b}.${table})`).get() as { n: bigint }).n;
      n += Number(q('main', 'p')) + Number(q('p', 'main'));
    }
    return n;
  }
}

/** Row edits aimed at the probes' rows (so the lookups that follow see them), sometimes at any row. */
function editRows(rng: Rng, ed: RowEditor, targets: readonly string[]): void {
  const edits = rng.count(3);
  for (let k = 0; k < edits; k++) {
    const table = rng.weighted([[60, 'catalog'], [12, 'chunks'], [12, 'nested_catalogs'], [6, 'properties'], [6, 'statistics'], [4, 'bind_mountpoints']] as const);
    const ids = table === 'catalog' && rng.bool(0.85) ? [ROWID.get(rng.pick(targets))!] : ed.rowids(table);
    const op = rng.weighted([[80, 'set'], [8, 'delete'], [12, 'insert']] as const);
    if (table === 'bind_mountpoints' || ids.length === 0 || op === 'insert') {
      // a new row: a copy of an existing one with edits, or a bind mountpoint (the fixture has none)
      const base = ids.length > 0 ? ed.row(table, rng.pick(ids)) : undefined;
      const row: Record<string, Value> = { ...(base ?? { path: '/nested', sha1: HEXES[0]!, size: 1n }) };
      if (table === 'catalog') {
        // a child of some probe (a directory, a file, or itself)
        const parent = rng.pick(PROBES);
        const name = rng.pick(['new', 'x', '']);
        const key = pathKey(`${parent}/${name}`);
        const pkey = pathKey(parent);
        Object.assign(row, { md5path_1: key.md5path1, md5path_2: key.md5path2, parent_1: pkey.md5path1, parent_2: pkey.md5path2, name });
      }
      for (const c of COLUMNS[table]!) if (rng.bool(0.3)) row[c] = valueFor(rng, table, c, row[c] ?? null);
      ed.insert(table, row);
      continue;
    }
    const rowid = rng.pick(ids);
    if (op === 'delete') {
      ed.delete(table, rowid);
      continue;
    }
    const column = rng.pick(COLUMNS[table]!);
    const current = ed.row(table, rowid)?.[column] ?? null;
    ed.set(table, column, rowid, valueFor(rng, table, column, current));
  }
}

/** Changes the live connection cannot make under an open reader: schema and what the constructor reads. */
const SCHEMA_EDITS: readonly string[] = [
  'DROP TABLE properties', 'DROP TABLE chunks', 'DROP TABLE nested_catalogs', 'DROP TABLE bind_mountpoints',
  'DROP TABLE statistics', 'DROP TABLE catalog', 'DROP INDEX idx_catalog_parent',
  'ALTER TABLE catalog DROP COLUMN xattr', 'ALTER TABLE catalog DROP COLUMN mtimens', 'ALTER TABLE catalog DROP COLUMN hash',
  'ALTER TABLE catalog DROP COLUMN symlink', 'ALTER TABLE catalog RENAME COLUMN name TO nom',
  'ALTER TABLE chunks RENAME COLUMN hash TO h', 'ALTER TABLE nested_catalogs DROP COLUMN size',
  'ALTER TABLE catalog RENAME TO cat2; CREATE VIEW catalog AS SELECT * FROM cat2 WHERE rowid % 2 = 0',
  'DROP TABLE statistics; CREATE TABLE statistics (counter, value)', "INSERT INTO statistics VALUES ('self_regular', 'many')",
  'DROP TABLE properties; CREATE TABLE properties (key, value)', "INSERT OR REPLACE INTO properties VALUES ('schema', NULL)",
  "DELETE FROM properties WHERE key = 'schema'", "DELETE FROM properties WHERE key = 'schema_revision'",
  'DROP TABLE nested_catalogs; CREATE TABLE nested_catalogs (path, sha1)',
  'UPDATE catalog SET flags = flags | 1792', 'UPDATE catalog SET mode = NULL', 'UPDATE catalog SET hardlinks = 1.5',
  "UPDATE catalog SET name = x'ff00'", 'DELETE FROM catalog',
];
const PROPERTY_KEYS = ['schema', 'schema_revision', 'revision', 'root_prefix', 'TTL'];

function freshMutant(rng: Rng): Buffer {
  const mem = new Database(ROOT_BYTES);
  try {
    mem.defaultSafeIntegers(true);
    mem.pragma('foreign_keys = OFF');
    const n = rng.count(2);
    for (let k = 0; k < n; k++) {
      try {
        if (rng.bool(0.6)) {
          mem.exec(rng.pick(SCHEMA_EDITS));
        } else {
          mem.prepare('INSERT OR REPLACE INTO properties (key, value) VALUES (?, ?)').run(
            rng.pick(PROPERTY_KEYS),
            valueFor(rng, 'properties', 'value', null),
          );
        }
      } catch {
        // an edit that does not apply after an earlier one (the table is gone): skip it
      }
    }
    return mem.serialize();
  } finally {
    mem.close();
  }
}

t.test('row mutants of the root catalog', async (t) => {
  const tally = new Tally();
  const liveFile = writeCatalog('live.db', ROOT_BYTES);
  const pristineFile = writeCatalog('pristine.db', ROOT_BYTES);
  const writer = new Database(liveFile);
  writer.defaultSafeIntegers(true);
  writer.pragma('foreign_keys = OFF'); // better-sqlite3 turns them on; the catalogs' chunks rows refer to catalog rows
  writer.pragma('journal_mode = MEMORY');
  writer.pragma('synchronous = OFF');
  writer.prepare('ATTACH DATABASE ? AS p').run(pristineFile);
  const ed = new RowEditor(writer);
  const reader = new CatalogDb(liveFile);
  // Test-only: with memory-mapped I/O, every write through the other connection makes the reader remap the
  // file (~0.5 ms, more than the rest of a case). The byte mutants keep CatalogDb's own mmap setting.
  (reader as unknown as { db?: Database.Database }).db?.pragma('mmap_size = 0');
  t.teardown(() => {
    reader.close();
    writer.close();
  });
  const fdsBefore = openFds();
  let restoreChecks = 0;

  await fuzzLoopAsync(t, rowCfg, 'catalog/rows', 10_000, async (rng, i) => {
    if (rng.bool(0.08)) {
      // schema and constructor mutants: a file of their own
      const bytes = freshMutant(rng);
      const file = writeCatalog(`fresh-${i}.db`, bytes);
      const x = new Exercise(tally, `schema mutant ${i}`);
      try {
        const db = x.run('open', () => new CatalogDb(file));
        if (!db) return;
        try {
          exerciseDb(x, db, [rng.pick(PROBES), rng.pick(PROBES)], rng.bool(0.25), rng);
          if (rng.bool(0.15)) await exerciseTree(x, db, [rng.pick(TREE_PATHS), rng.pick(TREE_PATHS)]);
        } finally {
          db.close();
        }
      } finally {
        unlinkSync(file);
      }
      return;
    }
    const targets = [rng.pick(PROBES), rng.pick(PROBES)];
    try {
      writer.transaction(() => editRows(rng, ed, targets))(); // one commit for all the edits of a case
      const x = new Exercise(tally, `row mutant ${i} of ${targets.map((p) => p || '/').join(', ')}`);
      exerciseDb(x, reader, targets, rng.bool(0.03), rng);
      if (rng.bool(TREE_SHARE)) await exerciseTree(x, reader, [...targets, rng.pick(TREE_PATHS)]);
    } finally {
      ed.restore();
      if (i % 1000 === 999) {
        restoreChecks++;
        const d = ed.differences();
        if (d !== 0) throw new Error(`harness: ${d} rows differ from the pristine catalog after restoring`);
      }
    }
  });
  t.comment(`outcomes: ${tally}`);
  t.equal(ed.differences(), 0, `the live catalog is pristine again (${restoreChecks} intermediate checks)`);
  t.ok(openFds() <= fdsBefore + 4, `no file descriptors leaked (${fdsBefore} before, ${openFds()} after)`);
});
