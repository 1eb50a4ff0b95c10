/**
 * Whole-repository consistency check (backs `cvmfs-ts inspect`, the publisher's tests and the
 * fixture tests). Repository.open has already checked the manifest, certificate and whitelist.
 * This walks every catalog reachable from the root catalog and checks:
 *
 * - each catalog object exists and hashes to its name (Repository.catalog), has the expected
 *   `root_prefix`, uncompressed size (manifest `B`, `nested_catalogs.size`) and, for the root
 *   catalog, the manifest's revision;
 * - the catalog's rows form a tree below its root entry whose path keys are the MD5 of the paths
 *   (§3.5), nested transitions are marked on both sides (flags 2 and 32, §3.6) and agree;
 * - every object referenced by the catalog — file contents (no suffix), chunks (`P`), nested
 *   catalogs (`C`) — exists, hashes to its name, inflates (when zlib) to the size the catalog
 *   states; chunk lists cover their file exactly (§3.9);
 * - the stored `self_*` counters equal counts recomputed from the rows, and `subtree_*` the sum
 *   of the children's self + subtree counters (§3.11);
 * - the history and meta-info objects named by the manifest exist and hash to their names.
 *
 * It never stops at the first problem: every finding is one sentence in `problems`. External
 * files (§7.1) have no object in `data/` and are counted instead of checked. Bind mountpoints
 * (§7.2, snapshots below `/.cvmfs`) and catalogs of earlier revisions are not followed.
 */
import { stat } from 'node:fs/promises';
import Database from 'better-sqlite3';
import type { CatalogDb, CatalogEntry, CatalogReference } from '../catalog/catalog-db';
import { ContentHash, type ObjectSuffix } from '../format/hash';
import { objectPath } from '../format/object-name';
import { Compression } from '../format/flags';
import { pathKey, type PathKey } from '../format/path-key';
import { COUNTER_NAMES, zeroCounters, type CounterName, type Counters } from '../format/catalog-schema';
import { fetchVerified, type Repository } from './repository';
import { inflateInto } from './tree-listing';
import { CvmfsError, HashMismatchError, describeError } from '../errors';

export interface VerifyReport {
  fqrn: string;
  revision: number;
  rootHash: string;
  /** Catalogs fetched, hash-checked and examined. */
  catalogs: number;
  /** Uncompressed bytes of those catalogs. */
  catalogBytes: number;
  /** Catalog rows examined. */
  entries: number;
  /** Distinct data objects (file contents and chunks) checked. */
  objects: number;
  /** Stored (compressed) bytes of those objects that could be read. */
  bytes: number;
  /** Other objects checked: certificate, history, meta-info. */
  auxiliaryObjects: number;
  /** Regular files marked external: their content is not in the repository, so not checked. */
  externalFiles: number;
  /** Findings, one sentence each, naming the catalog or object. Empty means the repository is sound. */
  problems: string[];
  /** Observations that are not errors. */
  notes: string[];
}

export interface VerifyOptions {
  /** Objects fetched in parallel (default 8). */
  concurrency?: number;
}

interface ObjectCheck {
  hash: ContentHash;
  suffix: ObjectSuffix;
  compression: Compression;
  /** Uncompressed size the catalog states. */
  size: number;
  /** A repository path that references the object, for messages. */
  referencedBy: string;
}

interface CatalogVisit {
  mountPath: string;
  hash: ContentHash;
  /** Expected uncompressed size; 0 = unknown. */
  size: number;
  /** The parent's transition entry (undefined for the root catalog). */
  transition?: CatalogEntry;
  /** Mount path of the catalog that lists this one (undefined for the root catalog). */
  parentMount?: string;
}

interface CatalogCounters {
  label: string;
  storedSelf: Partial<Counters>;
  storedSubtree: Partial<Counters>;
  /** Keys of direct children; undefined entries are children that could not be read. */
  children: (string | undefined)[];
}

const S_IFMT = 0o170000;

