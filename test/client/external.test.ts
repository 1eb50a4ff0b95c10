/**
 * External files end to end (§7.1): publish with `external: true` (no data objects), serve the
 * repository and, as the external data server, the source directory itself; mount with
 * CVMFS_EXTERNAL_URL and read everything back, verified against the catalog's hashes.
 */
import t from 'tap';
import { readFile, open, writeFile, readdir, mkdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { verifyRepository } from '../../src/repository/verify';
import { Compression } from '../../src/format/flags';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, testKeys, openRepoDir } from '../helpers/repo';
import { mountRepository } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';

const FQRN = 'external.cvmfs.io';
const CHUNKS = { min: 262144, avg: 524288, max: 1048576 };
const BIG = 'big/random-3M.bin';
const ODD = 'dir with space/ñandú #1 + 50%.txt';

/** Source files, by repository path without the leading slash. */
const FILES: Record<string, Buffer> = {
  'hello.txt': Buffer.from('Hello, external world!\n'),
  'empty.txt': Buffer.alloc(0),
  'sub/dir/data.bin': pseudoRandomBytes(100_000, 3),
  [ODD]: Buffer.from('escaped on the wire\n'),
  [BIG]: pseudoRandomBytes(3 << 20, 11),
  'tamper/small.txt': Buffer.from('this one will be changed after publishing\n'),
  'tamper/chunked.bin': pseudoRandomBytes(1_572_864, 13),
};

/** Common-log-format lines of our server: request target, status, body size. */
function parseLog(lines: string[]): { target: string; status: number; size: string }[] {
  return lines.flatMap((l) => {
    const m = /"GET (\S+) HTTP\/[\d.]+" (\d+) (\S+)$/.exec(l);
    return m ? [{ target: m[1]!, status: Number(m[2]), size: m[3]! }] : [];
  });
}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}

