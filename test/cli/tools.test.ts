/** keys create, serve, inspect and demo as users run them: separate processes, real HTTP. */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { readFile, writeFile, stat, cp, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli, BIN } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';
import { writeRichTree, SMALL_CHUNKS } from '../helpers/trees';
import { publish } from '../../src/publish/publisher';
import { keyFiles } from '../../src/publish/keys';

const FQRN = 'tools.cvmfs.io';

t.test('keys create writes four files and refuses to overwrite', async (t) => {
  const dir = join(await tempDir(t), 'keys');
  const r = await runCli(['keys', 'create', FQRN, dir]);
  t.equal(r.code, 0, r.stderr);
  const f = keyFiles(FQRN, dir);
  t.equal((await stat(f.masterKey)).mode & 0o777, 0o400);
  t.equal((await stat(f.repositoryKey)).mode & 0o777, 0o400);
  t.match(await readFile(f.masterPublicKey, 'utf8'), /^-----BEGIN PUBLIC KEY-----/);
  t.match(await readFile(f.certificate, 'utf8'), /^-----BEGIN CERTIFICATE-----/);
  const again = await runCli(['keys', 'create', FQRN, dir]);
  t.equal(again.code, 1);
  t.match(again.stderr, /exists already; not overwriting/);
});

/** Publishes the rich tree and returns where. */
async function published(t: Test) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  await writeRichTree(src);
  const keys = await testKeys(FQRN);
  await publish({ fqrn: FQRN, source: src, repoDir, keysDir: keys, chunking: SMALL_CHUNKS });
  return { dir, repoDir, keys, pub: keyFiles(FQRN, keys).masterPublicKey };
}

/** Starts `cvmfs-ts serve` and returns its base URL; stopped with SIGTERM at teardown. */
async function serve(t: Test, repoDir: string): Promise<string> {
  const child = spawn(process.execPath, [BIN, 'serve', repoDir, '--port', '0', '--prefix', `/cvmfs/${FQRN}`], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((done) => child.on('close', done));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  let out = '';
  return new Promise((done, fail) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d;
      const m = /serving .* at (http:\/\/\S+)/.exec(out);
      if (m) done(m[1]!);
    });
    child.on('close', (code) => fail(new Error(`serve exited ${code}: ${out}`)));
  });
}

t.test('serve + inspect over HTTP', async (t) => {
  const { repoDir, pub } = await published(t);
  const url = await serve(t, repoDir);
  t.match(url, new RegExp(`^http://127\\.0\\.0\\.1:\\d+/cvmfs/${FQRN}$`));
  const manifest = await fetch(`${url}/.cvmfspublished`);
  t.equal(manifest.status, 200);
  t.equal(manifest.headers.get('content-type'), 'application/x-cvmfs');

  const r = await runCli(['inspect', url, '/hardlinks', '--fqrn', FQRN, '--key', pub, '--check-objects']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /revision\s+1/);
  t.match(r.stdout, /signatures\s+manifest and whitelist verified/);
  t.match(r.stdout, /objects\s+\d+ objects .* hash-checked, counters consistent/);
  t.match(r.stdout, /catalogs \(4\):/);
  t.match(r.stdout, /\/nested\/inner\s+[0-9a-f]{40}\s+rev 1/);
  t.match(r.stdout, /\/hardlinks:\n(.*\n){3}/);
  t.match(r.stdout, /-rw-r--r--\s+2 .* original\.txt/);

  const json = await runCli(['inspect', url, '/', '--fqrn', FQRN, '--key', pub, '--json']);
  t.equal(json.code, 0, json.stderr);
  const report = JSON.parse(json.stdout) as { revision: number; catalogs: unknown[]; listing: { entries: { name: string }[] } };
  t.equal(report.revision, 1);
  t.equal(report.catalogs.length, 4);
  t.ok(report.listing.entries.some((e) => e.name === 'link-variant'));

  const missing = await runCli(['inspect', url, '/no/such/dir', '--fqrn', FQRN, '--key', pub]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /\/no\/such\/dir does not exist in the repository/);
});

t.test('inspect names what was tampered with', async (t) => {
  const { dir, repoDir, pub } = await published(t);
  const inspectCopy = async (name: string, damage: (copy: string) => Promise<void>, checkObjects = false) => {
    const copy = join(dir, name);
    await cp(repoDir, copy, { recursive: true });
    await damage(copy);
    return runCli(['inspect', copy, '--fqrn', FQRN, '--key', pub, ...(checkObjects ? ['--check-objects'] : [])]);
  };
  const flip = async (file: string, at: (size: number, data: Buffer) => number) => {
    const data = await readFile(file);
    const i = at(data.length, data);
    data[i] = data[i]! ^ 0x01;
    await writeFile(file, data);
  };

  // A digit of the revision line: flipping its low bit leaves a digit, so the manifest still parses
  // and only the signature can notice (a hash digit could turn into a non-hex character).
  const body = await inspectCopy('manifest-body', (c) => flip(join(c, '.cvmfspublished'), (_n, d) => d.indexOf('\nS') + 2));
  t.equal(body.code, 1);
  t.match(body.stderr, /manifest: signature check failed/);
  const sig = await inspectCopy('manifest-sig', (c) => flip(join(c, '.cvmfspublished'), (n) => n - 5));
  t.equal(sig.code, 1);
  t.match(sig.stderr, /manifest: signature does not verify with the repository certificate/);
  const wl = await inspectCopy('whitelist-sig', (c) => flip(join(c, '.cvmfswhitelist'), (n) => n - 5));
  t.equal(wl.code, 1);
  t.match(wl.stderr, /whitelist: signature does not verify with any of the 1 master key\(s\)/);

  // A data object (content of a file): found by --check-objects, named by its path.
  let damaged = '';
  const obj = await inspectCopy(
    'object',
    async (c) => {
      // The biggest plain object is some file's content; flip a byte in its middle.
      let best = { path: '', size: 0 };
      for (const d of await readdir(join(c, 'data'))) {
        if (d === 'txn') continue;
        for (const f of await readdir(join(c, 'data', d))) {
          if (/[CX]$/.test(f)) continue;
          const s = (await stat(join(c, 'data', d, f))).size;
          if (s > best.size) best = { path: `data/${d}/${f}`, size: s };
        }
      }
      damaged = best.path;
      await flip(join(c, best.path), (n) => n >> 1);
    },
    true,
  );
  t.equal(obj.code, 1);
  t.match(obj.stderr, new RegExp(`1 problem found: .*${damaged}`));

  const cat = await inspectCopy('catalog', async (c) => {
    const manifest = (await readFile(join(c, '.cvmfspublished'), 'latin1')).split('\n');
    const root = manifest.find((l) => l.startsWith('C'))!.slice(1);
    await flip(join(c, 'data', root.slice(0, 2), `${root.slice(2)}C`), (n) => n >> 1);
  });
  t.equal(cat.code, 1);
  t.match(cat.stderr, /data\/[0-9a-f]{2}\/[0-9a-f]{38}C: content hashes to [0-9a-f]{40}, expected [0-9a-f]{40}/);
});

t.test('demo: the README command runs end to end', async (t) => {
  const r = await runCli(['demo'], { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /published demo\.cvmfs-ts\.io revision 1/);
  t.match(r.stdout, /signatures\s+manifest and whitelist verified/);
  t.match(r.stdout, /hash-checked, counters consistent/);
  t.match(r.stdout, /demo: done/);
});
