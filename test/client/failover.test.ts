/**
 * Server failover with real mounts (§5.12): CVMFS_SERVER_URL="http://bad;http://good", where the bad
 * server (its own process, test/helpers/fault-server.ts) answers file contents with HTTP 500, resets,
 * stalls mid-body or flipped bytes. Every read must return the right bytes, from the good server; after
 * CVMFS_HOST_RESET_AFTER the client tries the first server again. With every server gone, reads fail
 * with EIO within the timeout budget; offline, the warm cache still serves.
 *
 * Only async reads here: the servers are other processes, but nothing in this process may block.
 */
import t, { type Test } from 'tap';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, publishFileMap, type PublishedFiles } from '../helpers/repo';
import { mountRepository, type TestMount } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';
import { startFaultServer, type FaultMode, type FaultServer } from '../helpers/fault-server';

const FQRN = 'failover.cvmfs.io';
const TIMEOUT_S = 2;
const MAX_RETRIES = 1;
/** Small timeouts, no backoff, and a host reset after 1 s so that failover happens more than once. */
const FAST = [
  `CVMFS_TIMEOUT=${TIMEOUT_S}`,
  `CVMFS_TIMEOUT_DIRECT=${TIMEOUT_S}`,
  `CVMFS_MAX_RETRIES=${MAX_RETRIES}`,
  'CVMFS_BACKOFF_INIT=0',
  'CVMFS_BACKOFF_MAX=0',
  'CVMFS_HOST_RESET_AFTER=1',
];

type Fixture = PublishedFiles;

let fixture: Promise<Fixture> | undefined;

/** One repository for every test: small text files, incompressible files and a chunked one. */
function repository(): Promise<Fixture> {
  return (fixture ??= (async () => {
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 8; i++) files.set(`text/t${i}.txt`, Buffer.from(`text file ${i}\n`.repeat(200 + i * 50)));
    for (let i = 0; i < 6; i++) files.set(`random/r${i}.bin`, pseudoRandomBytes(40_000 + i * 7_000, 100 + i));
    files.set('big/chunked.bin', pseudoRandomBytes(3 << 20, 7));
    return publishFileMap(t, FQRN, files);
  })());
}

