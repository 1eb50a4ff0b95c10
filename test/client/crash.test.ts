/**
 * Crash safety: the mount daemon SIGKILLed at random moments during heavy cold reads, 50 times.
 * After each kill and restart, every object in the cache must hold exactly the bytes of its
 * repository object, and at the end every file reads back right.
 */
import t from 'tap';
import { readFile, readdir, writeFile, mkdir } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { inflateSync } from 'node:zlib';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository } from '../helpers/mount';
import { serveRepository } from '../helpers/serve';

const FQRN = 'crash.cvmfs.io';
const KILLS = Number(process.env.CRASH_KILLS ?? 50);
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Cache path (XX/rest) → sha256 of the decompressed content, for every object of the repository. */
async function expectedCacheContent(repoDir: string): Promise<Map<string, string>> {
  const expected = new Map<string, string>();
  for (const d of await readdir(join(repoDir, 'data'))) {
    if (d === 'txn') continue;
    for (const f of await readdir(join(repoDir, 'data', d))) {
      const name = f.replace(/[CPXHML]$/, '');
      expected.set(`${d}/${name}`, sha256(inflateSync(await readFile(join(repoDir, 'data', d, f)))));
    }
  }
  return expected;
}

async function cachedObjects(cacheDir: string): Promise<string[]> {
  const result: string[] = [];
  for (const d of await readdir(cacheDir)) {
    if (!/^[0-9a-f]{2}$/.test(d)) continue;
    for (const f of await readdir(join(cacheDir, d))) result.push(`${d}/${f}`);
  }
  return result;
}

t.test(`${KILLS} SIGKILLs during cold reads leave only correct cache objects`, async (t) => {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(src);
  const files: string[] = [];
  for (let i = 0; i < 24; i++) {
    const name = `file-${i}.bin`;
    await writeFile(join(src, name), pseudoRandomBytes(256 * 1024 + i * 4099, 100 + i));
    files.push(name);
  }
  await writeFile(join(src, 'chunked.bin'), pseudoRandomBytes(6 << 20, 77));
  files.push('chunked.bin');
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: { min: 262144, avg: 524288, max: 1048576 } });
  const expected = await expectedCacheContent(repoDir);
  const server = await serveRepository(t, repoDir);
  const cacheBase = join(dir, 'cache');
  const spec = { fqrn: FQRN, serverUrl: server.url, publicKey: keyFiles(FQRN, keys).masterPublicKey, cacheBase };

  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) >>> 0) % 1000) / 1000;
  let bad = 0;
  let checked = 0;
  for (let kill = 0; kill < KILLS; kill++) {
    const m = await mountRepository(t, join(dir, `run-${kill % 2}`), spec);
    // Heavy cold reads: everything not cached yet, in parallel; they fail when the daemon dies.
    const reads = files.map((f) => readFile(join(m.mountpoint, f)).catch(() => undefined));
    await new Promise((r) => setTimeout(r, 20 + random() * 400));
    process.kill(m.pid, 'SIGKILL');
    await Promise.all(reads);
    execFileSync('fusermount', ['-uz', m.mountpoint]);
    for (const object of await cachedObjects(join(cacheBase, 'shared'))) {
      checked++;
      const want = expected.get(object);
      const got = sha256(await readFile(join(cacheBase, 'shared', object)));
      if (want !== got) bad++;
    }
    // Once everything is cached the reads no longer race with downloads: start cold again.
    if (kill % 10 === 9) execFileSync('rm', ['-rf', cacheBase]);
  }
  t.equal(bad, 0, `${checked} cache objects checked after ${KILLS} kills, none with wrong bytes`);

  const m = await mountRepository(t, join(dir, 'final'), spec);
  for (const f of files) {
    const ok = (await readFile(join(m.mountpoint, f))).equals(await readFile(join(src, f)));
    if (!ok) t.fail(`${f} reads wrong after the crashes`);
  }
  t.pass('every file reads right after the crashes');
  t.same(await readdir(join(cacheBase, 'shared', 'txn')), [], 'no transaction left behind after a clean start');
});
