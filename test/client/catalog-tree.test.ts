/**
 * The catalog tree without FUSE: lazy nested catalogs, bind mountpoints (§7.2), inodes, hidden
 * entries and the lookup cache, over catalogs built with the catalog writer.
 */
import t from 'tap';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CatalogWriter, type NewEntry } from '../../src/publish/catalog-writer';
import { CatalogDb } from '../../src/catalog/catalog-db';
import { CatalogTree, ROOT_INODE } from '../../src/client/catalog-tree';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { tempDir } from '../helpers/repo';

const dir = (path: string, extra: Partial<NewEntry> = {}): NewEntry => ({
  path, kind: 'directory', mode: 0o40755, uid: 0, gid: 0, mtime: 1, mtimens: 0, size: 4096, linkCount: 2,
  algorithm: HashAlgorithm.Sha1, ...extra,
});
const file = (path: string, content: string, extra: Partial<NewEntry> = {}): NewEntry => ({
  path, kind: 'regular', mode: 0o100644, uid: 0, gid: 0, mtime: 1, mtimens: 0, size: content.length, linkCount: 1,
  algorithm: HashAlgorithm.Sha1, hash: ContentHash.compute(HashAlgorithm.Sha1, content), ...extra,
});
const fakeHash = (name: string) => ContentHash.compute(HashAlgorithm.Sha1, `catalog ${name}`);

t.test('nested catalogs load lazily, bind mountpoints graft root catalogs', async (t) => {
  const work = await tempDir(t);
  const files = new Map<string, string>();
  const build = (name: string, mount: string, entries: NewEntry[], extra?: (db: Database.Database) => void) => {
    const f = join(work, `${name}.db`);
    const w = new CatalogWriter(f, mount);
    for (const e of entries) w.add(e);
    w.finish({ revision: 1, lastModified: 1 });
    if (extra) {
      const db = new Database(f);
      extra(db);
      db.close();
    }
    files.set(fakeHash(name).toString(), f);
  };
  // An older root catalog, grafted below /.cvmfs/snapshots/old by a bind mountpoint.
  build('old-root', '', [dir(''), file('/old.txt', 'from the old revision')]);
  build('nested', '/software', [dir('/software', { nestedRoot: true }), file('/software/tool', 'tool')]);
  build('root', '', [
    dir(''),
    file('/top.txt', 'top'),
    dir('/software', { nestedMountpoint: true }),
    dir('/.cvmfs', { hidden: true }),
    dir('/.cvmfs/snapshots'),
    dir('/.cvmfs/snapshots/old', { bindMountpoint: true }),
    file('/a', 'linked', { hardlinkGroup: 1, linkCount: 2 }),
    file('/b', 'linked', { hardlinkGroup: 1, linkCount: 2 }),
  ], (db) => {
    db.prepare('INSERT INTO nested_catalogs (path, sha1, size) VALUES (?, ?, 0)').run('/software', fakeHash('nested').toString());
    db.prepare('INSERT INTO bind_mountpoints (path, sha1, size) VALUES (?, ?, 0)').run('/.cvmfs/snapshots/old', fakeHash('old-root').toString());
  });
  const loads: string[] = [];
  const tree = await CatalogTree.create(fakeHash('root'), async (hash, mountPath) => {
    loads.push(mountPath);
    return new CatalogDb(files.get(hash.toString())!);
  });
  t.same(loads, [''], 'only the root catalog at first');
  t.equal((await tree.lookup('')).inode, ROOT_INODE);
  t.same((await tree.list('')).map((e) => e.entry.name).sort(), ['a', 'b', 'software', 'top.txt'], '/.cvmfs is hidden in listings');
  t.equal((await tree.lookup('/.cvmfs')).entry.type, 'directory', '... but can be looked up');
  const mountpoint = await tree.lookup('/software');
  t.same(loads, [''], 'stat of a nested mountpoint loads nothing');
  t.equal((await tree.lookup('/software/tool')).entry.size, 4);
  t.same(loads, ['', '/software'], 'a path below loads the nested catalog');
  t.equal((await tree.list('/software'))[0]!.entry.name, 'tool');
  t.equal((await tree.lookup('/software')).inode, mountpoint.inode, 'mountpoint inode unchanged after attaching');

  const grafted = await tree.lookup('/.cvmfs/snapshots/old/old.txt');
  t.equal(grafted.entry.size, 'from the old revision'.length, 'bind-mounted catalog answers with prefix-less keys');
  t.same(loads, ['', '/software', '/.cvmfs/snapshots/old']);
  t.same((await tree.list('/.cvmfs/snapshots/old')).map((e) => e.path), ['/.cvmfs/snapshots/old/old.txt']);
  t.equal(tree.loadedCount, 3);

  t.equal((await tree.lookup('/a')).inode, (await tree.lookup('/b')).inode, 'hardlinks share an inode');
  await t.rejects(tree.lookup('/missing'), { code: 'E_NOT_FOUND' });
  await t.rejects(tree.lookup('/missing'), { code: 'E_NOT_FOUND' }, 'negative entries are cached too');
  await t.rejects(tree.list('/top.txt'), { message: /not a directory/ });

  const next = await CatalogTree.create(fakeHash('root'), async (hash) => new CatalogDb(files.get(hash.toString())!), 0, tree.inodeCeiling);
  t.equal((await next.lookup('')).inode, ROOT_INODE, 'a new revision keeps the root inode');
  t.ok((await next.lookup('/top.txt')).inode >= tree.inodeCeiling, 'other inodes of a new revision do not collide with the old');
});
