/**
 * The quota ledger (src/cache/quota.ts): LRU order, cleanup to half the limit, pins (counted, per
 * process, persistent), dead processes' pins, restart, rebuild from the directory, damaged databases,
 * two processes on one database, and what the daemon pays per operation.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, mkdirSync } from 'node:fs';
import { readdir, stat, utimes, writeFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { DiskCache } from '../../src/cache/disk-cache';
import { CACHEDB, NO_QUOTA, SqliteQuota, objectFile, type SqliteQuotaOptions } from '../../src/cache/quota';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { tempDir } from '../helpers/repo';

async function cacheDir(t: Test): Promise<string> {
  const dir = join(await tempDir(t), 'cache');
  await new DiskCache(dir).init();
  return dir;
}

function newHash(): ContentHash {
  return ContentHash.compute(HashAlgorithm.Sha1, randomBytes(16));
}

/** Writes an object file of `size` bytes (content irrelevant to the ledger) and returns its hash. */
async function object(dir: string, size: number, hash = newHash()): Promise<ContentHash> {
  const file = objectFile(dir, hash.toString());
  await writeFile(file, Buffer.alloc(size, 1));
  return hash;
}

async function open(t: Test, dir: string, o: SqliteQuotaOptions = {}): Promise<SqliteQuota> {
  const q = await SqliteQuota.open(dir, o);
  t.teardown(() => q.close());
  return q;
}

const order = (q: SqliteQuota) => q.list().map((e) => e.hash);
const exists = (dir: string, h: ContentHash) => existsSync(objectFile(dir, h.toString()));

t.test('LRU order: inserts and touches, kept across a restart', async (t) => {
  const dir = await cacheDir(t);
  const q = await SqliteQuota.open(dir);
  const [a, b, c] = [await object(dir, 10), await object(dir, 20), await object(dir, 30)];
  q.insert(a, 10, '/a', 'regular');
  q.insert(b, 20, '/b', 'regular');
  q.insert(c, 30, 'catalog /', 'catalog');
  t.same(order(q), [a, b, c].map(String));
  q.touch(a);
  q.touch(b);
  q.touch(a); // re-touching moves it to the end again
  t.same(order(q), [c, b, a].map(String), 'list flushes batched touches first');
  t.equal(q.size(), 60);
  const entry = q.list().find((e) => e.hash === c.toString())!;
  t.match(entry, { size: 30, kind: 'catalog', description: 'catalog /', pinned: false, heldBy: [] });
  q.touch(c); // batched, not yet written: close must flush it
  await q.close();

  const logs: string[] = [];
  const q2 = await open(t, dir, { log: (_l, m) => logs.push(m) });
  t.same(order(q2), [b, a, c].map(String), 'order survives the restart');
  t.equal(q2.size(), 60);
  t.same(logs, [], 'a clean restart needs no reconcile');
  const db = new Database(join(dir, CACHEDB), { readonly: true });
  t.equal((db.prepare('SELECT COUNT(*) AS n FROM sessions').get() as { n: number }).n, 1, 'only the live session');
  t.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  db.close();
});

t.test('over the limit: least recently used go until used <= limit/2; the new object stays', async (t) => {
  const dir = await cacheDir(t);
  const q = await open(t, dir, { limitBytes: 1000 });
  const hashes: ContentHash[] = [];
  for (let i = 0; i < 6; i++) {
    hashes.push(await object(dir, 150));
    q.insert(hashes[i]!, 150, `/f${i}`, 'regular');
  }
  t.equal(q.size(), 900, '900 <= 1000: nothing evicted yet');
  q.touch(hashes[0]!); // f0 becomes the most recently used
  hashes.push(await object(dir, 150));
  q.insert(hashes[6]!, 150, '/f6', 'regular'); // 1050 > 1000 → down to <= 500
  await q.idle();
  t.equal(q.size(), 450);
  const gone = [1, 2, 3, 4].map((i) => hashes[i]!);
  t.same(order(q), [hashes[5], hashes[0], hashes[6]].map(String), 'f1..f4 were the least recently used');
  t.ok(gone.every((h) => !exists(dir, h)), 'their files are gone');
  t.ok([0, 5, 6].every((i) => exists(dir, hashes[i]!)), 'the others stay');
  t.equal(q.capacity(), 1000);

  // An object larger than half the limit is still never its own victim.
  const big = await object(dir, 900);
  q.insert(big, 900, '/big', 'regular');
  await q.idle();
  t.same(order(q), [big.toString()], 'everything else evicted, the new object kept');
  t.equal(q.size(), 900);
});