export async function verifyRepository(repo: Repository, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const report: VerifyReport = {
    fqrn: repo.fqrn,
    revision: repo.manifest.revision,
    rootHash: repo.rootHash.toString(),
    catalogs: 0,
    catalogBytes: 0,
    entries: 0,
    objects: 0,
    bytes: 0,
    auxiliaryObjects: 0,
    externalFiles: 0,
    problems: [],
    notes: [],
  };
  const problem = (text: string) => report.problems.push(text);
  const objects = new Map<string, ObjectCheck>();
  const counters = new Map<string, CatalogCounters>();

  // ---- catalogs, depth-first from the root ----
  const stack: CatalogVisit[] = [{ mountPath: '', hash: repo.rootHash, size: repo.manifest.rootCatalogSize ?? 0 }];
  const seen = new Set<string>();
  while (stack.length > 0) {
    const visit = stack.pop()!;
    const key = catalogKey(visit.mountPath, visit.hash);
    const label = catalogLabel(visit.mountPath, visit.hash);
    if (seen.has(key)) {
      problem(`${label} is referenced more than once.`);
      continue;
    }
    seen.add(key);
    let db: CatalogDb;
    try {
      db = await repo.catalog(visit.hash);
    } catch (e) {
      const where = visit.parentMount === undefined ? label : `${label}, listed in the catalog of ${visit.parentMount || '/'},`;
      problem(`${where} ${objectFailure(e)}`);
      continue;
    }
    report.catalogs++;
    const children = await checkCatalog(repo, db, visit, label, report, problem, objects, counters);
    for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]!);
  }

  // ---- subtree counters: sum of each child's stored self + subtree ----
  for (const c of counters.values()) {
    if (c.children.some((k) => k === undefined || !counters.has(k))) continue; // a child is unreadable: reported already
    const expected = zeroCounters();
    for (const k of c.children) {
      const child = counters.get(k!)!;
      for (const n of COUNTER_NAMES) expected[n] += (child.storedSelf[n] ?? 0) + (child.storedSubtree[n] ?? 0);
    }
    for (const n of COUNTER_NAMES) {
      const stored = c.storedSubtree[n];
      if (stored !== undefined && stored !== expected[n]) {
        problem(`${c.label}: counter subtree_${n} is ${stored} but its nested catalogs add up to ${expected[n]}.`);
      }
    }
  }

  // ---- data objects ----
  const list = [...objects.entries()];
  const findings: (string | undefined)[] = new Array(list.length);
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      const [path, check] = list[i]!;
      findings[i] = await checkObject(repo, path, check, report);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency ?? 8) }, worker));
  for (const f of findings) if (f) problem(f); // in catalog order, whatever the completion order
  report.objects = list.length;

  // ---- objects named by the manifest ----
  const aux: [ContentHash | undefined, ObjectSuffix, string][] = [
    [repo.manifest.certificate, 'X', 'certificate'],
    [repo.manifest.history, 'H', 'history database'],
    [repo.manifest.metainfo, 'M', 'meta-info'],
  ];
  for (const [hash, suffix, what] of aux) {
    if (!hash) continue;
    report.auxiliaryObjects++;
    try {
      await fetchVerified(repo.source, hash, suffix);
    } catch (e) {
      problem(`The manifest's ${what} object ${objectPath(hash, suffix)} ${objectFailure(e)}`);
    }
  }
  if (repo.manifest.reflog) {
    const reflog = await repo.source.getOptional('.cvmfsreflog').catch(() => undefined);
    if (!reflog) report.notes.push('The manifest names a reflog but .cvmfsreflog cannot be read.');
    else if (!ContentHash.compute(repo.manifest.reflog.algorithm, reflog).equals(repo.manifest.reflog)) {
      report.notes.push('.cvmfsreflog does not hash to the manifest\'s reflog hash (it may have changed since this revision).');
    }
  }
  if (report.externalFiles > 0) {
    report.notes.push(`${report.externalFiles} external file(s) were not checked: their content lives outside the repository.`);
  }
  return report;
}

