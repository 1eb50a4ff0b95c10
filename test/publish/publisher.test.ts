import t from 'tap';
import { readFile, writeFile, stat, rm, appendFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { CatalogDb } from '../../src/catalog/catalog-db';
import { verifyRepository } from '../../src/repository/verify';
import { objectPath } from '../../src/format/object-name';
import { HashAlgorithm } from '../../src/format/hash';
import { writeRichTree, setMtimes, SMALL_CHUNKS } from '../helpers/trees';
import { tempDir, testKeys, openRepoDir, openVerified, repositoryListing, sourceListing, PinnedManifestSource } from '../helpers/repo';

const FQRN = 'test.cvmfs.io';

/** The marker a .cvmfsdirtab rule adds is the one entry the source tree does not have. */
function withoutDirtabMarker(listing: string): string {
  return listing.split('\n').filter((l) => !l.includes('by-dirtab/a/.cvmfscatalog')).join('\n');
}

/** The source listing as a client shows it: variant symlinks expanded with the variable unset. */
function expectedFromSource(listing: string): string {
  return listing.replace('"target": "$(TEST_VAR:-text.txt)"', '"target": "text.txt"');
}

t.test('publish round trip: every entry kind reads back as the source', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeRichTree(src);
  const keys = await testKeys(FQRN);
  const result = await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: SMALL_CHUNKS, ttl: 300 });
  t.equal(result.revision, 1);
  t.equal(result.catalogsWritten, 4, 'root, /nested, /nested/inner, /by-dirtab/a; the vetoed /by-dirtab/b stays in the root catalog');

  const repo = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo.close());
  t.equal(repo.manifest.revision, 1);
  t.equal(repo.manifest.ttl, 300);
  t.equal(repo.manifest.fqrn, FQRN);
  t.ok(repo.whitelist!.expires.getTime() - Date.now() > 29 * 86400_000, 'whitelist valid 30 days');

  const report = await verifyRepository(repo);
  t.same(report.problems, [], 'every catalog and object verifies');

  // Listing equality: the dirtab marker is the only entry the source does not have.
  const expected = expectedFromSource(sourceListing(src));
  t.equal(withoutDirtabMarker(await repositoryListing(repo)), expected);

  // Entry by entry details the listing does not show.
  const root = await repo.rootCatalog();
  const rootEntry = root.lookup('')!;
  t.equal(rootEntry.rowid, 1, 'the root entry is row 1 (root inode 256 in the C++ client)');
  t.equal(rootEntry.rawFlags, 1);
  const nestedParent = root.lookup('/nested')!;
  t.equal(nestedParent.rawFlags, 3, 'transition point in the parent');
  const nested = await repo.catalogFor('/nested/a.txt');
  t.equal(nested.mountPath, '/nested');
  t.equal(nested.db.lookup('/nested')!.rawFlags, 33, 'nested root entry');
  t.equal(nested.db.rootPrefix(), '/nested');
  t.equal((await repo.catalogFor('/by-dirtab/a/deeper/x.txt')).mountPath, '/by-dirtab/a');
  t.equal((await repo.catalogFor('/by-dirtab/b/y.txt')).mountPath, '', 'negative dirtab rule vetoes');
  const marker = (await repo.catalogFor('/by-dirtab/a')).db.lookup('/by-dirtab/a/.cvmfscatalog')!;
  t.equal(marker.hash?.toString(), 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78', 'dirtab marker is the zlib("") object');

  const chunked = root.lookup('/random-1.5M.bin')!;
  t.ok(chunked.flags.chunked);
  t.equal(chunked.hash, undefined, 'no bulk object for chunked files');
  const chunks = root.chunks('/random-1.5M.bin', chunked);
  t.ok(chunks.length > 5, `${chunks.length} chunks`);
  t.equal(chunks.reduce((n, c) => n + c.size, 0), 1_572_864);
  for (const c of chunks.slice(0, -1)) t.ok(c.size >= SMALL_CHUNKS.min && c.size <= SMALL_CHUNKS.max);
  t.equal(root.lookup('/compressible.txt')!.flags.chunked, true, '320 kB file over min chunk size');
  t.notOk(root.lookup('/text.txt')!.flags.chunked);
  const empty = root.lookup('/empty.txt')!;
  t.equal(empty.hash?.toString(), 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78');

  const original = root.lookup('/hardlinks/original.txt')!;
  const second = root.lookup('/hardlinks/second-name.txt')!;
  t.equal(original.linkCount, 2);
  t.ok(original.hardlinkGroup > 0);
  t.equal(second.hardlinkGroup, original.hardlinkGroup);
  t.equal(root.lookup('/hardlinks/not-a-link.txt')!.hardlinkGroup, 0);

  const variant = root.lookup('/link-variant')!;
  t.equal(variant.symlink, '$(TEST_VAR:-text.txt)', 'raw variant symlink kept');
  t.equal(variant.rawFlags, 12);
  t.equal(variant.size, Buffer.byteLength('$(TEST_VAR:-text.txt)'));

  const dev = root.lookup('/special/null-like')!;
  t.equal(dev.type, 'char');
  t.equal(dev.size, (1 << 8) | 3, 'rdev of makedev(1, 3)');
  t.equal(dev.rawFlags, 20);
  t.equal(root.lookup('/special/fifo')!.type, 'fifo');
  t.equal(root.lookup('/special/block')!.type, 'block');
  t.equal(root.lookup('/run.sh')!.mode, 0o100755);
  t.equal(root.lookup('/readonly.txt')!.mode, 0o100444);
  t.equal(root.lookup('/xattr.txt')!.xattrs.get('user.binary')!.toString('hex'), '000102feff800a');
  t.equal(root.lookup('/text.txt')!.uid, 0);
  t.equal(root.lookup('/text.txt')!.mtime, 1_600_000_000);
  t.equal(root.lookup('/text.txt')!.mtimens, 0);
  t.equal(root.lookup('/deep')!.linkCount, 3, '2 + one subdirectory');

  const props = root.properties();
  t.equal(props.get('schema'), '2.5');
  t.equal(props.get('schema_revision'), '7');
  t.equal(props.get('revision'), '1');
  t.equal(props.get('TTL'), '300');
  t.ok(await stat(join(repoDir, '.cvmfs_master_replica')));
});

