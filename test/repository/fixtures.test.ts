/**
 * Every repository in shared/fixtures/ (made by the real cvmfs_server and listed through the real
 * client) must open, verify and list exactly as the reference client showed it. Negative tests
 * run on temporary copies with one byte changed.
 */
import t from 'tap';
import type { Test } from '@tapjs/test';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import Database from 'better-sqlite3';
import { Repository } from '../../src/repository/repository';
import { DirectorySource } from '../../src/repository/object-source';
import {
  listTree,
  formatTreeListing,
  compareTreePaths,
  deviceNumbers,
  pythonIntMtime,
  pythonJsonDumps,
  isHardlinkGroupsRecord,
  type TreeRecord,
} from '../../src/repository/tree-listing';
import { verifyRepository } from '../../src/repository/verify';
import { ContentHash } from '../../src/format/hash';
import { decodeFlags } from '../../src/format/flags';
import { objectPath } from '../../src/format/object-name';
import { CvmfsError } from '../../src/errors';

const SHARED = resolve(__dirname, '../../../shared');
const FIXTURES = join(SHARED, 'fixtures');

interface Fixture {
  name: string;
  dir: string;
  repoDir: string;
  fqrn: string;
  masterKeys: KeyObject[];
  expected: string;
  readme: string;
}

function loadFixture(name: string): Fixture {
  const dir = join(FIXTURES, name);
  const keysDir = join(dir, 'keys');
  const pubs = existsSync(keysDir) ? readdirSync(keysDir).filter((f) => f.endsWith('.pub')) : [];
  if (pubs.length !== 1) throw new Error(`fixture ${name}: expected exactly one keys/*.pub, found ${pubs.length}`);
  const expectedFile = join(dir, 'expected.jsonl');
  if (!existsSync(expectedFile)) throw new Error(`fixture ${name}: no expected.jsonl`);
  if (!existsSync(join(dir, 'repo', '.cvmfspublished'))) throw new Error(`fixture ${name}: no repo/.cvmfspublished`);
  const readmeFile = join(dir, 'README.md');
  return {
    name,
    dir,
    repoDir: join(dir, 'repo'),
    fqrn: pubs[0]!.slice(0, -'.pub'.length),
    masterKeys: [createPublicKey(readFileSync(join(keysDir, pubs[0]!)))],
    expected: readFileSync(expectedFile, 'utf8'),
    readme: existsSync(readmeFile) ? readFileSync(readmeFile, 'utf8') : '',
  };
}

function open(f: Fixture, repoDir = f.repoDir, overrides: { fqrn?: string; masterKeys?: KeyObject[]; now?: Date } = {}) {
  return Repository.open(new DirectorySource(repoDir), {
    fqrn: overrides.fqrn ?? f.fqrn,
    masterKeys: overrides.masterKeys ?? f.masterKeys,
    now: overrides.now,
  });
}

async function listing(repo: Repository, env: Record<string, string | undefined> = {}): Promise<string> {
  return formatTreeListing(listTree(repo, { env }));
}

/** The first differing lines of two listings, for failure messages. */
function lineDiff(actual: string, expected: string, max = 6): string {
  const a = actual.split('\n');
  const e = expected.split('\n');
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, e.length) && out.length < max * 2; i++) {
    if (a[i] !== e[i]) out.push(`line ${i + 1}\n  - expected: ${e[i] ?? '(none)'}\n  + actual:   ${a[i] ?? '(none)'}`);
  }
  return `${a.length} vs ${e.length} lines; first differences:\n${out.slice(0, max).join('\n')}`;
}

