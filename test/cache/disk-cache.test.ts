import t, { type Test } from 'tap';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DiskCache, formatBreadcrumb, parseBreadcrumb } from '../../src/cache/disk-cache';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { throwsCode } from '../helpers/asserts';
import { tempDir } from '../helpers/repo';

const EMPTY_ZLIB_SHA1 = 'e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78'; // facts sheet §9

async function freshCache(t: Tap): Promise<DiskCache> {
  const cache = new DiskCache(join(await tempDir(t), 'cache'));
  await cache.init();
  return cache;
}
type Tap = Test;

t.test('init creates 00..ff, txn and quarantaine; idempotent', async (t) => {
  const cache = await freshCache(t);
  await cache.init();
  const names = (await readdir(cache.dir)).sort();
  t.equal(names.length, 258);
  t.ok(names.includes('00') && names.includes('ff') && names.includes('7a'));
  t.ok(names.includes('txn') && names.includes('quarantaine'));
  const h = ContentHash.parse(EMPTY_ZLIB_SHA1);
  t.equal(cache.pathOf(h), join(cache.dir, 'e8', 'ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78'));
  const r = ContentHash.compute(HashAlgorithm.Rmd160, 'x');
  t.match(cache.pathOf(r), /\/[0-9a-f]{2}\/[0-9a-f]{38}-rmd160$/, 'algorithm id kept, no suffix');
});

t.test('transaction: write, reset, commit renames into place', async (t) => {
  const cache = await freshCache(t);
  const content = Buffer.from('hello cache\n');
  const hash = ContentHash.compute(HashAlgorithm.Sha1, content);
  t.equal(await cache.has(hash), false);

  const txn = await cache.startTransaction();
  t.equal((await readdir(cache.txnDir)).length, 1, 'temporary file in txn/');
  await txn.write(Buffer.from('garbage from a failed attempt'));
  await txn.reset();
  t.equal(txn.size, 0);
  // Several writes without awaiting each: the queue keeps them in order.
  const parts = [content.subarray(0, 3), content.subarray(3, 7), content.subarray(7)];
  await Promise.all(parts.map((p) => txn.write(p)));
  t.equal(txn.size, content.length);
  const path = await txn.commit(hash);
  t.equal(path, cache.pathOf(hash));
  t.same(await readFile(path), content);
  t.equal(await cache.has(hash), true);
  t.same(await readdir(cache.txnDir), [], 'txn/ is empty after the commit');
  await txn.abort(); // harmless after commit
  t.equal(await cache.has(hash), true, 'abort after commit leaves the object');
  await t.rejects(txn.write(Buffer.from('x')), { code: 'E_IO' }, 'no writes after the end');
});

t.test('abort removes the temporary file and nothing lands in the cache', async (t) => {
  const cache = await freshCache(t);
  const txn = await cache.startTransaction();
  await txn.write(Buffer.alloc(100_000, 1));
  await txn.abort();
  await txn.abort(); // idempotent
  t.same(await readdir(cache.txnDir), []);
  for (const d of await readdir(cache.dir)) {
    if (/^[0-9a-f]{2}$/.test(d)) t.same(await readdir(join(cache.dir, d)), [], `${d}/ empty`, { diagnostic: false });
  }
});

t.test('quarantine keeps a file for post-mortem, outside the object tree', async (t) => {
  const cache = await freshCache(t);
  const txn = await cache.startTransaction();
  await txn.write(Buffer.from('odd'));
  const dest = await txn.quarantine('abc/def');
  t.equal(dest, join(cache.quarantineDir, 'abc_def'));
  t.equal((await stat(dest)).size, 3);
  t.same(await readdir(cache.txnDir), []);
});

t.test('breadcrumb round trip, legacy forms, damaged files', async (t) => {
  const cache = await freshCache(t);
  const fqrn = 'test.cvmfs.io';
  t.equal(await cache.readBreadcrumb(fqrn), undefined, 'none yet');
  const rootHash = ContentHash.parse(EMPTY_ZLIB_SHA1);
  await cache.writeBreadcrumb(fqrn, { rootHash, timestamp: 1390301299, revision: 42 });
  const file = join(cache.dir, `cvmfschecksum.${fqrn}`);
  t.equal(await readFile(file, 'utf8'), `${EMPTY_ZLIB_SHA1}T1390301299R42`, 'the cvmfs format (§5.1)');
  const back = await cache.readBreadcrumb(fqrn);
  t.ok(back?.rootHash.equals(rootHash));
  t.same({ ts: back?.timestamp, rev: back?.revision }, { ts: 1390301299, rev: 42 });
  t.same(await readdir(cache.txnDir), [], 'written through a temporary file, renamed');

  const rmd = ContentHash.compute(HashAlgorithm.Rmd160, 'root');
  await cache.writeBreadcrumb(fqrn, { rootHash: rmd, timestamp: 5, revision: 6 });
  t.ok((await cache.readBreadcrumb(fqrn))?.rootHash.equals(rmd), 'algorithm id survives');

  t.same(parseBreadcrumb(`${EMPTY_ZLIB_SHA1}T77\n`)?.revision, 0, 'no R: revision 0, as cvmfs');
  t.equal(parseBreadcrumb('nonsense'), undefined);
  t.equal(parseBreadcrumb(`${EMPTY_ZLIB_SHA1.slice(1)}T1R1`), undefined, 'bad hash');
  await writeFile(file, 'garbage');
  t.equal(await cache.readBreadcrumb(fqrn), undefined, 'a damaged breadcrumb counts as none');
  t.equal(formatBreadcrumb({ rootHash, timestamp: 1.9, revision: 3 }), `${EMPTY_ZLIB_SHA1}T1R3`);
  throwsCode(t, () => cache.breadcrumbPath('../evil'), 'E_USAGE', 'no path in a repository name');
});
