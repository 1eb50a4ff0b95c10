/**
 * Union ("ingest") publishing: a source tree added onto the previous revision, and nested
 * catalogs without marker files (PublishOptions.union, .nestedCatalogs). Mount-free: trees are
 * read back through the catalogs (repositoryListing) and checked with verify.ts.
 */
import t from 'tap';
import { readFile, writeFile, mkdir, symlink, chmod } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setAttribute } from '@napi-rs/xattr';
import { publish, type PublishOptions } from '../../src/publish/publisher';
import { verifyRepository } from '../../src/repository/verify';
import type { Repository } from '../../src/repository/repository';
import { layerPath } from '../../src/image/thin-json';
import { writeRichTree, setMtimes, SMALL_CHUNKS } from '../helpers/trees';
import { tempDir, testKeys, openRepoDir, openVerified, repositoryListing, sourceListing, PinnedManifestSource } from '../helpers/repo';

const FQRN = 'test.cvmfs.io';
const LAYER = layerPath('ab'.padEnd(64, '0123456789abcdef'));

/** The marker a .cvmfsdirtab rule adds is the one entry the source tree does not have. */
function withoutDirtabMarker(listing: string): string {
  return listing.split('\n').filter((l) => !l.includes('by-dirtab/a/.cvmfscatalog')).join('\n');
}

/** The source listing as a client shows it: variant symlinks expanded with the variable unset. */
function expectedFromSource(listing: string): string {
  return listing.replace('"target": "$(TEST_VAR:-text.txt)"', '"target": "text.txt"');
}

/** What a union publish must show: `base` overlaid by `overlay`, as `cp -a` makes it (overlay wins). */
function overlaidListing(dir: string, base: string, overlay: string): string {
  const merged = join(dir, 'expected');
  execFileSync('cp', ['-a', base, merged]);
  // --remove-destination: a replaced hardlink member must not write through to its siblings.
  execFileSync('cp', ['-a', '--remove-destination', `${overlay}/.`, `${merged}/`]);
  return expectedFromSource(sourceListing(merged));
}

/** Mount path → catalog hash, for every catalog of the revision. */
async function catalogHashes(repo: Repository): Promise<Map<string, string>> {
  const hashes = new Map<string, string>();
  for await (const c of repo.walkCatalogs()) hashes.set(c.mountPath, c.hash.toString());
  return hashes;
}

/** Tree B: a new layer below a new /.layers, a changed file, files added to existing directories. */
async function writeOverlayTree(root: string): Promise<void> {
  const layer = join(root, LAYER);
  await mkdir(join(layer, 'etc'), { recursive: true });
  await mkdir(join(layer, 'usr', 'bin'), { recursive: true });
  await mkdir(join(layer, 'usr', 'lib'), { recursive: true });
  await writeFile(join(layer, 'etc', 'os-release'), 'ID=test\n');
  await writeFile(join(layer, 'usr', 'bin', 'tool'), '#!/bin/sh\n', { mode: 0o755 });
  await writeFile(join(layer, 'usr', 'lib', 'libx.so'), Buffer.alloc(300_000, 7)); // chunked
  await symlink('usr/lib', join(layer, 'lib'));
  await writeFile(join(root, 'text.txt'), 'Changed by the ingest.\n');
  await mkdir(join(root, 'dir with space', 'ñandú'), { recursive: true });
  await writeFile(join(root, 'dir with space', 'ñandú', 'added.txt'), 'added next to a carried file\n');
  // Replaces one name of a two-name hardlink group: the other one is left on its own.
  await mkdir(join(root, 'hardlinks'));
  await writeFile(join(root, 'hardlinks', 'second-name.txt'), 'no longer linked\n');
  // Into the existing nested catalog /nested, next to the untouched /nested/inner.
  await mkdir(join(root, 'nested', 'plain'), { recursive: true });
  await writeFile(join(root, 'nested', 'plain', 'd.txt'), 'nested plain d\n');
  await setAttribute(join(root, 'nested', 'plain'), 'user.on-a-dir', 'from the overlay');
  await setMtimes(root, 1_650_000_000);
}