/** Checks one catalog's own consistency; returns the nested catalogs to visit. */
async function checkCatalog(
  repo: Repository,
  db: CatalogDb,
  visit: CatalogVisit,
  label: string,
  report: VerifyReport,
  problem: (text: string) => void,
  objects: Map<string, ObjectCheck>,
  counters: Map<string, CatalogCounters>,
): Promise<CatalogVisit[]> {
  const { mountPath } = visit;
  const properties = db.properties();

  // Size, root prefix, revision.
  let fileSize = 0;
  try {
    fileSize = (await stat(db.file)).size;
  } catch {
    // the temporary file is ours; a failure here only loses the size check
  }
  report.catalogBytes += fileSize;
  if (visit.size !== 0 && fileSize !== 0 && visit.size !== fileSize) {
    const source = mountPath === '' ? 'the manifest (B)' : 'its parent catalog';
    problem(`${label} is ${fileSize} bytes uncompressed but ${source} says ${visit.size}.`);
  }
  const rootPrefix = properties.get('root_prefix') ?? '';
  if (rootPrefix !== mountPath) {
    problem(`${label} has root_prefix '${rootPrefix}' but is mounted at '${mountPath || '/'}'.`);
  }
  if (mountPath === '') {
    const revision = Number(properties.get('revision') ?? 'NaN');
    if (revision !== repo.manifest.revision) {
      problem(`${label} has revision ${properties.get('revision')} but the manifest says ${repo.manifest.revision}.`);
    }
  }

  // Root entry and transition.
  const root = db.lookup(mountPath);
  if (!root) {
    problem(`${label} has no root entry for '${mountPath || '/'}'.`);
  } else {
    if (root.type !== 'directory') problem(`${label}: its root entry is not a directory.`);
    if (mountPath !== '' && !root.flags.nestedRoot) problem(`${label}: its root entry lacks the nested-root flag (32).`);
    const t = visit.transition;
    if (t && (t.mode !== root.mode || t.mtime !== root.mtime)) {
      problem(
        `${label}: its root entry (mode ${root.mode.toString(8)}, mtime ${root.mtime}) differs from the parent's transition entry (mode ${t.mode.toString(8)}, mtime ${t.mtime}).`,
      );
    }
  }

  // Walk the rows as a tree from the root entry; collect objects.
  const nestedRefs = db.nestedCatalogs();
  const nestedByPath = new Map(nestedRefs.map((r) => [r.path, r]));
  let reachable = root ? 1 : 0;
  const queue: string[] = root ? [mountPath] : [];
  let head = 0;
  const children: CatalogVisit[] = [];
  const transitions = new Map<string, CatalogEntry>();
  if (root) checkEntry(db, mountPath, root, label, report, problem, objects);
  while (head < queue.length) {
    const dir = queue[head++]!;
    for (const e of db.list(dir)) {
      reachable++;
      const path = `${dir}/${e.name}`;
      checkEntry(db, path, e, label, report, problem, objects);
      if (e.type !== 'directory') continue;
      if (nestedByPath.has(path)) transitions.set(path, e);
      else if (e.flags.nestedMountpoint) problem(`${label}: ${path} is marked as a nested mountpoint but nested_catalogs does not list it.`);
      else queue.push(path);
    }
  }
  const totalRows = countRows(db.file, 'SELECT COUNT(*) AS n FROM catalog');
  report.entries += totalRows;
  if (totalRows !== reachable) {
    problem(`${label} has ${totalRows} rows but only ${reachable} are reachable from its root entry.`);
  }

  // Nested catalogs.
  const childKeys: (string | undefined)[] = [];
  for (const ref of nestedRefs) {
    if (!ref.hash) {
      problem(`${label}: nested catalog ${ref.path} has no content hash.`);
      childKeys.push(undefined);
      continue;
    }
    if (!ref.path.startsWith(`${mountPath}/`)) {
      problem(`${label}: nested catalog path ${ref.path} is not below the catalog's mount path.`);
    }
    const t = transitions.get(ref.path);
    if (!t) {
      const entry = db.lookup(ref.path);
      if (!entry) problem(`${label}: nested catalog ${ref.path} has no transition entry in this catalog.`);
      else if (entry.type !== 'directory') problem(`${label}: the transition entry ${ref.path} is not a directory.`);
      else problem(`${label}: the transition entry ${ref.path} is not reachable from the catalog's root.`);
    } else if (!t.flags.nestedMountpoint) {
      problem(`${label}: the transition entry ${ref.path} lacks the nested-mountpoint flag (2).`);
    }
    childKeys.push(catalogKey(ref.path, ref.hash));
    children.push({ mountPath: ref.path, hash: ref.hash, size: ref.size, transition: t, parentMount: mountPath });
  }

  // Counters.
  checkCounters(db, label, nestedRefs, problem, counters, catalogKey(mountPath, visit.hash), childKeys);
  return children;
}

