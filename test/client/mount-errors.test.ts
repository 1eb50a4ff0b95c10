/**
 * Bad input to the client: damaged objects give EIO for that file only (nothing cached, a log
 * line naming the object); a repository that fails verification is not mounted, with a
 * one-sentence reason and a non-zero exit.
 */
import t, { type Test } from 'tap';
import http from 'node:http';
import { readFile, writeFile, cp, mkdir, readdir } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { publish } from '../../src/publish/publisher';
import { keyFiles, loadKeys, createKeys } from '../../src/publish/keys';
import { createWhitelist, signWhitelist } from '../../src/format/whitelist';
import { serveRepository } from '../helpers/serve';
import { objectPath } from '../../src/format/object-name';
import { ContentHash } from '../../src/format/hash';
import { tempDir, testKeys } from '../helpers/repo';
import { mountRepository, tryMount } from '../helpers/mount';

const FQRN = 'errors.cvmfs.io';

async function repository(t: Test) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await mkdir(src);
  await writeFile(join(src, 'good.txt'), 'good content\n');
  await writeFile(join(src, 'victim.txt'), 'this object will be damaged\n'.repeat(100));
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys });
  return { dir, src, repoDir, keys, pub: keyFiles(FQRN, keys).masterPublicKey };
}

/** The stored object of a file, found through the catalog with the mount's magic xattr. */
async function objectOf(mountXattr: (p: string, n: string) => Promise<string>, path: string): Promise<string> {
  return objectPath(ContentHash.parse(await mountXattr(path, 'user.hash')));
}

t.test('one flipped byte in an object: EIO for that file only, nothing cached, logged', async (t) => {
  const r = await repository(t);
  const server = await serveRepository(t, r.repoDir);
  const m = await mountRepository(t, r.dir, { fqrn: FQRN, serverUrl: server.url, publicKey: r.pub });
  const object = await objectOf(m.xattr, 'victim.txt');
  const data = await readFile(join(r.repoDir, object));
  data[data.length >> 1] ^= 0x40;
  await writeFile(join(r.repoDir, object), data);
  await t.rejects(readFile(join(m.mountpoint, 'victim.txt')), { code: 'EIO' });
  t.equal(await readFile(join(m.mountpoint, 'good.txt'), 'utf8'), 'good content\n', 'other files still read');
  const hash = await m.xattr('victim.txt', 'user.hash');
  t.equal(await m.xattr('victim.txt', 'user.lhash'), 'Not in cache', 'nothing cached');
  const cached: string[] = await readdir(join(m.cacheBase, 'shared', hash.slice(0, 2))).catch(() => []);
  t.notOk(cached.includes(hash.slice(2)), 'no cache file');
  t.match(await m.log(), new RegExp(`${object.replace(/\//g, '\\/')}`), 'the log names the object');
});

/** Serves the repository but answers object requests for one path with something broken. */
async function brokenServer(t: Test, root: string, victim: string, mode: 'html' | 'truncated' | 'garbage'): Promise<string> {
  const server = http.createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url!, 'http://x').pathname);
    const file = join(root, path);
    if (path.endsWith(victim)) {
      if (mode === 'html') {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html><body><h1>Service Unavailable</h1></body></html>');
      } else if (mode === 'garbage') {
        res.writeHead(200);
        res.end(Buffer.alloc(4000, 0x5a));
      } else {
        void readFile(file).then((d) => {
          res.writeHead(200, { 'content-length': d.length });
          res.write(d.subarray(0, d.length >> 1));
          res.destroy();
        });
      }
      return;
    }
    const s = createReadStream(file);
    s.on('error', () => {
      res.writeHead(404);
      res.end();
    });
    s.pipe(res);
  });
  await new Promise<void>((done) => server.listen(0, '127.0.0.1', done));
  t.teardown(() => new Promise<void>((done) => server.close(() => done())));
  server.on('connection', (s) => t.teardown(() => s.destroy()));
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

for (const mode of ['html', 'truncated', 'garbage'] as const) {
  t.test(`server answers an object with ${mode}: EIO, never wrong bytes`, async (t) => {
    const r = await repository(t);
    const first = await serveRepository(t, r.repoDir);
    const probe = await mountRepository(t, join(r.dir, 'probe'), { fqrn: FQRN, serverUrl: first.url, publicKey: r.pub });
    const object = await objectOf(probe.xattr, 'victim.txt');
    await probe.unmount();
    await first.stop();
    const url = await brokenServer(t, r.repoDir, object, mode);
    const m = await mountRepository(t, join(r.dir, 'broken'), { fqrn: FQRN, serverUrl: url, publicKey: r.pub });
    await t.rejects(readFile(join(m.mountpoint, 'victim.txt')), { code: 'EIO' });
    t.equal(await readFile(join(m.mountpoint, 'good.txt'), 'utf8'), 'good content\n');
  });
}

