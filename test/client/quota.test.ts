/**
 * Disk cache management end to end (§5.9, §5.10): a mount with CVMFS_QUOTA_LIMIT=15 (MB) serving a
 * 48 MiB repository (3.5× the limit) to 8 parallel readers keeps its cache directory under the limit by LRU cleanup
 * down to half, never evicts what an open file reads, reports its use through statfs, and keeps its
 * LRU state across a restart; two repositories mounted on one shared cache directory
 * (CVMFS_SHARED_CACHE) read concurrently under one quota; a daemon SIGKILLed at random moments leaves
 * no object with wrong bytes, and the next start recovers the quota ledger.
 */
import t, { type Test } from 'tap';
import { mkdir, open, readdir, readFile, stat, statfs, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { inflateSync } from 'node:zlib';
import { constants } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository, type ServedRepository } from '../helpers/serve';

const MiB = 1024 * 1024;
const LIMIT_MB = 15;

interface Published {
  repoDir: string;
  names: string[];
  digests: Map<string, string>;
  server: ServedRepository;
  publicKey: string;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** `count` incompressible files of 1 MiB (plus `extra`), published without chunking and served. */
async function publishFiles(t: Test, dir: string, fqrn: string, count: number, seed: number, extra: Record<string, Buffer> = {}): Promise<Published> {
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(src, { recursive: true });
  const names: string[] = [];
  const digests = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    const name = `f${String(i).padStart(2, '0')}.bin`;
    const data = pseudoRandomBytes(MiB, seed * 1000 + i + 1);
    await writeFile(join(src, name), data);
    names.push(name);
    digests.set(name, sha256(data));
  }
  for (const [name, data] of Object.entries(extra)) {
    await writeFile(join(src, name), data);
    digests.set(name, sha256(data));
  }
  const keys = await testKeys(fqrn);
  await publish({ fqrn, source: src, repoDir, keysDir: keys, chunking: false });
  const server = await serveRepository(t, repoDir);
  return { repoDir, names, digests, server, publicKey: keyFiles(fqrn, keys).masterPublicKey };
}

/** Bytes of the cached objects (00..ff), as du would count them, and how many there are. */
async function objectBytes(cacheDir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  for (let i = 0; i < 256; i++) {
    const sub = join(cacheDir, i.toString(16).padStart(2, '0'));
    for (const name of await readdir(sub)) {
      const s = await stat(join(sub, name)).catch(() => undefined);
      if (s?.isFile()) {
        bytes += s.size;
        files++;
      }
    }
  }
  return { bytes, files };
}

function shuffled<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let x = seed;
  for (let i = out.length - 1; i > 0; i--) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const j = x % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * A whole file read with O_DIRECT: the kernel page cache (which keeps the content of files we already
 * read, FOPEN_KEEP_CACHE) is bypassed, so every read reaches the daemon and its cache.
 */
async function readDirect(path: string): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_DIRECT);
  try {
    const size = (await fh.stat()).size;
    const out = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await fh.read(out, done, Math.min(size - done, 256 * 1024), done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return out.subarray(0, done);
  } finally {
    await fh.close();
  }
}

/** `readers` parallel readers, each reading every file once in its own random order; returns the errors. */
async function readRound(m: TestMount, p: Published, readers: number, seed: number): Promise<string[]> {
  const errors: string[] = [];
  await Promise.all(
    Array.from({ length: readers }, async (_, r) => {
      for (const name of shuffled(p.names, seed * 100 + r + 1)) {
        try {
          const data = await readDirect(join(m.mountpoint, name));
          if (sha256(data) !== p.digests.get(name)) errors.push(`${name}: wrong bytes`);
        } catch (e) {
          errors.push(`${name}: ${(e as Error).message}`);
        }
      }
    }),
  );
  return errors;
}

/** Samples the object bytes while `work` runs; returns the largest sample. */
async function sampleWhile(cacheDir: string, work: Promise<unknown>): Promise<number> {
  let done = false;
  void work.finally(() => (done = true));
  let max = 0;
  while (!done) {
    max = Math.max(max, (await objectBytes(cacheDir)).bytes);
    await new Promise((r) => setTimeout(r, 20));
  }
  return max;
}