t.test('re-publish: revision S+1, unchanged objects and catalogs reused, old revision readable', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeRichTree(src);
  const keys = await testKeys(FQRN);
  const first = await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: SMALL_CHUNKS });
  const firstManifest = await readFile(join(repoDir, '.cvmfspublished'));
  const firstListing = expectedFromSource(sourceListing(src));
  const repo1 = await openRepoDir(FQRN, keys, repoDir);
  const innerBefore = (await repo1.catalogFor('/nested/inner/b.txt')).hash.toString();
  const nestedBefore = (await repo1.catalogFor('/nested/a.txt')).hash.toString();
  const oneByteObject = join(repoDir, objectPath((await repo1.rootCatalog()).lookup('/one-byte.txt')!.hash!));
  const before = await stat(oneByteObject);
  await repo1.close();

  // Change the tree: modify, add, delete; leave /nested/inner alone.
  await writeFile(join(src, 'text.txt'), 'Changed in revision 2.\n');
  await mkdir(join(src, 'added'));
  await writeFile(join(src, 'added', 'new.txt'), 'new\n');
  await writeFile(join(src, 'nested', 'a.txt'), 'nested a, changed\n');
  await rm(join(src, 'run.sh'));
  await setMtimes(src, 1_650_000_000);
  // Unchanged subtree keeps its old times, as on a real system.
  await setMtimes(join(src, 'nested', 'inner'));

  const second = await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: SMALL_CHUNKS });
  t.equal(second.revision, first.revision + 1);
  t.ok(second.catalogsReused >= 1, `${second.catalogsReused} catalogs reused`);
  t.ok(second.objects.objectsWritten < 10, `${second.objects.objectsWritten} objects written (${second.objects.objectsReused} reused)`);
  const after = await stat(oneByteObject);
  t.equal(after.ino, before.ino, 'an unchanged object is not rewritten');
  t.equal(after.mtimeMs, before.mtimeMs);

  const repo2 = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo2.close());
  t.equal(repo2.manifest.revision, 2);
  t.ok(repo2.manifest.publishTimestamp! >= (repo1.manifest.publishTimestamp ?? 0));
  t.equal((await repo2.catalogFor('/nested/inner/b.txt')).hash.toString(), innerBefore, 'unchanged nested catalog kept');
  t.not((await repo2.catalogFor('/nested/a.txt')).hash.toString(), nestedBefore, 'changed nested catalog rewritten');
  const nestedDb: CatalogDb = (await repo2.catalogFor('/nested/a.txt')).db;
  t.equal(nestedDb.properties().get('revision'), '2');
  t.equal(nestedDb.properties().get('previous_revision'), nestedBefore);
  t.equal((await repo2.rootCatalog()).properties().get('previous_revision'), first.rootHash.toString());
  t.same((await verifyRepository(repo2)).problems, []);
  t.equal(withoutDirtabMarker(await repositoryListing(repo2)), expectedFromSource(sourceListing(src)));

  // Revision 1 is still complete and verifies.
  const old = await openVerified(FQRN, keys, new PinnedManifestSource(repoDir, firstManifest));
  t.teardown(() => old.close());
  t.equal(old.manifest.revision, 1);
  t.same((await verifyRepository(old)).problems, []);
  t.equal(withoutDirtabMarker(await repositoryListing(old)), firstListing);
});