t.test('pins: counted, effective at once in-process, persistent pins; cleanup reports what pins prevent', async (t) => {
  const dir = await cacheDir(t);
  const q = await open(t, dir);
  const h = [await object(dir, 100), await object(dir, 100), await object(dir, 100), await object(dir, 100)];
  h.forEach((x, i) => q.insert(x, 100, `/f${i}`, 'regular'));
  q.pin(h[0]!);
  q.pin(h[0]!);
  q.unpin(h[0]!); // still pinned once
  t.ok(q.setPersistentPin(h[1]!, true));
  t.notOk(q.setPersistentPin(newHash(), true), 'unknown objects cannot be pinned');
  t.equal(await q.cleanup(150), false, 'cannot reach 150 bytes: 200 are pinned');
  await q.idle();
  t.same(order(q), [h[0], h[1]].map(String), 'pinned ones kept, others evicted');
  t.same(
    q.list({ pinnedOnly: true }).map((e) => [e.pinned, e.heldBy]),
    [
      [false, [process.pid]],
      [true, []],
    ],
  );
  t.equal(await q.remove(h[0]!), 'pinned');
  q.unpin(h[0]!);
  t.equal(await q.remove(h[0]!), 'removed');
  t.notOk(exists(dir, h[0]!));
  t.equal(await q.remove(h[0]!), 'not-cached');
  q.setPersistentPin(h[1]!, false);
  t.equal(await q.cleanup(0), true);
  t.same(order(q), []);
  t.equal(q.size(), 0);
  q.unpin(h[2]!); // unpinning what is not pinned is harmless
});

t.test('the null object records nothing', async (t) => {
  NO_QUOTA.insert(newHash(), 1, '', 'regular');
  NO_QUOTA.pin(newHash());
  t.equal(NO_QUOTA.size(), 0);
  t.equal(NO_QUOTA.capacity(), 0);
  t.equal(NO_QUOTA.managed, false);
  t.same(NO_QUOTA.list(), []);
  t.equal(await NO_QUOTA.cleanup(0), true);
});

interface Child {
  pid: number;
  send(line: string): Promise<string>;
  kill(): Promise<void>;
}

/** Another process with its own handle on the ledger (quota-child.ts). */
async function child(t: Test): Promise<Child> {
  // Under tap, its own TypeScript loader (in execArgv) runs the child's .ts as it runs this file.
  const proc = spawn(process.execPath, [...process.execArgv, join(__dirname, 'quota-child.ts')], {
    stdio: ['pipe', 'pipe', 'inherit'],
    cwd: join(__dirname, '..', '..'),
  });
  const exited = new Promise<void>((done) => proc.once('close', () => done()));
  const kill = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    await exited;
  };
  t.teardown(kill);
  const waiting: ((line: string) => void)[] = [];
  const lines = createInterface({ input: proc.stdout! });
  const ready = new Promise<void>((done, fail) => {
    waiting.push(() => done());
    void exited.then(() => fail(new Error('the child process exited before it was ready')));
  });
  lines.on('line', (line) => waiting.shift()?.(line));
  await ready;
  const send = (line: string) =>
    new Promise<string>((resolve, reject) => {
      waiting.push((answer) => (answer.startsWith('ok') ? resolve(answer.slice(3)) : reject(new Error(answer))));
      proc.stdin!.write(line + '\n');
    });
  return { pid: proc.pid!, send, kill };
}

