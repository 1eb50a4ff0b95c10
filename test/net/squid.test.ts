/**
 * Mounts through a real Squid (test/helpers/squid.ts), as sites deploy CVMFS (§5.12): requests are
 * absolute-URI GETs that Squid can cache, so a second cold client cache is filled from Squid; a dead
 * first proxy group fails over to the next group, and to DIRECT when every proxy is dead; Squid's own
 * error for a dead server (X-Squid-Error) leads to the next server.
 */
import t, { type Test } from 'tap';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, publishFileMap, type PublishedFiles } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository, type ServedRepository } from '../helpers/serve';
import { isHit, squidMissing, startSquid, type AccessLogEntry } from '../helpers/squid';
import { deadUrl } from './servers';

const FQRN = 'squid.cvmfs.io';
const FAST = ['CVMFS_TIMEOUT=2', 'CVMFS_TIMEOUT_DIRECT=2', 'CVMFS_MAX_RETRIES=1', 'CVMFS_BACKOFF_INIT=0', 'CVMFS_BACKOFF_MAX=0'];
const noSquid = squidMissing();

type Fixture = PublishedFiles;

let fixture: Promise<Fixture> | undefined;

function repository(): Promise<Fixture> {
  return (fixture ??= (async () => {
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 5; i++) files.set(`text/t${i}.txt`, Buffer.from(`line ${i}\n`.repeat(100 + i * 40)));
    for (let i = 0; i < 4; i++) files.set(`random/r${i}.bin`, pseudoRandomBytes(30_000 + i * 9_000, 50 + i));
    files.set('nested/chunked.bin', pseudoRandomBytes(2 << 20, 3));
    return publishFileMap(t, FQRN, files, (src) => writeFile(join(src, 'nested', '.cvmfscatalog'), ''));
  })());
}

async function mountVia(t: Test, fx: Fixture, serverUrl: string, proxy: string): Promise<TestMount> {
  const dir = await tempDir(t);
  // Quoted: ';' would end the assignment in the bash-syntax configuration file.
  return mountRepository(t, dir, { fqrn: FQRN, serverUrl: `"${serverUrl}"`, publicKey: fx.pub, config: [...FAST, `CVMFS_HTTP_PROXY="${proxy}"`] });
}

/** Reads every file of the repository through the mount (async, in parallel); the paths that differ. */
async function readEverything(m: TestMount, fx: Fixture): Promise<string[]> {
  const wrong: string[] = [];
  await Promise.all(
    [...fx.files].map(async ([rel, data]) => {
      const got = await readFile(join(m.mountpoint, rel)).catch((e: NodeJS.ErrnoException) => e.code ?? 'error');
      if (!(Buffer.isBuffer(got) && got.equals(data))) wrong.push(`${rel}: ${Buffer.isBuffer(got) ? 'wrong bytes' : got}`);
    }),
  );
  return wrong;
}

const objectRequests = (log: AccessLogEntry[]) => log.filter((e) => /\/data\/[0-9a-f]{2}\//.test(e.url));
const objectLines = (s: ServedRepository) => s.requests().filter((l) => /\/data\/[0-9a-f]{2}\//.test(l));

t.test('two cold caches through Squid: the second is filled from Squid', { skip: noSquid }, async (t) => {
  const fx = await repository();
  const server = await serveRepository(t, fx.repoDir);
  const squid = await startSquid(t);
  const origin = new URL(server.url).origin;

  const a = await mountVia(t, fx, server.url, squid.url);
  t.equal(await a.xattr('', 'user.proxy'), squid.url, 'the first mount uses Squid');
  t.same(await readEverything(a, fx), [], 'first cache: every file reads right');
  await a.unmount();
  await new Promise((r) => setTimeout(r, 300)); // Squid logs a request when it has finished it
  const afterA = (await squid.accessLog()).length;
  const fromOrigin = objectLines(server).length;
  t.ok(fromOrigin > fx.files.size, `the first cache fetched ${fromOrigin} objects from the server`);

  const b = await mountVia(t, fx, server.url, squid.url);
  t.same(await readEverything(b, fx), [], 'second cache: every file reads right');
  await new Promise((r) => setTimeout(r, 300));
  const log = await squid.accessLog();

  // Connections closed before any request (the readiness probe, idle keep-alive connections) are logged
  // as NONE_NONE with method '-'.
  const requests = log.filter((e) => e.method !== '-');
  t.ok(requests.length > 0);
  t.same(
    requests.filter((e) => e.method !== 'GET' || !e.url.startsWith(`${origin}/`)),
    [],
    'every request is an absolute-URI GET of the server (no CONNECT)',
  );
  const second = objectRequests(log.slice(afterA));
  t.ok(second.length >= fromOrigin, `the second cache asked Squid for ${second.length} objects`);
  t.same(
    second.filter((e) => !isHit(e.result)).map((e) => `${e.result} ${e.url}`),
    [],
    'every object of the second cache was a Squid cache hit (TCP_HIT / TCP_MEM_HIT)',
  );
  t.equal(objectLines(server).length, fromOrigin, 'the server saw no object request from the second cache');
  const first = objectRequests(log.slice(0, afterA));
  t.ok(first.every((e) => /MISS/.test(e.result)), 'the first cache missed in Squid');
  t.same(new Set(second.map((e) => e.url)), new Set(first.map((e) => e.url)), 'the same objects, by the same URLs');
});

t.test('a dead first proxy group: the second group (Squid) serves', { skip: noSquid }, async (t) => {
  const fx = await repository();
  const server = await serveRepository(t, fx.repoDir);
  const squid = await startSquid(t);
  const dead = await deadUrl();
  const m = await mountVia(t, fx, server.url, `${dead};${squid.url}`);
  t.same(await readEverything(m, fx), [], 'every file reads right');
  t.equal(await m.xattr('', 'user.proxy'), squid.url, 'the client moved to the second group');
  await new Promise((r) => setTimeout(r, 300));
  t.ok(objectRequests(await squid.accessLog()).length >= fx.files.size, 'the objects came through Squid');
});

t.test('every proxy dead: DIRECT', async (t) => {
  const fx = await repository();
  const server = await serveRepository(t, fx.repoDir);
  const m = await mountVia(t, fx, server.url, `${await deadUrl()}|${await deadUrl()};DIRECT`);
  t.same(await readEverything(m, fx), [], 'every file reads right');
  t.equal(await m.xattr('', 'user.proxy'), 'DIRECT');
  t.ok(server.requests().some((l) => l.includes('/data/')), 'the server was asked directly');
});

t.test('a dead server behind Squid: its error (X-Squid-Error) leads to the next server', { skip: noSquid }, async (t) => {
  const fx = await repository();
  const server = await serveRepository(t, fx.repoDir);
  const squid = await startSquid(t);
  const dead = await deadUrl();
  const m = await mountVia(t, fx, `${dead};${server.url}`, squid.url);
  t.same(await readEverything(m, fx), [], 'every file reads right');
  t.equal(await m.xattr('', 'user.host'), server.url, 'the client moved to the second server');
  t.equal(await m.xattr('', 'user.proxy'), squid.url, 'and still uses Squid');
  await new Promise((r) => setTimeout(r, 300));
  const log = await squid.accessLog();
  const failed = log.filter((e) => e.url.startsWith(`${dead}/`));
  t.ok(failed.length > 0 && failed.every((e) => e.status === 503), `Squid answered 503 for the dead server (${failed.length}×)`);
});