function checkEntry(
  db: CatalogDb,
  path: string,
  e: CatalogEntry,
  label: string,
  report: VerifyReport,
  problem: (text: string) => void,
  objects: Map<string, ObjectCheck>,
): void {
  const display = path || '/';
  const expectedKey = pathKey(path);
  if (!sameKey(expectedKey, e.key)) problem(`${label}: the row for ${display} is not stored under the MD5 of its path.`);
  if (e.type !== 'regular') return;
  if (e.flags.external) {
    report.externalFiles++;
    return;
  }
  const want = (hash: ContentHash, suffix: ObjectSuffix, size: number, ref: string) => {
    const p = objectPath(hash, suffix);
    if (!objects.has(p)) objects.set(p, { hash, suffix, compression: e.flags.compression, size, referencedBy: ref });
  };
  if (e.flags.chunked) {
    let chunks;
    try {
      chunks = db.chunks(path, e);
    } catch (err) {
      problem(`${label}: the chunk list of ${display} cannot be read: ${sentence(err)}`);
      return;
    }
    if (chunks.length === 0) {
      problem(`${label}: ${display} is marked chunked but has no chunks.`);
    } else {
      let offset = 0;
      let contiguous = true;
      for (const c of chunks) {
        if (c.offset !== offset) {
          problem(`${label}: the chunks of ${display} are not contiguous: a chunk starts at ${c.offset}, expected ${offset}.`);
          contiguous = false;
          break;
        }
        offset += c.size;
      }
      if (contiguous && offset !== e.size) problem(`${label}: the chunks of ${display} cover ${offset} bytes but the file has ${e.size}.`);
      for (const c of chunks) want(c.hash, 'P', c.size, `${display} at offset ${c.offset}`);
    }
    if (e.hash) want(e.hash, '', e.size, display); // legacy bulk object
  } else if (e.hash) {
    want(e.hash, '', e.size, display);
  } else if (e.size !== 0) {
    problem(`${label}: ${display} has ${e.size} bytes but neither a content hash nor chunks.`);
  }
}

function checkCounters(
  db: CatalogDb,
  label: string,
  nestedRefs: readonly CatalogReference[],
  problem: (text: string) => void,
  counters: Map<string, CatalogCounters>,
  key: string,
  children: (string | undefined)[],
): void {
  const sqlite = new Database(db.file, { readonly: true, fileMustExist: true });
  try {
    sqlite.defaultSafeIntegers(true);
    const columns = new Set((sqlite.prepare('PRAGMA table_info(catalog)').all() as { name: string }[]).map((c) => c.name));
    const isReg = `(mode & ${S_IFMT}) = ${0o100000}`;
    const row = sqlite
      .prepare(
        `SELECT
          COUNT(CASE WHEN ${isReg} THEN 1 END) AS regular,
          COUNT(CASE WHEN (mode & ${S_IFMT}) = ${0o120000} THEN 1 END) AS symlink,
          COUNT(CASE WHEN (mode & ${S_IFMT}) IN (${0o010000}, ${0o020000}, ${0o060000}, ${0o140000}) THEN 1 END) AS special,
          COUNT(CASE WHEN (mode & ${S_IFMT}) = ${0o040000} THEN 1 END) AS dir,
          TOTAL(CASE WHEN ${isReg} THEN size END) AS file_size,
          COUNT(CASE WHEN ${isReg} AND (flags & 64) != 0 THEN 1 END) AS chunked,
          TOTAL(CASE WHEN ${isReg} AND (flags & 64) != 0 THEN size END) AS chunked_size,
          COUNT(CASE WHEN ${isReg} AND (flags & 128) != 0 THEN 1 END) AS external,
          TOTAL(CASE WHEN ${isReg} AND (flags & 128) != 0 THEN size END) AS external_file_size,
          ${columns.has('xattr') ? 'COUNT(xattr)' : '0'} AS xattr
        FROM catalog`,
      )
      .get() as Record<string, bigint | number>;
    const actual = zeroCounters();
    for (const n of COUNTER_NAMES) if (n in row) actual[n] = Number(row[n]);
    actual.chunks = Number((sqlite.prepare('SELECT COUNT(*) AS n FROM chunks').get() as { n: bigint }).n);
    actual.nested = nestedRefs.length;

    const stored = new Map(
      (sqlite.prepare('SELECT counter, value FROM statistics').all() as { counter: string; value: bigint | number }[]).map((r) => [
        r.counter,
        Number(r.value),
      ]),
    );
    const revision = Number(db.properties().get('schema_revision') ?? '0');
    const storedSelf: Partial<Counters> = {};
    const storedSubtree: Partial<Counters> = {};
    for (const n of COUNTER_NAMES) {
      const self = stored.get(`self_${n}`);
      const subtree = stored.get(`subtree_${n}`);
      if (self !== undefined) storedSelf[n] = self;
      if (subtree !== undefined) storedSubtree[n] = subtree;
      if (self === undefined) {
        if (counterExpected(n, revision)) problem(`${label} has no self_${n} counter.`);
        else if (actual[n] !== 0) problem(`${label} has no self_${n} counter but its rows count ${actual[n]}.`);
      } else if (self !== actual[n]) {
        problem(`${label}: counter self_${n} is ${self} but its rows count ${actual[n]}.`);
      }
      if (subtree === undefined && counterExpected(n, revision)) problem(`${label} has no subtree_${n} counter.`);
    }
    counters.set(key, { label, storedSelf, storedSubtree, children });
  } catch (e) {
    problem(`${label}: its statistics cannot be checked: ${sentence(e)}`);
  } finally {
    sqlite.close();
  }
}