t.test('two processes: pins of a live process protect, a killed process’s pins are dropped, the ledger is reconciled', async (t) => {
  const dir = await cacheDir(t);
  const q = await open(t, dir);
  const held = await object(dir, 100);
  const free = await object(dir, 100);
  q.insert(held, 100, '/held', 'regular');
  q.insert(free, 100, '/free', 'regular');
  const c = await child(t);
  t.equal(Number(await c.send(`open ${dir} 0`)), c.pid);
  await c.send(`pin ${held}`);
  await c.send('flush');
  t.same(q.list({ pinnedOnly: true }).map((e) => e.heldBy), [[c.pid]], 'the child’s pin is visible');
  t.equal(await q.cleanup(0), false);
  await q.idle();
  t.same(order(q), [held.toString()], 'the other process’s pin protected its object');
  t.equal(await q.remove(held), 'pinned');

  // The child inserts an object and dies before it closes (SIGKILL): its pin must not last forever.
  const orphan = newHash();
  await c.send(`insert ${orphan} 50`);
  t.equal(q.size(), 150, 'the child’s insert counts at once');
  await c.kill();
  t.equal(await q.cleanup(0), true, 'the dead process’s pin was dropped');
  await q.idle();
  t.same(order(q), []);

  // The next process to open the ledger sees the unclean exit and reconciles with the directory.
  await q.close();
  const c2 = await child(t);
  await c2.send(`open ${dir} 0`); // (reconciles: the first child's death was noticed)
  const stray = await object(dir, 77); // a file without a row, as a crash between rename and insert leaves
  await c2.send(`pin ${stray}`);
  await c2.send('flush');
  await c2.kill();
  const logs: string[] = [];
  const q2 = await open(t, dir, { log: (_l, m) => logs.push(m) });
  t.match(logs.join('\n'), /ended without closing/);
  t.match(logs.join('\n'), /1 added/);
  t.same(order(q2), [stray.toString()]);
  t.equal(q2.size(), 77);
  t.same(q2.list({ pinnedOnly: true }), [], 'dead pins were dropped at open');
});

t.test('two processes inserting at once: usage exact, acseq unique, one eviction policy', async (t) => {
  const dir = await cacheDir(t);
  const q = await open(t, dir, { limitBytes: 40_000 });
  const c = await child(t);
  await c.send(`open ${dir} 40000`);
  const mine: Promise<unknown>[] = [];
  const theirs: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    theirs.push(c.send(`insert ${newHash()} 100`));
    const h = await object(dir, 100);
    q.insert(h, 100, `/mine${i}`, 'regular');
    mine.push(Promise.resolve());
  }
  await Promise.all([...mine, ...theirs]);
  await c.send('cleanup 40000'); // waits for the child's unlinks
  await q.idle();
  const db = new Database(join(dir, CACHEDB), { readonly: true });
  const rows = db.prepare('SELECT COUNT(*) AS n, SUM(size) AS bytes, COUNT(DISTINCT acseq) AS seqs FROM cache_catalog').get() as {
    n: number;
    bytes: number;
    seqs: number;
  };
  const usage = db.prepare('SELECT bytes, objects FROM usage').get() as { bytes: number; objects: number };
  db.close();
  t.equal(usage.bytes, rows.bytes, 'usage agrees with the rows');
  t.equal(usage.objects, rows.n);
  t.equal(rows.seqs, rows.n, 'access sequence numbers are unique');
  t.ok(rows.bytes <= 40_000, `${rows.bytes} bytes <= limit`);
  let files = 0;
  for (const d of await readdir(dir)) if (/^[0-9a-f]{2}$/.test(d)) files += (await readdir(join(dir, d))).length;
  t.equal(files, rows.n, 'one file per row');
});

