/**
 * Live revision updates (§5.11): a revision published while mounted becomes visible without a
 * remount once the TTL runs out; CVMFS_AUTO_UPDATE=no pins the revision; a file already open keeps
 * reading the bytes it opened while new opens read the new ones (needs fuse-native built by
 * scripts/build-fuse-native.sh: per-open FOPEN_DIRECT_IO/KEEP_CACHE, see src/fuse/page-cache-policy.ts).
 */
import t, { type Test } from 'tap';
import { readFile, writeFile, mkdir, rm, readdir, open, stat, type FileHandle } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import type { ChunkSizes } from '../../src/format/chunker';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';
import { Prng } from '../helpers/prng';

const FQRN = 'live.cvmfs.io';
const TTL_S = 2;

async function setUp(t: Test, config: string[]) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'changing.txt'), 'revision one\n');
  await writeFile(join(src, 'removed.txt'), 'gone in revision two\n');
  await writeFile(join(src, 'sub', 'kept.txt'), 'unchanged\n');
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: ['CVMFS_KCACHE_TIMEOUT=1', ...config],
  });
  const publishRevision2 = async () => {
    await writeFile(join(src, 'changing.txt'), 'revision two, longer than before\n');
    await writeFile(join(src, 'added.txt'), 'new in revision two\n');
    await rm(join(src, 'removed.txt'));
    await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S });
  };
  return { m, publishRevision2 };
}

async function waitForRevision(m: TestMount, revision: string, withinMs: number): Promise<boolean> {
  for (const end = Date.now() + withinMs; Date.now() < end; ) {
    if ((await m.xattr('', 'user.revision')) === revision) return true;
    await new Promise((r) => setTimeout(r, 250));
  }
  return false;
}

t.test('a new revision appears without remount', async (t) => {
  const { m, publishRevision2 } = await setUp(t, []);
  t.equal(await m.xattr('', 'user.revision'), '1');
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision one\n');
  await publishRevision2();
  t.ok(await waitForRevision(m, '2', 15_000), 'revision 2 mounted within the TTL plus the check');
  // The kernel may hold entries for CVMFS_KCACHE_TIMEOUT (1 s here).
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision two, longer than before\n', 'new opens see new bytes');
  t.equal(await readFile(join(m.mountpoint, 'added.txt'), 'utf8'), 'new in revision two\n', 'new files appear');
  t.notOk((await readdir(m.mountpoint)).includes('removed.txt'), 'deleted files disappear');
  await t.rejects(readFile(join(m.mountpoint, 'removed.txt')), { code: 'ENOENT' });
  t.equal(await readFile(join(m.mountpoint, 'sub', 'kept.txt'), 'utf8'), 'unchanged\n');
  t.match(await m.log(), /revision 1 → 2/);
});

t.test('CVMFS_AUTO_UPDATE=no pins the revision', async (t) => {
  const { m, publishRevision2 } = await setUp(t, ['CVMFS_AUTO_UPDATE=no']);
  await publishRevision2();
  t.notOk(await waitForRevision(m, '2', (TTL_S + 3) * 1000), 'still revision 1 after the TTL');
  t.equal(await readFile(join(m.mountpoint, 'changing.txt'), 'utf8'), 'revision one\n');
});

// ---- a file already open across an update -------------------------------------------------------

const run = promisify(execFile);
const KCACHE_S = 1;
/** The adapter keeps opens of a changed path direct for the attribute timeout + 1 s after the old handles close. */
const DIRECT_WINDOW_MS = (KCACHE_S + 1) * 1000 + 500;

function bytes(seed: number, size: number): Buffer {
  return Buffer.from(new Prng(seed).fillBytes(new Uint8Array(size)));
}

/** Reads from the handle's current position to EOF, as a sequential reader does. */
async function readToEnd(fh: FileHandle): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (;;) {
    const buffer = Buffer.alloc(100_000); // not a multiple of the page size or of max_read
    const { bytesRead } = await fh.read(buffer, 0, buffer.length, null);
    if (bytesRead === 0) return Buffer.concat(parts);
    parts.push(buffer.subarray(0, bytesRead));
  }
}

async function readPart(fh: FileHandle, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await fh.read(buffer, 0, length, null);
  return buffer.subarray(0, bytesRead);
}

const cat = async (path: string) => (await run('cat', [path], { encoding: 'buffer', maxBuffer: 64 << 20 })).stdout;

/** A MAP_PRIVATE, PROT_READ mapping of the first `length` bytes (exec and shared libraries map files so). */
const MMAP_READ = [
  'import mmap, os, sys',
  'fd = os.open(sys.argv[1], os.O_RDONLY)',
  'n = int(sys.argv[2])',
  'm = mmap.mmap(fd, n, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)',
  'sys.stdout.buffer.write(m[:n])',
].join('\n');
const mmapRead = async (path: string, length: number) =>
  (await run('python3', ['-c', MMAP_READ, path, String(length)], { encoding: 'buffer', maxBuffer: 64 << 20 })).stdout;

/** Opens `path`, waits for the kernel's attributes to expire, lseek(SEEK_END): a getattr with this handle. */
const SEEK_END_AFTER = [
  'import os, sys, time',
  'fd = os.open(sys.argv[1], os.O_RDONLY)',
  'time.sleep(float(sys.argv[2]))',
  'print(os.lseek(fd, 0, os.SEEK_END))',
].join('\n');
const seekEndAfter = async (path: string, seconds: number) => Number((await run('python3', ['-c', SEEK_END_AFTER, path, String(seconds)])).stdout);