t.test('union publish: previous tree overlaid by the source, untouched catalogs kept by reference', async (t) => {
  const dir = await tempDir(t);
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  const repoDir = join(dir, 'repo');
  await writeRichTree(a);
  await writeOverlayTree(b);
  const keys = await testKeys(FQRN);
  const base: PublishOptions = { fqrn: FQRN, repoDir, keysDir: keys, chunking: SMALL_CHUNKS, source: a };

  await publish(base);
  const firstManifest = await readFile(join(repoDir, '.cvmfspublished'));
  const repo1 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo1.close());
  const hashes1 = await catalogHashes(repo1);
  const root1 = await repo1.rootCatalog();

  const ingest: PublishOptions = { ...base, source: b, union: true, nestedCatalogs: ['.layers', `/${LAYER}/`] };
  const second = await publish(ingest);
  t.equal(second.revision, 2);
  t.ok(second.entriesCarried > 30, `${second.entriesCarried} rows carried over`);
  const repo2 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo2.close());
  t.same((await verifyRepository(repo2)).problems, [], 'objects, catalogs and counters verify');

  const listing2 = await repositoryListing(repo2);
  t.equal(withoutDirtabMarker(listing2), overlaidListing(dir, a, b), 'rev 2 lists as A overlaid by B');

  // Catalogs: untouched ones kept by hash, the touched one rebuilt, the requested ones created.
  const hashes2 = await catalogHashes(repo2);
  t.same([...hashes2.keys()].sort(), ['', '/.layers', `/${LAYER}`, '/by-dirtab/a', '/nested', '/nested/inner']);
  t.equal(hashes2.get('/nested/inner'), hashes1.get('/nested/inner'), 'nested catalog below a rebuilt one carried by reference');
  t.equal(hashes2.get('/by-dirtab/a'), hashes1.get('/by-dirtab/a'), 'nested catalog the source does not touch carried by reference');
  t.not(hashes2.get('/nested'), hashes1.get('/nested'), '/nested gained a file');
  t.equal(second.catalogsWritten, 4, 'root, /nested, /.layers and the layer');

  // The requested catalogs: transitions on both sides, listed in the parents, no marker files.
  const root2 = await repo2.rootCatalog();
  const layers = (await repo2.catalogFor('/.layers')).db;
  const layer = await repo2.catalogFor(`/${LAYER}/etc/os-release`);
  t.equal(layer.mountPath, `/${LAYER}`);
  t.equal((await repo2.catalogFor(`/${LAYER.split('/').slice(0, 2).join('/')}`)).mountPath, '/.layers');
  t.equal(root2.lookup('/.layers')!.rawFlags, 3, 'mountpoint row in the root catalog');
  t.equal(layers.lookup('/.layers')!.rawFlags, 33, 'root row of /.layers');
  t.equal(layers.lookup(`/${LAYER}`)!.rawFlags, 3, 'mountpoint row in /.layers');
  t.equal(layer.db.lookup(`/${LAYER}`)!.rawFlags, 33, 'root row of the layer catalog');
  t.equal(layer.db.rootPrefix(), `/${LAYER}`);
  t.same(layers.nestedCatalogs().map((r) => r.path), [`/${LAYER}`]);
  t.ok(root2.nestedCatalogs().some((r) => r.path === '/.layers'));
  t.equal(layers.lookup('/.layers/.cvmfscatalog'), undefined, 'no marker in /.layers');
  t.equal(layer.db.lookup(`/${LAYER}/.cvmfscatalog`), undefined, 'no marker in the layer');
  t.notOk(listing2.includes('layerfs/.cvmfscatalog'));
  t.same(layer.db.list(`/${LAYER}`).map((e) => e.name).sort(), ['etc', 'lib', 'usr'], 'the layer root shows exactly the layer');

  // Carried rows are the previous rows.
  for (const path of ['/random-1.5M.bin', '/xattr.txt', '/special/null-like', '/special/fifo', '/link-variant', '/readonly.txt']) {
    const before = root1.lookup(path)!;
    const after = root2.lookup(path)!;
    t.same(
      { ...after, rowid: 0 },
      { ...before, rowid: 0 },
      `${path} carried unchanged (flags ${after.rawFlags})`,
    );
  }
  const chunked = root2.lookup('/random-1.5M.bin')!;
  t.same(root2.chunks('/random-1.5M.bin', chunked), root1.chunks('/random-1.5M.bin', root1.lookup('/random-1.5M.bin')!), 'chunk list carried');
  const alone = root2.lookup('/hardlinks/original.txt')!;
  t.equal(alone.hardlinkGroup, 0, 'a hardlink group with one name left is dissolved');
  t.equal(alone.linkCount, 1);
  t.equal(alone.hash?.toString(), root1.lookup('/hardlinks/original.txt')!.hash?.toString());
  t.equal(root2.lookup('/text.txt')!.mtime, 1_650_000_000, 'the source wins');
  t.equal(root2.lookup('/hardlinks')!.mtime, 1_650_000_000, 'a directory in both takes the source attributes');
  t.equal(root2.lookup('/deep')!.mtime, root1.lookup('/deep')!.mtime, 'a directory only in the previous revision keeps its attributes');

  // Counters: totals over the whole tree match what the listing shows.
  const records = listing2.trim().split('\n').map((l) => JSON.parse(l) as { mode?: string });
  const files = records.filter((r) => r.mode?.startsWith('0o100')).length;
  const { self, subtree } = root2.counters();
  t.equal(self.regular + subtree.regular, files, `${files} regular files counted`);
  t.equal(self.nested, 3, 'root: /.layers, /nested, /by-dirtab/a');
  t.equal(subtree.nested, 2, '/nested/inner and the layer');

  // Revision 1 is untouched and still verifies.
  const old = await openVerified(FQRN, keys, new PinnedManifestSource(repoDir, firstManifest));
  t.teardown(() => old.close());
  t.same((await verifyRepository(old)).problems, []);
  t.equal(withoutDirtabMarker(await repositoryListing(old)), expectedFromSource(sourceListing(a)));

  // The same ingest again changes nothing but the root catalog's revision.
  const third = await publish(ingest);
  t.equal(third.revision, 3);
  t.equal(third.catalogsWritten, 1, 'only the root catalog is written');
  t.equal(third.objects.objectsWritten, 1, 'and no other object');
  const repo3 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo3.close());
  const hashes3 = await catalogHashes(repo3);
  for (const [mount, hash] of hashes2) if (mount !== '') t.equal(hashes3.get(mount), hash, `${mount} kept`);
  const root3 = await repo3.rootCatalog();
  t.equal(root3.contentDigest(), root2.contentDigest(), 'root catalog content unchanged');
  t.equal(root3.revision(), 3);
  t.same((await verifyRepository(repo3)).problems, []);
  t.equal(await repositoryListing(repo3), listing2);
});

