import t from 'tap';
import Database from 'better-sqlite3';
import {
  SCHEMA_VERSION,
  SCHEMA_REVISION,
  DEFAULT_TTL_SECONDS,
  CATALOG_DDL,
  COUNTER_NAMES,
  zeroCounters,
  addCounters,
  packHardlinks,
  unpackHardlinks,
} from '../../src/format/catalog-schema';
import { pathKey, ROOT_PARENT_KEY } from '../../src/format/path-key';
import { encodeFlags } from '../../src/format/flags';

t.test('constants (§3.1, §3.7)', async (t) => {
  t.equal(SCHEMA_VERSION, '2.5');
  t.equal(SCHEMA_REVISION, 7);
  t.equal(DEFAULT_TTL_SECONDS, 240);
});

t.test('the DDL creates the revision 7 tables', async (t) => {
  const db = new Database(':memory:');
  t.teardown(() => db.close());
  for (const sql of CATALOG_DDL) db.exec(sql);
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    .pluck()
    .all();
  t.same(tables, ['bind_mountpoints', 'catalog', 'chunks', 'nested_catalogs', 'properties', 'statistics']);
  const columns = (table: string) => db.prepare(`PRAGMA table_info(${table})`).all().map((c) => (c as { name: string }).name);
  t.same(columns('catalog'), [
    'md5path_1', 'md5path_2', 'parent_1', 'parent_2', 'hardlinks', 'hash', 'size', 'mode', 'mtime', 'mtimens',
    'flags', 'name', 'symlink', 'uid', 'gid', 'xattr',
  ]);
  t.same(columns('chunks'), ['md5path_1', 'md5path_2', 'offset', 'size', 'hash']);
  t.same(columns('nested_catalogs'), ['path', 'sha1', 'size']);
  t.same(columns('bind_mountpoints'), ['path', 'sha1', 'size']);
  t.same(columns('statistics'), ['counter', 'value']);
  t.same(columns('properties'), ['key', 'value']);
  t.ok(db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'idx_catalog_parent'").get());

  // The root entry of §3.6 fits, with signed 64-bit path keys kept exactly.
  db.defaultSafeIntegers(true);
  const root = pathKey('');
  db.prepare(
    'INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, hardlinks, hash, size, mode, mtime, mtimens, flags, name, symlink, uid, gid, xattr)' +
      ' VALUES (?, ?, ?, ?, ?, NULL, 4096, ?, 0, 0, ?, \'\', \'\', 0, 0, NULL)',
  ).run(root.md5path1, root.md5path2, ROOT_PARENT_KEY.md5path1, ROOT_PARENT_KEY.md5path2, packHardlinks(0, 2), 0o40755, encodeFlags({ kind: 'directory' }));
  const foo = pathKey('/foo');
  db.prepare(
    'INSERT INTO catalog (md5path_1, md5path_2, parent_1, parent_2, flags, name) VALUES (?, ?, ?, ?, 4, \'foo\')',
  ).run(foo.md5path1, foo.md5path2, root.md5path1, root.md5path2);
  const row = db.prepare('SELECT md5path_1, md5path_2, flags, hardlinks FROM catalog WHERE md5path_1 = ? AND md5path_2 = ?').get(root.md5path1, root.md5path2) as Record<string, bigint>;
  t.same(row, { md5path_1: 338333539836370388n, md5path_2: 9098107892288553193n, flags: 1n, hardlinks: 2n });
  const children = db.prepare('SELECT name, md5path_2 FROM catalog WHERE parent_1 = ? AND parent_2 = ?').all(root.md5path1, root.md5path2);
  t.same(children, [{ name: 'foo', md5path_2: -5819618580357280866n }]);
  // Primary keys hold.
  t.throws(() => db.prepare('INSERT INTO catalog (md5path_1, md5path_2) VALUES (?, ?)').run(foo.md5path1, foo.md5path2));
  db.prepare("INSERT INTO properties (key, value) VALUES ('schema', ?), ('schema_revision', ?)").run(SCHEMA_VERSION, SCHEMA_REVISION);
  t.throws(() => db.prepare("INSERT INTO properties (key, value) VALUES ('schema', '1')").run());
});

t.test('statistics counters (§3.11)', async (t) => {
  t.same([...COUNTER_NAMES], [
    'regular', 'symlink', 'special', 'dir', 'nested', 'chunked', 'chunks', 'file_size', 'chunked_size', 'xattr',
    'external', 'external_file_size',
  ]);
  const a = zeroCounters();
  t.same(Object.keys(a), [...COUNTER_NAMES]);
  t.ok(Object.values(a).every((v) => v === 0));
  const b = zeroCounters();
  b.regular = 3;
  b.file_size = 1000;
  b.dir = 1;
  addCounters(a, b);
  addCounters(a, b);
  t.equal(a.regular, 6);
  t.equal(a.file_size, 2000);
  t.equal(a.dir, 2);
  t.equal(a.symlink, 0);
  t.equal(b.regular, 3, 'the added counters are unchanged');
  t.not(zeroCounters(), zeroCounters(), 'fresh object each time');
});

t.test('hardlinks column (§3.12)', async (t) => {
  t.equal(packHardlinks(0, 1), 1n);
  t.equal(packHardlinks(0, 2), 2n);
  t.equal(packHardlinks(1, 2), (1n << 32n) | 2n);
  t.equal(packHardlinks(5, 3), 21474836483n);
  t.same(unpackHardlinks(21474836483n), { group: 5, linkCount: 3 });
  t.same(unpackHardlinks(1n), { group: 0, linkCount: 1 });
  for (const [group, count] of [[0, 0], [1, 1], [0xffffffff, 0xffffffff], [123456, 7], [0x7fffffff, 65000]]) {
    t.same(unpackHardlinks(packHardlinks(group!, count!)), { group, linkCount: count });
  }
});