t.test('hash algorithms and chunking switches', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  await writeRichTree(src);
  const keys = await testKeys(FQRN);
  for (const algorithm of [HashAlgorithm.Rmd160, HashAlgorithm.Shake128]) {
    const repoDir = join(dir, `repo-${algorithm}`);
    await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, algorithm, chunking: SMALL_CHUNKS });
    const repo = await openRepoDir(FQRN, keys, repoDir);
    t.teardown(() => repo.close());
    t.equal(repo.rootHash.algorithm, algorithm);
    const text = (await repo.rootCatalog()).lookup('/text.txt')!;
    t.equal(text.hash!.algorithm, algorithm);
    t.same((await verifyRepository(repo)).problems, []);
    t.equal(withoutDirtabMarker(await repositoryListing(repo)), expectedFromSource(sourceListing(src)));
  }
  const plainDir = join(dir, 'repo-nochunk');
  await publish({ fqrn: FQRN, source: src, repoDir: plainDir, keysDir: keys, chunking: false, uncompressed: true });
  const plain = await openRepoDir(FQRN, keys, plainDir);
  t.teardown(() => plain.close());
  const big = (await plain.rootCatalog()).lookup('/random-1.5M.bin')!;
  t.notOk(big.flags.chunked, 'no chunking');
  t.equal(big.flags.compression, 1, 'compression none recorded in flags');
  t.same((await verifyRepository(plain)).problems, []);
  t.equal(withoutDirtabMarker(await repositoryListing(plain)), expectedFromSource(sourceListing(src)));
});

t.test('a file that grows while it is read is refused and the old revision stays', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(src);
  await writeFile(join(src, 'small.txt'), 'v1\n');
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys });
  const manifest = await readFile(join(repoDir, '.cvmfspublished'));
  await writeFile(join(src, 'growing.bin'), Buffer.alloc(4 << 20, 1));
  let appended = false;
  await t.rejects(
    publish({
      fqrn: FQRN,
      source: src,
      repoDir,
      keysDir: keys,
      progress: {
        bytes: () => {
          if (!appended) {
            appended = true;
            void appendFile(join(src, 'growing.bin'), Buffer.alloc(1 << 20, 2));
          }
        },
      },
    }),
    { code: 'E_SOURCE', message: /growing\.bin: changed while being published/ },
  );
  t.ok((await readFile(join(repoDir, '.cvmfspublished'))).equals(manifest), 'manifest untouched');
  const repo = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo.close());
  t.same((await verifyRepository(repo)).problems, []);
});