/** Distinct data objects the catalogs reference, computed straight from SQL (independently of verify.ts). */
async function referencedObjects(
  repo: Repository,
): Promise<{ objects: Set<string>; catalogs: Set<string>; byCatalog: Map<string, Set<string>> }> {
  const all = new Set<string>();
  const catalogs = new Set<string>([objectPath(repo.rootHash, 'C')]);
  const byCatalog = new Map<string, Set<string>>();
  for await (const c of repo.walkCatalogs()) {
    const objects = new Set<string>();
    byCatalog.set(objectPath(c.hash, 'C'), objects);
    const db = new Database(c.db.file, { readonly: true });
    try {
      const rows = db
        .prepare('SELECT hash, flags FROM catalog WHERE hash IS NOT NULL AND length(hash) > 0 AND (flags & 128) = 0')
        .all() as { hash: Buffer; flags: number }[];
      for (const r of rows) objects.add(objectPath(ContentHash.of(decodeFlags(r.flags).algorithm, r.hash), ''));
      const chunks = db
        .prepare('SELECT c.hash AS hash, k.flags AS flags FROM chunks c JOIN catalog k ON c.md5path_1 = k.md5path_1 AND c.md5path_2 = k.md5path_2')
        .all() as { hash: Buffer; flags: number }[];
      for (const r of chunks) objects.add(objectPath(ContentHash.of(decodeFlags(r.flags).algorithm, r.hash), 'P'));
      for (const r of db.prepare('SELECT sha1 FROM nested_catalogs').all() as { sha1: string }[]) {
        catalogs.add(objectPath(ContentHash.parse(r.sha1), 'C'));
      }
    } finally {
      db.close();
    }
    for (const o of objects) all.add(o);
  }
  return { objects: all, catalogs, byCatalog };
}

async function makeWritable(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) await makeWritable(p);
    else await chmod(p, 0o644);
  }
}