/** Reads `paths` of the mount in parallel (async) and counts the ones that match the source. */
async function readAll(m: TestMount, fx: Fixture, paths: string[]): Promise<{ ok: number; errors: string[] }> {
  const errors: string[] = [];
  let ok = 0;
  await Promise.all(
    paths.map(async (p) => {
      try {
        const got = await readFile(join(m.mountpoint, p));
        if (got.equals(fx.files.get(p)!)) ok++;
        else errors.push(`${p}: wrong bytes`);
      } catch (e) {
        errors.push(`${p}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
    }),
  );
  return { ok, errors };
}

const faulted = (s: FaultServer) => s.requests().filter((r) => r.fault !== 'ok');
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function badThenGood(t: Test, mode: FaultMode): Promise<void> {
  const fx = await repository();
  const dir = await tempDir(t);
  const bad = await startFaultServer(t, fx.repoDir, mode);
  const good = await serveRepository(t, fx.repoDir);
  const m = await mountRepository(t, dir, { fqrn: FQRN, serverUrl: `"${bad.url};${good.url}"` /* quoted: ; ends a shell command */, publicKey: fx.pub, config: FAST });
  t.equal(await m.xattr('', 'user.host'), bad.url, 'mounted through the first server (its catalogs are fine)');
  const paths = [...fx.files.keys()];
  const half = Math.ceil(paths.length / 2);

  const started = Date.now();
  const first = await readAll(m, fx, paths.slice(0, half));
  t.same(first.errors, [], 'round 1: no read failed');
  t.equal(first.ok, half, `round 1: ${half} files read right (${Date.now() - started} ms)`);
  const faults1 = faulted(bad).length;
  t.ok(faults1 > 0, `round 1: the first server spoiled ${faults1} request(s)`);
  t.equal(await m.xattr('', 'user.host'), good.url, 'the client moved to the second server');

  await pause(1200); // CVMFS_HOST_RESET_AFTER=1: the next request starts at the first server again
  const second = await readAll(m, fx, paths.slice(half));
  t.same(second.errors, [], 'round 2: no read failed');
  t.equal(second.ok, paths.length - half, 'round 2: the rest read right');
  t.ok(faulted(bad).length > faults1, 'round 2: the first server was tried again after the host reset');
  t.ok(
    good.requests().some((l) => /\/data\/[0-9a-f]{2}\/[0-9a-f]+P?\b/.test(l)),
    'the second server served file contents',
  );
  // Cached now: reading everything again needs no server at all.
  await bad.stop();
  await good.stop();
  const again = await readAll(m, fx, paths);
  t.equal(again.ok, paths.length, 'everything is cached');
}

t.test('first server answers HTTP 500: every read right from the second', (t) => badThenGood(t, '500'));
t.test('first server resets connections mid-body: every read right from the second', (t) => badThenGood(t, 'reset'));
t.test('first server stalls mid-body: every read right from the second', (t) => badThenGood(t, 'stall'));
t.test('first server serves flipped bytes: every read right from the second', (t) => badThenGood(t, 'flip'));

t.test('every server dead: EIO within the timeout budget; offline, the warm cache serves', async (t) => {
  const fx = await repository();
  const dir = await tempDir(t);
  const one = await startFaultServer(t, fx.repoDir, 'ok', 'all');
  const two = await startFaultServer(t, fx.repoDir, 'ok', 'all');
  const m = await mountRepository(t, dir, { fqrn: FQRN, serverUrl: `"${one.url};${two.url}"`, publicKey: fx.pub, config: FAST });
  const paths = [...fx.files.keys()];
  const warm = paths.slice(0, 6);
  const cold = paths.slice(6);
  t.equal((await readAll(m, fx, warm)).ok, warm.length, 'warm-up reads');

  // Servers that accept connections and never answer: every attempt waits for the timeout.
  await one.setMode('mute', 'all');
  await two.setMode('mute', 'all');
  const hosts = 2;
  const budgetS = (MAX_RETRIES + 1) * TIMEOUT_S * hosts;
  let started = Date.now();
  await t.rejects(readFile(join(m.mountpoint, cold[0])), { code: 'EIO' }, 'a cold file: EIO');
  let elapsed = (Date.now() - started) / 1000;
  // The daemon logs each failed read. Linux retries a failed (readahead) page read once; the open
  // handle remembers the failed fetch, so the retry fails at once instead of downloading again.
  const failures = (await m.log()).split('\n').filter((l) => l.includes(`error: read /${cold[0]}:`));
  t.ok(failures.length === 1 || failures.length === 2, `${failures.length} failed download(s) for one read`);
  const firstGaveUp = (Date.parse(failures[0].split(' ')[0]) - started) / 1000;
  t.ok(firstGaveUp >= budgetS * 0.95, `the download waited for every timeout (${firstGaveUp.toFixed(1)} s)`);
  t.ok(
    firstGaveUp < budgetS + 1.5,
    `the download gave up after ${firstGaveUp.toFixed(1)} s: (retries+1) × timeout × hosts = ${budgetS} s, + 1.5 s`,
  );
  t.ok(elapsed < budgetS + 3, `EIO after ${elapsed.toFixed(1)} s (${budgetS} s + 3 s)`);
  for (const s of [one, two]) {
    const tries = s.requests().filter((r) => r.fault === 'mute').length;
    t.equal(tries, MAX_RETRIES + 1, `each server was tried ${MAX_RETRIES + 1} times: one download for the read`);
  }

  // Offline: connections refused. Warm files still read; misses fail fast.
  await one.stop();
  await two.stop();
  const offline = await readAll(m, fx, warm);
  t.same(offline.errors, []);
  t.equal(offline.ok, warm.length, 'the warm cache serves every cached file');
  for (const p of cold.slice(1, 4)) {
    started = Date.now();
    await t.rejects(readFile(join(m.mountpoint, p)), { code: 'EIO' }, `${p}: EIO`);
    elapsed = (Date.now() - started) / 1000;
    t.ok(elapsed < 3, `${p}: failed fast (${elapsed.toFixed(2)} s)`);
  }
  t.equal(await m.xattr('', 'user.fqrn'), FQRN, 'the mount stays usable');
  t.match(await m.log(), /download|network|EIO|failed/i, 'the failures are logged');
});