t.test('external files: published by hash only, read from the external server by path', async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  for (const [path, data] of Object.entries(FILES)) {
    await mkdir(join(src, path, '..'), { recursive: true });
    await writeFile(join(src, path), data);
  }
  const keys = await testKeys(FQRN);
  const result = await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: CHUNKS, external: true });

  // Nothing but catalogs and the certificate in data/: no file content, no chunks.
  const objects = (await walk(join(repoDir, 'data'))).map((p) => relative(join(repoDir, 'data'), p)).filter((p) => !p.startsWith('txn'));
  t.ok(objects.length > 0);
  t.same(objects.filter((p) => !/^[0-9a-f]{2}\/[0-9a-f]+[CX]$/.test(p)), [], 'only catalog (C) and certificate (X) objects');
  t.equal(result.objects.objectsWritten, objects.length);

  // The catalog: flags, hashes over the plain bytes, counters; the repository verifies clean.
  const repo = await openRepoDir(FQRN, keys, repoDir);
  t.teardown(() => repo.close());
  const root = await repo.rootCatalog();
  const { self } = root.counters();
  t.equal(self.external, Object.keys(FILES).length, 'self_external counts every regular file');
  t.equal(self.external_file_size, Object.values(FILES).reduce((n, b) => n + b.length, 0), 'self_external_file_size');
  t.equal(self.regular, Object.keys(FILES).length);
  t.ok(self.chunked >= 2, `${self.chunked} chunked files`);
  const hello = root.lookup('/hello.txt')!;
  t.ok(hello.flags.external, 'flag 128');
  t.equal(hello.flags.compression, Compression.None, 'compression none');
  const report = await verifyRepository(repo);
  t.same(report.problems, [], 'verifyRepository finds no problem');
  t.equal(report.externalFiles, Object.keys(FILES).length);
  t.equal(report.objects, 0, 'no data object to check');

  const server = await serveRepository(t, repoDir);
  const external = await serveRepository(t, src);
  // The repository server is also the (only) HTTP proxy: external data must not go through it
  // (CVMFS_EXTERNAL_HTTP_PROXY defaults to DIRECT), or the reads below would fail.
  const m = await mountRepository(t, dir, {
    fqrn: FQRN,
    serverUrl: server.url,
    publicKey: keyFiles(FQRN, keys).masterPublicKey,
    config: [`CVMFS_HTTP_PROXY=${server.url}`, `CVMFS_EXTERNAL_URL=${external.url}`],
  });
  t.equal(await m.xattr('', 'user.proxy'), server.url, 'the main download manager uses the proxy');
  t.equal(await m.xattr('', 'user.external_host'), external.url);

  // Random reads across the chunk boundaries of the big file first (cold), then everything whole.
  const chunkList = (await m.xattr(BIG, 'user.chunk_list'))
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => {
      const [hash, offset, size] = l.split(',');
      return { hash: hash!, offset: Number(offset), size: Number(size) };
    });
  t.ok(chunkList.length >= 3, `${chunkList.length} chunks`);
  t.equal(await m.xattr(BIG, 'user.chunks'), String(chunkList.length));
  const big = FILES[BIG]!;
  const fh = await open(join(m.mountpoint, BIG), 'r');
  try {
    let ok = 0;
    for (let i = 0; i < 30; i++) {
      const boundary = chunkList[1 + (i % (chunkList.length - 1))]!.offset;
      const offset = Math.max(0, boundary - 700 + ((i * 7919) % 1400));
      const length = 1 + ((i * 104729) % 200_000);
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      if (buf.subarray(0, bytesRead).equals(big.subarray(offset, offset + length))) ok++;
    }
    t.equal(ok, 30, 'random reads across chunk boundaries match');
  } finally {
    await fh.close();
  }
  for (const [path, data] of Object.entries(FILES)) {
    if (path.startsWith('tamper/')) continue;
    t.ok((await readFile(join(m.mountpoint, path))).equals(data), `${path} reads back byte-identical`);
    t.equal(await m.xattr(path, 'user.external_file'), '1', `${path}: user.external_file`);
    t.equal(await m.xattr(path, 'user.external_url'), `${external.url}/${path}`, `${path}: user.external_url`);
    t.equal(await m.xattr(path, 'user.compression'), 'none');
  }

  // The external server got one Range request per chunk (206, chunk-sized), by escaped path.
  const extLog = parseLog(external.requests());
  const bigRequests = extLog.filter((r) => r.target === `/${BIG}`);
  t.ok(bigRequests.every((r) => r.status === 206), 'chunks are fetched with Range requests');
  t.same(
    bigRequests.map((r) => Number(r.size)).sort((a, b) => a - b),
    chunkList.map((c) => c.size).sort((a, b) => a - b),
    'one request per chunk, each of the chunk size',
  );
  t.ok(
    extLog.some((r) => r.target === '/dir%20with%20space/%C3%B1and%C3%BA%20%231%20+%2050%25.txt' && r.status === 200),
    'the odd name is percent-escaped on the wire (§1.1)',
  );
  t.ok(extLog.every((r) => r.target.startsWith('/')), 'external requests are DIRECT (origin-form targets)');
  t.notOk(extLog.some((r) => r.target.includes('/data/') || r.target.includes('.cvmfs')), 'no repository requests on the external server');

  // The repository server (as proxy) saw catalogs and the certificate, never file content.
  const repoLog = parseLog(server.requests());
  t.ok(repoLog.length > 0 && repoLog.every((r) => r.target.startsWith('http://')), 'main requests go through the proxy');
  const dataRequests = repoLog.filter((r) => r.target.includes('/data/'));
  t.ok(dataRequests.length > 0);
  t.same(dataRequests.filter((r) => !/\/data\/[0-9a-f]{2}\/[0-9a-f]+[CX]$/.test(r.target)), [], 'no data/ request for file content');
  t.notOk(repoLog.some((r) => /hello|random|ñ|%C3/.test(r.target)), 'no file path requested from the repository server');

  // Tampered external content is refused (hash verification), never handed out.
  const small = join(src, 'tamper/small.txt');
  const changed = Buffer.from(FILES['tamper/small.txt']!);
  changed[5] ^= 0x20;
  await writeFile(small, changed);
  await t.rejects(readFile(join(m.mountpoint, 'tamper/small.txt')), { code: 'EIO' }, 'tampered whole file → EIO');

  const chunkedList = (await m.xattr('tamper/chunked.bin', 'user.chunk_list'))
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => ({ offset: Number(l.split(',')[1]), size: Number(l.split(',')[2]) }));
  t.ok(chunkedList.length >= 2, `${chunkedList.length} chunks`);
  const victim = chunkedList[chunkedList.length - 1]!;
  const target = victim.offset + Math.floor(victim.size / 2);
  const chunked = Buffer.from(FILES['tamper/chunked.bin']!);
  chunked[target] ^= 0xff;
  await writeFile(join(src, 'tamper/chunked.bin'), chunked);
  const ch = await open(join(m.mountpoint, 'tamper/chunked.bin'), 'r');
  try {
    const first = Buffer.alloc(1000);
    await ch.read(first, 0, first.length, 0);
    t.ok(first.equals(FILES['tamper/chunked.bin']!.subarray(0, 1000)), 'an untouched chunk still reads');
    await t.rejects(ch.read(Buffer.alloc(100), 0, 100, target - 50), { code: 'EIO' }, 'the tampered chunk → EIO');
  } finally {
    await ch.close();
  }
  t.match(await m.log(), /tamper\/small\.txt.*hashes to/, 'the hash mismatch is logged');
  // The kernel may retry a failed read (readahead, then the read itself): at least one error each.
  t.ok(Number(await m.xattr('', 'user.nioerr')) >= 2, 'I/O errors are counted');
});