t.test('rebuild from the directory: missing ledger, order from atime, damaged objects, corrupt database', async (t) => {
  const dir = await cacheDir(t);
  const h = [await object(dir, 10), await object(dir, 20), await object(dir, 30)];
  const now = Date.now() / 1000;
  await utimes(objectFile(dir, h[0]!.toString()), now - 10, now - 1000); // used 10 s ago
  await utimes(objectFile(dir, h[1]!.toString()), now - 500, now - 500); // 500 s ago
  await utimes(objectFile(dir, h[2]!.toString()), now - 100, now - 2000); // 100 s ago
  await writeFile(join(dir, 'ab', 'not-an-object'), 'x');
  const q = await SqliteQuota.open(dir);
  t.same(order(q), [h[1], h[2], h[0]].map(String), 'coldest first, by max(atime, mtime)');
  t.equal(q.size(), 60);
  await q.close();

  // A file damaged outside our control (size differs from the ledger) and a row without its file.
  await writeFile(objectFile(dir, h[1]!.toString()), 'shorter');
  await rm(objectFile(dir, h[2]!.toString()));
  const q2 = await SqliteQuota.open(dir, { reconcile: true });
  t.same(await q2.reconcile(), { files: 1, missing: 0, damaged: 0, added: 0 }, 'idempotent');
  t.same(order(q2), [h[0]!.toString()]);
  t.notOk(exists(dir, h[1]!), 'the damaged file is removed');
  await q2.close();

  // A database that is not one: moved aside, rebuilt.
  await rm(join(dir, `${CACHEDB}-wal`), { force: true });
  await rm(join(dir, `${CACHEDB}-shm`), { force: true });
  await writeFile(join(dir, CACHEDB), randomBytes(8192));
  const logs: string[] = [];
  const q3 = await open(t, dir, { log: (_l, m) => logs.push(m) });
  t.match(logs.join('\n'), /is damaged/);
  t.same(order(q3), [h[0]!.toString()]);
  t.ok((await readdir(join(dir, 'quarantaine'))).some((n) => n.startsWith('cachedb.')), 'the damaged database kept for post-mortem');
});

t.test('at open: over the limit → cleaned to half; a cvmfs-style ledger without our tables is adopted', async (t) => {
  const dir = await cacheDir(t);
  const db = new Database(join(dir, CACHEDB));
  db.exec('CREATE TABLE cache_catalog (sha1 TEXT, size INTEGER, acseq INTEGER, path TEXT, type INTEGER, pinned INTEGER, CONSTRAINT pk_cache_catalog PRIMARY KEY (sha1))');
  db.exec('CREATE UNIQUE INDEX idx_cache_catalog_acseq ON cache_catalog (acseq)');
  db.exec('CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))');
  const h: ContentHash[] = [];
  for (let i = 0; i < 10; i++) {
    h.push(await object(dir, 100));
    db.prepare('INSERT INTO cache_catalog VALUES (?, 100, ?, ?, 0, 0)').run(h[i]!.toString(), i + 1, `/f${i}`);
  }
  db.close();
  const q = await open(t, dir, { limitBytes: 800 });
  await q.idle();
  t.equal(q.size(), 400);
  t.same(order(q), h.slice(6).map(String));
});