/** Counter rows that a catalog of the given schema revision must have (§3.1, §3.11). */
function counterExpected(n: CounterName, revision: number): boolean {
  if (n === 'xattr') return revision >= 2;
  if (n === 'external' || n === 'external_file_size') return revision >= 3;
  if (n === 'special') return revision >= 5;
  return true;
}

/** Fetches, hash-checks and inflates one object; returns the problem sentence, if any. */
async function checkObject(repo: Repository, path: string, check: ObjectCheck, report: VerifyReport): Promise<string | undefined> {
  const where = `Object ${path} (${check.suffix === 'P' ? 'chunk of' : 'content of'} ${check.referencedBy})`;
  let stored: Buffer;
  try {
    stored = await fetchVerified(repo.source, check.hash, check.suffix);
  } catch (e) {
    return `${where} ${objectFailure(e)}`;
  }
  report.bytes += stored.length;
  let length = stored.length;
  if (check.compression === Compression.Zlib) {
    try {
      length = await inflateInto(stored, () => {}, path);
    } catch {
      return `${where} is not a valid zlib stream.`;
    }
  }
  if (length !== check.size) return `${where} holds ${length} bytes but the catalog says ${check.size}.`;
  return undefined;
}

/** The end of a sentence about an object that failed to load. */
function objectFailure(e: unknown): string {
  if (CvmfsError.is(e, 'E_NOT_FOUND')) return 'is missing.';
  if (e instanceof HashMismatchError) return `is corrupt: its content hashes to ${e.actual}.`;
  return `cannot be read: ${sentence(e)}`;
}

function sentence(e: unknown): string {
  const text = describeError(e);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

function countRows(file: string, sql: string): number {
  const sqlite = new Database(file, { readonly: true, fileMustExist: true });
  try {
    sqlite.defaultSafeIntegers(true);
    return Number((sqlite.prepare(sql).get() as { n: bigint }).n);
  } finally {
    sqlite.close();
  }
}

function sameKey(a: PathKey, b: PathKey): boolean {
  return a.md5path1 === b.md5path1 && a.md5path2 === b.md5path2;
}

function catalogKey(mountPath: string, hash: ContentHash): string {
  return `${mountPath}\0${hash.toString()}`;
}

function catalogLabel(mountPath: string, hash: ContentHash): string {
  return `Catalog ${mountPath || '/'} (${objectPath(hash, 'C')})`;
}