/** Object bytes once pending unlinks have settled (polls up to 3 s for <= bound). */
async function settledBytes(cacheDir: string, bound: number): Promise<number> {
  let bytes = 0;
  for (let i = 0; i < 30; i++) {
    bytes = (await objectBytes(cacheDir)).bytes;
    if (bytes <= bound) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return bytes;
}

function ledger(cacheDir: string): { rows: { sha1: string; acseq: number; size: number; type: number }[]; bytes: number; sessions: number[]; pins: { sha1: string; pid: number }[] } {
  const db = new Database(join(cacheDir, 'cachedb'), { readonly: true });
  try {
    return {
      rows: db.prepare('SELECT sha1, acseq, size, type FROM cache_catalog ORDER BY acseq').all() as { sha1: string; acseq: number; size: number; type: number }[],
      bytes: (db.prepare('SELECT bytes FROM usage').get() as { bytes: number }).bytes,
      sessions: db.prepare('SELECT pid FROM sessions').pluck().all() as number[],
      pins: db.prepare('SELECT p.sha1, s.pid FROM pins p JOIN sessions s ON s.id = p.session').all() as { sha1: string; pid: number }[],
    };
  } finally {
    db.close();
  }
}

t.test('CVMFS_QUOTA_LIMIT=15: 8 readers over 48 MiB, LRU cleanup, an open file survives, state survives a restart', async (t) => {
  const dir = await tempDir(t);
  const fqrn = 'quota.cvmfs.io';
  const held = pseudoRandomBytes(4 * MiB, 4242);
  const p = await publishFiles(t, dir, fqrn, 48, 1, { 'held.bin': held });
  const spec = { fqrn, serverUrl: p.server.url, publicKey: p.publicKey, config: [`CVMFS_QUOTA_LIMIT=${LIMIT_MB}`] };
  const m = await mountRepository(t, dir, spec);
  const cacheDir = join(m.cacheBase, 'shared');
  const limit = LIMIT_MB * MiB;

  // One file stays open across all the cleanups: first half now, second half at the end.
  const heldHash = await m.xattr('held.bin', 'user.hash');
  const fh = await open(join(m.mountpoint, 'held.bin'), 'r');
  t.teardown(() => fh.close().catch(() => undefined));
  const first = Buffer.alloc(held.length / 2);
  await fh.read(first, 0, first.length, 0);
  t.ok(first.equals(held.subarray(0, first.length)), 'first half of the held file');

  const measurements: string[] = [];
  for (let round = 1; round <= 3; round++) {
    const requestsBefore = p.server.requests().length;
    const work = readRound(m, p, 8, round);
    const peak = await sampleWhile(cacheDir, work);
    const errors = await work;
    t.same(errors, [], `round ${round}: every read returned the right bytes`);
    const settled = await settledBytes(cacheDir, limit);
    measurements.push(`round ${round}: peak ${(peak / MiB).toFixed(1)} MiB, settled ${(settled / MiB).toFixed(1)} MiB, ${p.server.requests().length - requestsBefore} requests`);
    t.ok(settled <= limit, `round ${round}: object bytes ${settled} <= ${limit} once quiet`);
    // While reads are under way: committed-but-not-yet-told objects of the 8 readers may be on top.
    t.ok(peak <= limit + 8 * MiB, `round ${round}: peak ${peak} within the limit plus the objects in flight`);
  }
  t.comment(measurements.join('\n'));
  const downloads = p.server.requests().filter((l) => l.includes('/data/')).length;
  t.ok(downloads > 48 + 20, `objects were evicted and downloaded again (${downloads} object requests)`);

  // The held file's object was pinned the whole time: still cached, and the rest reads right.
  const heldFile = join(cacheDir, heldHash.slice(0, 2), heldHash.slice(2));
  t.ok((await stat(heldFile)).size === held.length, 'the open file’s object was never evicted');
  const second = Buffer.alloc(held.length - first.length);
  await fh.read(second, 0, second.length, first.length);
  t.ok(second.equals(held.subarray(first.length)), 'second half of the held file, after the cleanups');
  await new Promise((r) => setTimeout(r, 1500)); // one flush interval: the daemon's pins reach the ledger
  const before = ledger(cacheDir);
  t.ok(before.pins.some((x) => x.sha1 === heldHash && x.pid === m.pid), 'the ledger shows the held object pinned by the daemon');
  t.equal(before.pins.length, 2, 'nothing else is pinned (no pin leaked by the 960 reads): the held file and the root catalog');
  t.ok(before.rows.some((r) => r.type === 1) && before.pins.some((x) => before.rows.find((r) => r.sha1 === x.sha1)?.type === 1), 'the mounted root catalog is pinned');
  t.ok(before.bytes <= limit, `ledger: ${before.bytes} bytes used`);
  t.equal(before.bytes, (await objectBytes(cacheDir)).bytes, 'the ledger agrees with the directory');

  // statfs reports the cache: capacity = limit, used = the ledger's size.
  const fs = await statfs(m.mountpoint);
  t.equal(fs.blocks * fs.bsize, limit, 'statfs capacity is the quota limit');
  const used = (fs.blocks - fs.bfree) * fs.bsize;
  t.ok(Math.abs(used - before.bytes) < 4 * MiB, `statfs used ${used} ≈ ledger ${before.bytes}`);
  await fh.close();

  // Restart on the same cache: the LRU state is still there, without a rebuild.
  await m.unmount();
  const afterUmount = ledger(cacheDir);
  t.same(afterUmount.sessions, [], 'a clean unmount ends its session');
  t.same(afterUmount.pins, [], '... and releases its pins');
  const dataOrder = (l: ReturnType<typeof ledger>) => l.rows.filter((r) => r.type === 0).map((r) => r.sha1);
  t.same(dataOrder(afterUmount), dataOrder(before), 'unmount keeps every row in order');
  const m2 = await mountRepository(t, dir, { ...spec, cacheBase: m.cacheBase });
  const after = ledger(cacheDir);
  const known = new Set(dataOrder(before));
  t.same(dataOrder(after).filter((h) => known.has(h)), dataOrder(before), 'LRU order of the data objects survives the restart');
  t.notMatch(await m2.log(), /reconcil/, 'no rebuild after a clean shutdown');
  // The most recently used file is a cache hit after the restart.
  const fileOf = new Map<string, string>();
  for (const n of [...p.names, 'held.bin']) fileOf.set(await m2.xattr(n, 'user.hash'), n);
  const found = fileOf.get(dataOrder(after).filter((h) => fileOf.has(h)).at(-1)!)!;
  const dataRequests = () => p.server.requests().filter((l) => l.includes('/data/')).length;
  const before2 = dataRequests();
  t.equal(sha256(await readDirect(join(m2.mountpoint, found))), p.digests.get(found));
  await new Promise((r) => setTimeout(r, 300)); // the access log arrives through a pipe
  t.equal(dataRequests(), before2, 'read from the cache after the restart, no download');
});

t.test('two repositories on one shared cache directory (CVMFS_SHARED_CACHE) read concurrently under one quota', async (t) => {
  const top = await tempDir(t);
  const cacheBase = join(top, 'cache-base');
  const limitMb = 12;
  const setups = await Promise.all(
    ['one', 'two'].map(async (name, i) => {
      const dir = join(top, name);
      await mkdir(dir);
      const fqrn = `${name}.shared.cvmfs.io`;
      const p = await publishFiles(t, dir, fqrn, 16, 10 + i);
      return { dir, fqrn, p };
    }),
  );
  const mounts = [];
  for (const s of setups) {
    mounts.push(
      await mountRepository(t, s.dir, {
        fqrn: s.fqrn,
        serverUrl: s.p.server.url,
        publicKey: s.p.publicKey,
        cacheBase,
        config: ['CVMFS_SHARED_CACHE=yes', `CVMFS_QUOTA_LIMIT=${limitMb}`],
      }),
    );
  }
  const cacheDir = join(cacheBase, 'shared');
  t.ok((await readdir(cacheDir)).includes(`cvmfschecksum.${setups[0]!.fqrn}`) && (await readdir(cacheDir)).includes(`cvmfschecksum.${setups[1]!.fqrn}`), 'both breadcrumbs in the one directory');
  for (let round = 1; round <= 2; round++) {
    const results = await Promise.all(mounts.map((m, i) => readRound(m, setups[i]!.p, 4, round * 10 + i)));
    t.same(results.flat(), [], `round ${round}: both mounts read every file right`);
    const settled = await settledBytes(cacheDir, limitMb * MiB);
    t.ok(settled <= limitMb * MiB, `round ${round}: shared cache ${settled} <= ${limitMb} MiB`);
  }
  await new Promise((r) => setTimeout(r, 1500));
  const l = ledger(cacheDir);
  t.same([...l.sessions].sort(), mounts.map((m) => m.pid).sort(), 'both daemons have a live session in the one ledger');
  t.equal(l.bytes, (await objectBytes(cacheDir)).bytes, 'the shared ledger agrees with the directory');
  t.equal(l.rows.filter((r) => r.type === 1 && l.pins.some((x) => x.sha1 === r.sha1)).length, 2, 'each mount pins its root catalog');
});

/**
 * Every cached object against the repository: the stored object `data/XX/rest[suffix]` inflated must
 * equal the cached bytes. Returns the names of objects that do not match (or have no source).
 */
async function badObjects(cacheDir: string, repoDir: string): Promise<{ checked: number; bad: string[] }> {
  const bad: string[] = [];
  let checked = 0;
  for (let i = 0; i < 256; i++) {
    const prefix = i.toString(16).padStart(2, '0');
    for (const name of await readdir(join(cacheDir, prefix))) {
      const cached = await readFile(join(cacheDir, prefix, name)).catch(() => undefined);
      if (!cached) continue; // evicted meanwhile
      checked++;
      let source: Buffer | undefined;
      for (const suffix of ['', 'C', 'P', 'X']) {
        source = await readFile(join(repoDir, 'data', prefix, name + suffix)).catch(() => undefined);
        if (source) break;
      }
      if (!source || !inflateSync(source).equals(cached)) bad.push(prefix + name);
    }
  }
  return { checked, bad };
}

t.test('SIGKILL at random moments: no object with wrong bytes, no txn leftovers, the ledger is recovered', async (t) => {
  const dir = await tempDir(t);
  const fqrn = 'crash.cvmfs.io';
  const p = await publishFiles(t, dir, fqrn, 24, 3);
  const spec = { fqrn, serverUrl: p.server.url, publicKey: p.publicKey, config: ['CVMFS_QUOTA_LIMIT=10'] };
  let cacheBase: string | undefined;
  const report: string[] = [];
  for (let crash = 1; crash <= 4; crash++) {
    const m = await mountRepository(t, dir, { ...spec, cacheBase });
    cacheBase = m.cacheBase;
    const cacheDir = join(cacheBase, 'shared');
    if (crash > 1) {
      const log = await m.log();
      t.match(log, /ended without closing it/, `start ${crash}: the previous daemon's crash was noticed`);
      const l = ledger(cacheDir);
      const onDisk = await objectBytes(cacheDir);
      t.equal(l.rows.length, onDisk.files, `start ${crash}: one ledger row per cached object`);
      t.equal(l.bytes, onDisk.bytes, `start ${crash}: the ledger's size is the directory's`);
      t.ok(l.bytes <= 10 * MiB, `start ${crash}: within the limit`);
      t.same(l.pins.filter((x) => x.pid !== m.pid), [], `start ${crash}: the dead daemon's pins are gone`);
      t.same((await readdir(join(cacheDir, 'txn'))).filter((n) => !n.includes(`.${m.pid}.`)), [], `start ${crash}: its txn/ files are gone`);
    }
    // Readers in full swing, then SIGKILL after a random moment (downloads, commits, evictions in flight).
    const work = readRound(m, p, 8, crash);
    const delay = 200 + Math.floor(Math.random() * 1500);
    await new Promise((r) => setTimeout(r, delay));
    process.kill(m.pid, 'SIGKILL');
    const errors = await work; // ENOTCONN from here on, that is expected
    const txnLeft = (await readdir(join(cacheDir, 'txn'))).length;
    const { checked, bad } = await badObjects(cacheDir, p.repoDir);
    t.same(bad, [], `crash ${crash} after ${delay} ms: all ${checked} cached objects have their hash's bytes`);
    report.push(`crash ${crash} after ${delay} ms: ${errors.length} failed reads, ${checked} objects checked, ${txnLeft} txn files left`);
  }
  t.comment(report.join('\n'));
  // A last clean start reads everything right from the recovered cache.
  const m = await mountRepository(t, dir, { ...spec, cacheBase });
  t.same(await readRound(m, p, 4, 99), [], 'reads after the crashes are right');
});