t.test('nestedCatalogs in a plain publish, then catalogs regrouped by a union publish', async (t) => {
  const dir = await tempDir(t);
  const repoDir = join(dir, 'repo');
  const keys = await testKeys(FQRN);
  const one = join(dir, 'one');
  for (const [path, text] of [['.layers/aa/L1/layerfs/a.txt', 'a'], ['.layers/aa/L1/layerfs/sub/b.txt', 'b'], ['.layers/bb/L2/layerfs/c.txt', 'c'], ['top.txt', 't']]) {
    await mkdir(join(one, path, '..'), { recursive: true });
    await writeFile(join(one, path), `${text}\n`);
  }
  await chmod(join(one, '.layers/bb/L2/layerfs'), 0o700);
  await setMtimes(one);
  const first = await publish({
    fqrn: FQRN, source: one, repoDir, keysDir: keys,
    nestedCatalogs: ['/.layers', '/.layers/aa/L1/layerfs', '.layers/bb/L2/layerfs'],
  });
  t.equal(first.catalogsWritten, 4);
  const repo1 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo1.close());
  t.same((await verifyRepository(repo1)).problems, []);
  t.equal(await repositoryListing(repo1), sourceListing(one), 'no marker files appear');
  const hashes1 = await catalogHashes(repo1);
  t.equal((await repo1.catalogFor('/.layers/bb/L2/layerfs')).db.lookup('/.layers/bb/L2/layerfs')!.mode, 0o40700);

  // /.layers/aa becomes a catalog of its own: L1 moves from /.layers into it, by reference.
  const two = join(dir, 'two');
  await mkdir(join(two, '.layers/aa/L3/layerfs'), { recursive: true });
  await writeFile(join(two, '.layers/aa/L3/layerfs/d.txt'), 'd\n');
  await setMtimes(two);
  const second = await publish({
    fqrn: FQRN, source: two, repoDir, keysDir: keys, union: true,
    nestedCatalogs: ['.layers/aa', '.layers/aa/L3/layerfs'],
  });
  t.equal(second.catalogsWritten, 4, 'root, /.layers, /.layers/aa, L3');
  const repo2 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo2.close());
  t.same((await verifyRepository(repo2)).problems, [], 'counters add up although L1 changed parents');
  t.equal(await repositoryListing(repo2), overlaidListing(dir, one, two));
  const hashes2 = await catalogHashes(repo2);
  t.equal(hashes2.get('/.layers/aa/L1/layerfs'), hashes1.get('/.layers/aa/L1/layerfs'));
  t.equal(hashes2.get('/.layers/bb/L2/layerfs'), hashes1.get('/.layers/bb/L2/layerfs'));
  t.same((await repo2.catalogFor('/.layers/aa')).db.nestedCatalogs().map((r) => r.path).sort(), ['/.layers/aa/L1/layerfs', '/.layers/aa/L3/layerfs']);
  t.same((await repo2.catalogFor('/.layers')).db.nestedCatalogs().map((r) => r.path), ['/.layers/aa', '/.layers/bb/L2/layerfs'].sort());
});

t.test('nestedCatalogs must name directories of the source', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(join(src, 'd'), { recursive: true });
  await writeFile(join(src, 'f'), 'f\n');
  const keys = await testKeys(FQRN);
  const o: PublishOptions = { fqrn: FQRN, source: src, repoDir, keysDir: keys };
  await publish(o);
  const manifest = await readFile(join(repoDir, '.cvmfspublished'));
  await t.rejects(publish({ ...o, nestedCatalogs: ['/missing'] }), { code: 'E_SOURCE', message: /missing: does not exist, but nestedCatalogs names \/missing/ });
  await t.rejects(publish({ ...o, nestedCatalogs: ['f'] }), { code: 'E_SOURCE', message: /f: is not a directory/ });
  await t.rejects(publish({ ...o, nestedCatalogs: ['/'] }), { code: 'E_USAGE', message: /repository root/ });
  await t.rejects(publish({ ...o, nestedCatalogs: ['d/../d'] }), { code: 'E_USAGE' });
  t.ok((await readFile(join(repoDir, '.cvmfspublished'))).equals(manifest), 'nothing published');
});