async function refused(t: Test, dir: string, spec: Parameters<typeof tryMount>[2], pattern: RegExp) {
  const r = await tryMount(t, dir, spec);
  t.ok('error' in r, 'mount refused');
  if ('error' in r) {
    t.not(r.error.code, 0);
    const lines = r.error.stderr.trim().split('\n');
    t.equal(lines.length, 1, `one line: ${r.error.stderr}`);
    t.match(lines[0], pattern);
  }
}

t.test('verification failures refuse the mount with one sentence', async (t) => {
  const r = await repository(t);
  const server = await serveRepository(t, r.repoDir);
  const base = { fqrn: FQRN, serverUrl: server.url, publicKey: r.pub };

  // Wrong repository name: the manifest names another.
  const other = 'other.cvmfs.io';
  await refused(t, join(r.dir, 'wrong-fqrn'), { ...base, fqrn: other }, /manifest is for repository 'errors\.cvmfs\.io', not 'other\.cvmfs\.io'/);

  // Unknown master key.
  const foreign = join(r.dir, 'foreign-keys');
  await createKeys(FQRN, foreign);
  await refused(t, join(r.dir, 'foreign'), { ...base, publicKey: keyFiles(FQRN, foreign).masterPublicKey }, /whitelist: signature does not verify/);

  // Tampered manifest.
  const tampered = join(r.dir, 'tampered-repo');
  await cp(r.repoDir, tampered, { recursive: true });
  const manifest = await readFile(join(tampered, '.cvmfspublished'));
  manifest[manifest.indexOf('\nD') + 2] ^= 0x01;
  await writeFile(join(tampered, '.cvmfspublished'), manifest);
  const s2 = await serveRepository(t, tampered);
  await refused(t, join(r.dir, 'tampered'), { ...base, serverUrl: s2.url }, /manifest: signature check failed/);

  // Expired whitelist, properly signed.
  const expired = join(r.dir, 'expired-repo');
  await cp(r.repoDir, expired, { recursive: true });
  const keys = await loadKeys(FQRN, r.keys);
  const old = createWhitelist({ fqrn: FQRN, certificate: keys.certificate, now: new Date(Date.now() - 60 * 86400_000) });
  await writeFile(join(expired, '.cvmfswhitelist'), signWhitelist(old, keys.masterKey));
  const s3 = await serveRepository(t, expired);
  await refused(t, join(r.dir, 'expired'), { ...base, serverUrl: s3.url }, /whitelist expired on/);
});

t.test('an older revision than the breadcrumb is refused', async (t) => {
  const r = await repository(t);
  const oldManifest = await readFile(join(r.repoDir, '.cvmfspublished'));
  await writeFile(join(r.src, 'new.txt'), 'revision 2\n');
  await new Promise((done) => setTimeout(done, 1100)); // a later publish second
  await publish({ fqrn: FQRN, source: r.src, repoDir: r.repoDir, keysDir: r.keys });
  const server = await serveRepository(t, r.repoDir);
  const cacheBase = join(r.dir, 'cache');
  const m = await mountRepository(t, join(r.dir, 'first'), { fqrn: FQRN, serverUrl: server.url, publicKey: r.pub, cacheBase });
  t.equal(await m.xattr('', 'user.revision'), '2');
  await m.unmount();
  await writeFile(join(r.repoDir, '.cvmfspublished'), oldManifest);
  await refused(
    t,
    join(r.dir, 'second'),
    { fqrn: FQRN, serverUrl: server.url, publicKey: r.pub, cacheBase },
    /server offers revision 1 but this cache has seen revision 2: refusing to roll back/,
  );
});

t.test('offline: servers gone, cached revision mounts', async (t) => {
  const r = await repository(t);
  const server = await serveRepository(t, r.repoDir);
  const cacheBase = join(r.dir, 'cache');
  const m = await mountRepository(t, join(r.dir, 'online'), { fqrn: FQRN, serverUrl: server.url, publicKey: r.pub, cacheBase });
  t.equal(await readFile(join(m.mountpoint, 'good.txt'), 'utf8'), 'good content\n');
  await m.unmount();
  const url = server.url;
  await server.stop();
  const off = await mountRepository(t, join(r.dir, 'offline'), { fqrn: FQRN, serverUrl: url, publicKey: r.pub, cacheBase });
  t.equal(await readFile(join(off.mountpoint, 'good.txt'), 'utf8'), 'good content\n', 'cached file served offline');
  await t.rejects(readFile(join(off.mountpoint, 'victim.txt')), { code: 'EIO' }, 'uncached file fails fast');
  t.match(await off.log(), /offline mode/);
});