/** A writable copy of the fixture's repo/ in the temp directory, removed after the test. */
async function copyRepo(t: Test, f: Fixture): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `cvmfs-ts-fixture-${f.name}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const repoDir = join(dir, 'repo');
  await cp(f.repoDir, repoDir, { recursive: true });
  await makeWritable(dir);
  return repoDir;
}

/** Flips bits of one byte: at `index` (negative: from the end), by default the middle one. */
async function flipByte(file: string, index?: number, mask = 0xff): Promise<void> {
  const bytes = await readFile(file);
  const i = index === undefined ? Math.floor(bytes.length / 2) : index < 0 ? bytes.length + index : index;
  if (i < 0 || i >= bytes.length) throw new Error(`${file} has no byte ${i}`);
  bytes[i]! ^= mask;
  await writeFile(file, bytes);
}

/** Index of the last character of the line starting with `prefix` (a digit in the cases used). */
function endOfLine(bytes: Buffer, prefix: string): number {
  const start = bytes.indexOf(Buffer.from(`\n${prefix}`));
  if (start < 0) throw new Error(`no line starting with ${prefix}`);
  return bytes.indexOf(0x0a, start + 1) - 1;
}

async function rejection(t: Test, promise: Promise<unknown>, what: string): Promise<CvmfsError | undefined> {
  try {
    const repo = await promise;
    if (repo instanceof Repository) await repo.close();
    t.fail(`${what}: accepted`);
    return undefined;
  } catch (e) {
    t.ok(CvmfsError.is(e), `${what}: a CvmfsError (${(e as Error).message})`);
    return CvmfsError.is(e) ? e : undefined;
  }
}


t.test('helpers match Python and glibc', async (t) => {
  t.same(deviceNumbers(0x12345678abcd), [6315, 591751117], 'os.major/os.minor(0x12345678abcd)');
  t.same(deviceNumbers(17593636369545), [0x1234, 0x56789], 'of os.makedev(0x1234, 0x56789)');
  t.same(deviceNumbers(0x801), [8, 1], '/dev/sda1');
  t.same(deviceNumbers(0x10300n), [259, 0], 'nvme (minor above 255 via high bits: none here)');
  t.equal(pythonIntMtime(1600000000, null), 1600000000);
  t.equal(pythonIntMtime(1600000000, 999999999), 1600000001, 'the double rounds up, as in Python');
  t.equal(pythonIntMtime(-5, 500000000), -4, 'int() truncates toward zero');
  t.equal(
    pythonJsonDumps({ b: 'tab\there "q" back\\ nl\n cr\r bs\b ff\f nul\u0000 del\u007f é 😀 \udcff', a: [1, -2, ['x', 'y']], Z: {}, é: true, m: null }),
    '{"Z": {}, "a": [1, -2, ["x", "y"]], "b": "tab\\there \\"q\\" back\\\\ nl\\n cr\\r bs\\b ff\\f nul\\u0000 del\\u007f \\u00e9 \\ud83d\\ude00 \\udcff", "m": null, "\\u00e9": true}',
    'json.dumps(..., sort_keys=True) of the same value',
  );
  const walkOrder = ['a', 'b', 'z', 'a/x', 'a/y', 'a/x/deep', 'a/y/deeper', 'b/q'];
  t.same([...walkOrder].reverse().sort(compareTreePaths), walkOrder, 'os.walk order: a directory\'s entries, then its subdirectories');
  t.same(['a-b', 'a/c', 'a b', 'a.d'].sort(compareTreePaths), ['a b', 'a-b', 'a.d', 'a/c']);
});

if (!existsSync(FIXTURES)) {
  t.fail(`shared fixtures directory not found at ${FIXTURES}: shared/ must be a sibling of the repository root`);
} else {
  const names = readdirSync(FIXTURES, { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => d.name)
    .sort();
  t.ok(names.length > 0, `fixtures found in ${FIXTURES}: ${names.join(', ')}`);
  for (const name of names) t.test(`fixture ${name}`, async (t) => fixtureTests(t, loadFixture(name)));
}

async function fixtureTests(t: Test, f: Fixture): Promise<void> {
  t.test('opens, verifies manifest, certificate and whitelist', async (t) => {
    const repo = await open(f);
    t.teardown(() => repo.close());
    const m = repo.manifest;
    t.ok(Number.isInteger(m.revision) && m.revision >= 1, `revision ${m.revision}`);
    t.match(repo.rootHash.toString(), /^[0-9a-f]{40}(-rmd160|-shake128)?$/, 'root catalog hash');
    t.equal(m.fqrn, f.fqrn, 'manifest names the repository');
    t.ok((m.rootCatalogSize ?? 0) > 0, 'root catalog size');
    t.ok(m.ttl > 0, `TTL ${m.ttl}`);
    t.ok(repo.whitelist && repo.whitelist.expires.getTime() > Date.now(), 'whitelist not expired');
    const revision = /current revision is (\d+)/.exec(f.readme);
    if (revision) t.equal(m.revision, Number(revision[1]), 'revision stated in the README');
    const root = /root catalog is `([0-9a-f]+)`/.exec(f.readme);
    if (root) t.equal(repo.rootHash.toString(), root[1], 'root catalog stated in the README');
  });

  t.test('verifyRepository: no problems, every referenced object checked', async (t) => {
    const repo = await open(f);
    t.teardown(() => repo.close());
    const started = Date.now();
    const report = await verifyRepository(repo);
    t.comment(`verify: ${report.catalogs} catalogs, ${report.entries} entries, ${report.objects} objects, ${report.bytes} bytes in ${Date.now() - started} ms`);
    t.same(report.problems, [], 'no problems');
    const { objects, catalogs } = await referencedObjects(repo);
    t.equal(report.catalogs, catalogs.size, 'every catalog');
    t.equal(report.objects, objects.size, 'every distinct file and chunk object');
    t.ok(report.objects > 0);
    for (const p of [...objects, ...catalogs]) if (!existsSync(join(f.repoDir, p))) t.fail(`${p} is referenced but absent`);
    // Objects in data/ that the current revision does not reference (older revisions, history, …).
    const all: string[] = [];
    for (const sub of await readdir(join(f.repoDir, 'data'))) {
      if (sub.length !== 2) continue;
      for (const name of await readdir(join(f.repoDir, 'data', sub))) all.push(`data/${sub}/${name}`);
    }
    const unreferenced = all.filter((p) => !objects.has(p) && !catalogs.has(p));
    t.comment(`data/ holds ${all.length} objects; ${unreferenced.length} not referenced by revision ${repo.manifest.revision}`);
  });

  t.test('listTree + formatTreeListing equal expected.jsonl byte for byte', async (t) => {
    const repo = await open(f);
    t.teardown(() => repo.close());
    const started = Date.now();
    const actual = await listing(repo, {});
    t.comment(`listing: ${actual.split('\n').length - 1} lines in ${Date.now() - started} ms`);
    t.ok(actual === f.expected, actual === f.expected ? 'identical' : lineDiff(actual, f.expected));
  });

  t.test('formatTreeListing reproduces the file from shuffled records', async (t) => {
    const records = f.expected
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as TreeRecord);
    let state = 7;
    for (let i = records.length - 1; i > 0; i--) {
      state = (state * 1103515245 + 12345) % 2 ** 31;
      const j = state % (i + 1);
      [records[i], records[j]] = [records[j]!, records[i]!];
    }
    const out = formatTreeListing(records);
    t.ok(out === f.expected, out === f.expected ? 'identical' : lineDiff(out, f.expected));
    t.equal(records.filter(isHardlinkGroupsRecord).length, 1);
  });

  t.test('variant symlinks follow the environment', async (t) => {
    const repo = await open(f);
    t.teardown(() => repo.close());
    const withVar = await listing(repo, { FIXTURE_VAR: 'one-byte.txt' });
    const changed = withVar.split('\n').filter((l, i) => l !== f.expected.split('\n')[i]);
    for (const l of changed) t.match(l, /"target": /, `only symlink targets change: ${l}`);
    const records: TreeRecord[] = [];
    for await (const r of listTree(repo, { env: { FIXTURE_VAR: 'one-byte.txt' } })) records.push(r);
    const variant = records.find((r) => !isHardlinkGroupsRecord(r) && r.path === 'link-variant');
    if (f.expected.includes('"path": "link-variant"')) {
      t.equal(changed.length, 1, 'exactly the variant symlink changes');
      t.equal(variant && !isHardlinkGroupsRecord(variant) ? variant.target : undefined, 'one-byte.txt');
      const empty: TreeRecord[] = [];
      for await (const r of listTree(repo, { env: { FIXTURE_VAR: '' } })) empty.push(r);
      const e = empty.find((r) => !isHardlinkGroupsRecord(r) && r.path === 'link-variant');
      t.equal(e && !isHardlinkGroupsRecord(e) ? e.target : undefined, '', 'set to empty: empty target');
    }
  });

  t.test('corrupted and missing objects are reported by path', async (t) => {
    const repoDir = await copyRepo(t, f);
    const repo0 = await open(f, repoDir);
    const refs = await referencedObjects(repo0);
    const rootCatalog = objectPath(repo0.rootHash, 'C');
    await repo0.close();
    // Victims referenced by the root catalog, so a damaged nested catalog cannot hide them.
    const inRoot = [...refs.byCatalog.get(rootCatalog)!].sort();
    const content = inRoot.filter((p) => !p.endsWith('P'));
    const chunk = inRoot.find((p) => p.endsWith('P'));
    const nested = [...refs.catalogs].filter((p) => p !== rootCatalog).sort()[0];
    const corrupt = [content[Math.floor(content.length / 2)]!, chunk, nested].filter((p): p is string => p !== undefined);
    const missing = content.find((p) => !corrupt.includes(p))!;
    for (const p of corrupt) await flipByte(join(repoDir, p));
    await rm(join(repoDir, missing));

    const repo = await open(f, repoDir);
    t.teardown(() => repo.close());
    const report = await verifyRepository(repo);
    t.comment(report.problems.join('\n'));
    for (const p of corrupt) {
      const hit = report.problems.find((x) => x.includes(p));
      t.match(hit, /is corrupt: its content hashes to [0-9a-f]{40}/, `${p} reported as corrupt`);
    }
    t.match(report.problems.find((x) => x.includes(missing)), /missing/, `${missing} reported as missing`);
    t.equal(report.problems.length, corrupt.length + 1, 'one sentence per damaged object');
  });

  t.test('a corrupted root catalog is reported as such', async (t) => {
    const repoDir = await copyRepo(t, f);
    const repo0 = await open(f, repoDir);
    const rootCatalog = objectPath(repo0.rootHash, 'C');
    await repo0.close();
    await flipByte(join(repoDir, rootCatalog));
    const repo = await open(f, repoDir);
    t.teardown(() => repo.close());
    const report = await verifyRepository(repo);
    t.equal(report.problems.length, 1, report.problems.join('\n'));
    t.match(report.problems[0], new RegExp(`^Catalog / \\(${rootCatalog}\\)`), 'names the root catalog');
    t.equal(report.catalogs, 0);
  });

  t.test('the listing fails on a corrupted object', async (t) => {
    const repoDir = await copyRepo(t, f);
    const repo0 = await open(f, repoDir);
    const { objects } = await referencedObjects(repo0);
    await repo0.close();
    const victim = [...objects].sort()[0]!;
    await flipByte(join(repoDir, victim));
    const repo = await open(f, repoDir);
    t.teardown(() => repo.close());
    await t.rejects(listing(repo), { code: 'E_HASH_MISMATCH', message: new RegExp(victim.replace(/\//g, '\\/')) });
  });

  t.test('manifest and whitelist tampering is rejected on open', async (t) => {
    const repoDir = await copyRepo(t, f);
    const manifest = join(repoDir, '.cvmfspublished');
    const whitelist = join(repoDir, '.cvmfswhitelist');
    const original = { manifest: await readFile(manifest), whitelist: await readFile(whitelist) };
    const restore = async () => {
      await writeFile(manifest, original.manifest);
      await writeFile(whitelist, original.whitelist);
    };

    // Manifest body: the revision digit (S line) changes, the signature no longer covers it.
    await flipByte(manifest, endOfLine(original.manifest, 'S'), 0x01);
    let e = await rejection(t, open(f, repoDir), 'manifest body changed');
    t.match(e?.message, /manifest/, 'names the manifest');
    t.equal(e?.code, 'E_SIGNATURE');
    await restore();

    // Manifest signature: last byte.
    await flipByte(manifest, -1);
    e = await rejection(t, open(f, repoDir), 'manifest signature changed');
    t.match(e?.message, /manifest.*signature/, 'names the manifest signature');
    t.equal(e?.code, 'E_SIGNATURE');
    await restore();

    // Whitelist body: a digit of the creation timestamp.
    await flipByte(whitelist, 3, 0x01);
    e = await rejection(t, open(f, repoDir), 'whitelist body changed');
    t.match(e?.message, /whitelist/, 'names the whitelist');
    t.equal(e?.code, 'E_SIGNATURE');
    await restore();

    // Whitelist signature: last byte.
    await flipByte(whitelist, -1);
    e = await rejection(t, open(f, repoDir), 'whitelist signature changed');
    t.match(e?.message, /whitelist.*signature/, 'names the whitelist signature');
    await restore();

    const repo = await open(f, repoDir);
    await repo.close();
    t.pass('the restored copy opens again');
  });

  t.test('wrong repository name, foreign master key, expired whitelist', async (t) => {
    let e = await rejection(t, open(f, f.repoDir, { fqrn: `other.${f.fqrn}` }), 'wrong fqrn');
    t.match(e?.message, new RegExp(`not 'other\\.${f.fqrn.replace(/\./g, '\\.')}'`), 'says which name was expected');

    const foreign = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey;
    e = await rejection(t, open(f, f.repoDir, { masterKeys: [foreign] }), 'foreign master key');
    t.match(e?.message, /whitelist/, 'the whitelist is rejected');

    const both = await open(f, f.repoDir, { masterKeys: [foreign, ...f.masterKeys] });
    t.ok(both.whitelist, 'accepted when one of several master keys fits');
    const expires = both.whitelist!.expires;
    await both.close();

    e = await rejection(t, open(f, f.repoDir, { now: new Date(expires.getTime() + 86400_000) }), 'after whitelist expiry');
    t.match(e?.message, /whitelist expired/);
  });
}