/** Equality without printing megabytes on failure. */
function sameBytes(t: Test, got: Buffer, want: Buffer, what: string): void {
  if (got.equals(want)) return void t.pass(what);
  let at = 0;
  while (at < Math.min(got.length, want.length) && got[at] === want[at]) at++;
  t.fail(what, { gotLength: got.length, wantLength: want.length, firstDifferenceAt: at });
}

interface OpenAcrossUpdate {
  /** A's bytes in revision 2 (A is 700,001 bytes in revision 1). */
  a2: Buffer;
  chunking?: ChunkSizes;
}

async function openAcrossUpdate(t: Test, o: OpenAcrossUpdate): Promise<void> {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  const a1 = bytes(1, 700_001);
  const b1 = bytes(2, 300_000);
  const b2 = bytes(3, 300_000); // same size, other bytes
  const c1 = bytes(6, 200_000); // deleted in revision 2
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'a.bin'), a1);
  await writeFile(join(src, 'sub', 'b.bin'), b1);
  await writeFile(join(src, 'c.bin'), c1);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S, chunking: o.chunking });
  const server = await serveRepository(t, repoDir);
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: [`CVMFS_KCACHE_TIMEOUT=${KCACHE_S}`],
  });
  t.notMatch(await m.log(), /not the patched build/, 'the patched fuse-native is loaded (scripts/build-fuse-native.sh)');
  const a = join(m.mountpoint, 'a.bin');
  const b = join(m.mountpoint, 'sub', 'b.bin');

  const oldA = await open(a, 'r');
  const oldB = await open(b, 'r');
  const oldC = await open(join(m.mountpoint, 'c.bin'), 'r');
  t.teardown(() => Promise.all([oldA, oldB, oldC].map((h) => h.close().catch(() => undefined))));
  sameBytes(t, await readPart(oldA, 65_536), a1.subarray(0, 65_536), 'old handle of A: first part');
  sameBytes(t, await readPart(oldB, 100_000), b1.subarray(0, 100_000), 'old handle of B: first part');
  sameBytes(t, await readPart(oldC, 50_000), c1.subarray(0, 50_000), 'old handle of C: first part');

  await writeFile(join(src, 'a.bin'), o.a2);
  await writeFile(join(src, 'sub', 'b.bin'), b2);
  await rm(join(src, 'c.bin'));
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, ttl: TTL_S, chunking: o.chunking });
  t.ok(await waitForRevision(m, '2', 15_000), 'revision 2 mounted');
  await new Promise((r) => setTimeout(r, KCACHE_S * 1000 + 500)); // kernel entries/attributes expire

  sameBytes(t, await readFile(a), o.a2, 'new open of A (readFile) while the old one is open: new bytes');
  sameBytes(t, await cat(a), o.a2, 'new open of A (cat): new bytes');
  sameBytes(t, await readFile(b), b2, 'new open of B: new bytes');
  await t.rejects(stat(join(m.mountpoint, 'c.bin')), { code: 'ENOENT' }, 'C is gone for new lookups');
  t.equal((await stat(a)).size, Math.max(a1.length, o.a2.length), 'while the old handle is open: the larger size');
  // The kernel keeps one size per path: a new handle's getattr must not shrink it under the old one.
  t.equal(await seekEndAfter(a, KCACHE_S + 0.3), Math.max(a1.length, o.a2.length), 'lseek(SEEK_END) on a new handle');

  sameBytes(t, await readToEnd(oldA), a1.subarray(65_536), 'old handle of A reads the rest of the old bytes, to the old end');
  sameBytes(t, await readToEnd(oldB), b1.subarray(100_000), 'old handle of B reads the rest of the old bytes');
  sameBytes(t, await readToEnd(oldC), c1.subarray(50_000), 'old handle of deleted C reads the rest of its bytes');
  sameBytes(t, await readPart(oldA, 10), Buffer.alloc(0), 'old handle of A stays at its end');

  // After an old handle read to its end, the kernel may take the old size as the file's size for
  // the attribute timeout (README): readers that stop at EOF, not at st_size, get all new bytes.
  sameBytes(t, await cat(a), o.a2, 'new open of A after the old handle reached its end (cat): new bytes');
  sameBytes(t, await mmapRead(b, b2.length), b2, 'MAP_PRIVATE mapping of new B while old B is open');
  // (Longer A is mapped below, once its size is right again: a mapping beyond i_size faults SIGBUS.)
  if (o.a2.length <= a1.length) sameBytes(t, await mmapRead(a, o.a2.length), o.a2, 'MAP_PRIVATE mapping of new A while old A is open');

  await Promise.all([oldA.close(), oldB.close(), oldC.close()]);
  sameBytes(t, await cat(a), o.a2, 'after the old handles closed: new open of A (cat)');
  sameBytes(t, await readFile(b), b2, 'after the old handles closed: new open of B');

  await new Promise((r) => setTimeout(r, DIRECT_WINDOW_MS));
  t.equal((await stat(a)).size, o.a2.length, 'the size is the new one again');
  sameBytes(t, await readFile(a), o.a2, 'later opens of A (page cache again): new bytes');
  sameBytes(t, await mmapRead(a, o.a2.length), o.a2, 'MAP_PRIVATE mapping of A');
  sameBytes(t, await readFile(a), o.a2, 'and again (pages kept)');
}

t.test('a file open across an update keeps its bytes: new version shorter', (t) => openAcrossUpdate(t, { a2: bytes(4, 250_123) }));

t.test('a file open across an update keeps its bytes: new version longer (chunked)', (t) =>
  openAcrossUpdate(t, { a2: bytes(5, 1_500_077), chunking: { min: 64 << 10, avg: 128 << 10, max: 256 << 10 } }),
);