t.test('DiskCache.open: abandoned txn files go, live writers’ stay; commit inserts, lookup touches', async (t) => {
  const dir = await cacheDir(t);
  const c = await child(t); // a live process standing for another mount's writer
  await writeFile(join(dir, 'txn', `fetch.${c.pid}.abcdef`), 'in progress');
  await writeFile(join(dir, 'txn', 'fetch.999999999.abcdef'), 'writer gone');
  await writeFile(join(dir, 'txn', 'breadcrumb.fetch.999999998.0123'), 'writer gone');
  await writeFile(join(dir, 'txn', 'junk'), 'unknown');
  const old = join(dir, 'txn', `fetch.${c.pid}.fedcba`); // pid reused: written before that process started
  await writeFile(old, 'older than its pid');
  await utimes(old, new Date(Date.now() - 3600_000), new Date(Date.now() - 3600_000));
  const cache = await DiskCache.open(dir, { quotaLimitMb: 1 });
  t.teardown(() => cache.close());
  t.same(await readdir(join(dir, 'txn')), [`fetch.${c.pid}.abcdef`]);

  const content = Buffer.from('payload');
  const hash = ContentHash.compute(HashAlgorithm.Sha1, content);
  const txn = await cache.startTransaction();
  await txn.write(content);
  await txn.commit(hash, { description: '/payload', kind: 'regular' });
  const q = cache.quota as SqliteQuota;
  t.match(q.list(), [{ hash: hash.toString(), size: content.length, description: '/payload', kind: 'regular' }]);
  const other = await object(dir, 5);
  q.insert(other, 5, '/other', 'regular');
  t.equal(await cache.lookup(hash), cache.pathOf(hash));
  t.same(order(q), [other, hash].map(String), 'the hit made it the most recently used');
  t.equal(await cache.lookup(newHash()), undefined);

  const none = await DiskCache.open(join(await tempDir(t), 'plain'), { quotaLimitMb: 0 });
  t.equal(none.quota, NO_QUOTA, 'CVMFS_QUOTA_LIMIT <= 0: no ledger');
  t.notOk(existsSync(join(none.dir, CACHEDB)));
});

t.test('a mount without a quota on a directory with a ledger marks it stale: the next opener reconciles', async (t) => {
  const dir = await cacheDir(t);
  await (await SqliteQuota.open(dir)).close();
  const unmanaged = await DiskCache.open(dir, { quotaLimitMb: 0 });
  const added = await object(dir, 42); // what that mount downloads, unknown to the ledger
  await unmanaged.close();
  const logs: string[] = [];
  const q = await open(t, dir, { log: (_l, m) => logs.push(m) });
  t.match(logs.join('\n'), /1 added/);
  t.same(order(q), [added.toString()]);
});

t.test('cost on the daemon thread (measured, loose bounds)', async (t) => {
  const dir = await cacheDir(t);
  const q = await open(t, dir, { limitBytes: 2 ** 40 });
  const hashes: ContentHash[] = [];
  for (let i = 0; i < 2000; i++) hashes.push(newHash());
  for (const h of hashes) mkdirSync(dirname(objectFile(dir, h.toString())), { recursive: true });
  let start = process.hrtime.bigint();
  for (const h of hashes) q.insert(h, 1000, '/some/file/path', 'regular');
  const insertUs = Number(process.hrtime.bigint() - start) / 1000 / hashes.length;
  start = process.hrtime.bigint();
  for (let round = 0; round < 50; round++) for (const h of hashes) q.touch(h);
  q.flush();
  const touchUs = Number(process.hrtime.bigint() - start) / 1000 / (50 * hashes.length);
  start = process.hrtime.bigint();
  for (let round = 0; round < 50; round++) {
    for (const h of hashes) {
      q.pin(h);
      q.unpin(h);
    }
  }
  q.flush();
  const pinUs = Number(process.hrtime.bigint() - start) / 1000 / (50 * hashes.length);
  start = process.hrtime.bigint();
  for (let i = 0; i < 1000; i++) q.size();
  const sizeUs = Number(process.hrtime.bigint() - start) / 1000 / 1000;
  t.comment(`insert ${insertUs.toFixed(1)} µs, touch ${touchUs.toFixed(2)} µs, pin+unpin ${pinUs.toFixed(2)} µs, size() ${sizeUs.toFixed(1)} µs`);
  t.ok(insertUs < 2000, 'insert well under 2 ms');
  t.ok(touchUs < 50, 'touch is a map update (batched)');
  t.ok(pinUs < 50, 'a short pin costs no database write');
  t.ok(sizeUs < 500);
  const s = await stat(join(dir, CACHEDB));
  t.ok(s.size > 0);
});
