/**
 * Bad input to `cvmfs-ts publish`: one clear sentence naming the path, a non-zero exit, and the
 * previous revision left intact and verifiable.
 */
import t, { type Test } from 'tap';
import { readFile, writeFile, mkdir, chmod, copyFile, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys, openRepoDir } from '../helpers/repo';
import { verifyRepository } from '../../src/repository/verify';
import { keyFiles } from '../../src/publish/keys';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';

const FQRN = 'errors.cvmfs.io';

/** A repository with one good revision, and a check that it is still the one served. */
async function withGoodRevision(t: Test, repoParent?: string) {
  const dir = await tempDir(t);
  const src = join(dir, 'src');
  const repoDir = join(repoParent ?? dir, 'repo');
  await mkdir(src);
  await writeFile(join(src, 'good.txt'), 'good\n');
  const keys = await testKeys(FQRN);
  const ok = await runCli(['publish', FQRN, src, repoDir, '--keys', keys]);
  t.equal(ok.code, 0, ok.stderr);
  const manifest = await readFile(join(repoDir, '.cvmfspublished'));
  const stillIntact = async () => {
    t.ok((await readFile(join(repoDir, '.cvmfspublished'))).equals(manifest), 'manifest unchanged');
    const repo = await openRepoDir(FQRN, keys, repoDir);
    try {
      t.equal(repo.manifest.revision, 1);
      t.same((await verifyRepository(repo)).problems, [], 'previous revision verifies');
    } finally {
      await repo.close();
    }
  };
  return { dir, src, repoDir, keys, stillIntact };
}

function oneSentence(t: Test, stderr: string, pattern: RegExp) {
  const lines = stderr.trim().split('\n');
  t.equal(lines.length, 1, `one line: ${stderr}`);
  t.match(lines[0], pattern);
}

t.test('name that is not UTF-8', async (t) => {
  const g = await withGoodRevision(t);
  await writeFile(Buffer.concat([Buffer.from(g.src + '/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.txt')]), 'x');
  const r = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', g.keys]);
  t.equal(r.code, 1);
  oneSentence(t, r.stderr, /bad-.*\.txt: file name is not valid UTF-8/);
  await g.stillIntact();
});

t.test('name with a newline', async (t) => {
  const g = await withGoodRevision(t);
  await writeFile(join(g.src, 'two\nlines.txt'), 'x');
  const r = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', g.keys]);
  t.equal(r.code, 1);
  oneSentence(t, r.stderr, /two\\nlines\.txt.*contains a newline/);
  await g.stillIntact();
});

t.test('unreadable source file and directory', async (t) => {
  const g = await withGoodRevision(t);
  await writeFile(join(g.src, 'secret.txt'), 'secret');
  await chmod(join(g.src, 'secret.txt'), 0o000);
  // Root reads anything; drop the capabilities that let it, as an ordinary publisher would be.
  const prefix = ['setpriv', '--inh-caps=-dac_override,-dac_read_search', '--bounding-set=-dac_override,-dac_read_search'];
  const r = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', g.keys], { prefix });
  t.equal(r.code, 1);
  oneSentence(t, r.stderr, /secret\.txt: cannot read \(EACCES\)/);
  await rm(join(g.src, 'secret.txt'));
  await mkdir(join(g.src, 'closed'));
  await chmod(join(g.src, 'closed'), 0o000);
  const d = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', g.keys], { prefix });
  t.equal(d.code, 1);
  oneSentence(t, d.stderr, /closed: cannot list directory \(EACCES\)/);
  await g.stillIntact();
});

t.test('missing and garbled keys', async (t) => {
  const g = await withGoodRevision(t);
  const missing = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', join(g.dir, 'no-keys')]);
  t.equal(missing.code, 1);
  oneSentence(t, missing.stderr, /no-keys\/errors\.cvmfs\.io\.masterkey: cannot read the master key \(ENOENT\)/);

  const garbled = join(g.dir, 'garbled');
  await mkdir(garbled);
  const files = keyFiles(FQRN, g.keys);
  const copies = keyFiles(FQRN, garbled);
  for (const k of ['masterKey', 'masterPublicKey', 'repositoryKey', 'certificate'] as const) await copyFile(files[k], copies[k]);
  await chmod(copies.repositoryKey, 0o600);
  await writeFile(copies.repositoryKey, '-----BEGIN RSA PRIVATE KEY-----\ngarbage\n-----END RSA PRIVATE KEY-----\n');
  const bad = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', garbled]);
  t.equal(bad.code, 1);
  oneSentence(t, bad.stderr, /errors\.cvmfs\.io\.key: not a PEM private key/);

  // A certificate of another key pair.
  const other = join(g.dir, 'other');
  execFileSync(process.execPath, [join(__dirname, '../../bin/cvmfs-ts'), 'keys', 'create', FQRN, other]);
  await chmod(copies.certificate, 0o600);
  await copyFile(keyFiles(FQRN, other).certificate, copies.certificate);
  await copyFile(files.repositoryKey, copies.repositoryKey);
  const mismatch = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', garbled]);
  t.equal(mismatch.code, 1);
  oneSentence(t, mismatch.stderr, /\.crt: certificate does not belong to .*\.key/);
  await g.stillIntact();
});

t.test('full disk: a clear error and the old revision intact', async (t) => {
  const parent = await tempDir(t);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', parent]);
  t.teardown(() => execFileSync('umount', ['-l', parent]));
  const g = await withGoodRevision(t, parent);
  await writeFile(join(g.src, 'big.bin'), pseudoRandomBytes(4 << 20, 3));
  const r = await runCli(['publish', FQRN, g.src, g.repoDir, '--keys', g.keys]);
  t.equal(r.code, 1);
  oneSentence(t, r.stderr, /data\/txn\/.*: cannot write object \(no space left on device\)/);
  await g.stillIntact();
  t.same(
    execFileSync('ls', [join(g.repoDir, 'data', 'txn')], { encoding: 'utf8' }).trim(),
    '',
    'no temporary files left behind',
  );
});

t.test('wrong usage', async (t) => {
  const r = await runCli(['publish', FQRN]);
  t.equal(r.code, 1);
  t.match(r.stderr, /missing required argument/);
  const bad = await runCli(['publish', FQRN, '/nonexistent-src', '/tmp/x', '--chunk-sizes', '1,2']);
  t.not(bad.code, 0);
  t.match(bad.stderr, /MIN,AVG,MAX/);
  const hash = await runCli(['publish', FQRN, '/nonexistent-src', '/tmp/x', '--hash', 'md4', '--keys', await testKeys(FQRN)]);
  t.equal(hash.code, 1);
  t.match(hash.stderr, /unknown hash algorithm 'md4'/);
});
