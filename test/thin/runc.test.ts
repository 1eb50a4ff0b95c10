/**
 * The README's "thin mount + runc" recipe, for real: a busybox image ingested into a repository,
 * served, thin-mounted as a bundle's rootfs, and run with Debian's runc.
 */
import t from 'tap';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { mountDaemonPid, quietly, unmountDaemon, writeConfigRoot } from '../helpers/mount';
import { busyboxEntries, file, whiteout, withParents, writeOciLayout } from '../helpers/oci';

const run = promisify(execFile);
const FQRN = 'runc.cvmfs-ts.test';

t.test('thin mount as a runc bundle rootfs', async (t) => {
  const work = await tempDir(t);
  const keys = await testKeys(FQRN);
  const repoDir = join(work, 'repo');
  const image = await writeOciLayout(join(work, 'layout'), {
    tag: 'v1',
    layers: [
      { entries: [...busyboxEntries(), file('etc/motd', 'from layer 1\n'), file('etc/secret', 'x\n')] },
      { compression: 'zstd', entries: withParents([file('etc/motd', 'from layer 2\n'), whiteout('etc/secret')]) },
    ],
  });
  const out = join(work, 'out');
  let r = await runCli(['image', 'ingest', `oci:${image.dir}:v1`, '--repo', repoDir, '--fqrn', FQRN, '--keys', keys, '--output', out], { timeoutMs: 300_000 });
  t.equal(r.code, 0, r.stderr);

  const served = await serveRepository(t, repoDir);
  const configRoot = await writeConfigRoot(work, { fqrn: FQRN, serverUrl: served.url, publicKey: join(keys, `${FQRN}.pub`) }, join(work, 'cache'));
  const cvmfsRoot = join(work, 'cvmfs');
  const bundle = join(work, 'bundle');
  const rootfs = join(bundle, 'rootfs');
  const container = `cvmfs-ts-test-${process.pid}`;
  let daemon = 0;
  t.teardown(async () => {
    quietly('runc', ['delete', '--force', container]);
    quietly('umount', ['-l', rootfs]);
    await unmountDaemon(join(cvmfsRoot, FQRN), daemon);
  });
  r = await runCli(['thin', 'mount', join(out, 'thin-image'), rootfs, '--upper', join(work, 'rw'), '--cvmfs-root', cvmfsRoot, '--config-root', configRoot, '--state', join(work, 'state')], { timeoutMs: 120_000 });
  t.equal(r.code, 0, r.stderr);
  daemon = await mountDaemonPid(join(cvmfsRoot, FQRN));

  await run('runc', ['spec'], { cwd: bundle });
  const spec = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8')) as { process: { terminal: boolean; args: string[] }; root: { readonly: boolean } };
  spec.process.terminal = false;
  spec.process.args = ['/bin/sh', '-c', 'cat /etc/motd; ls /etc; echo written > /tmp/out; echo done'];
  spec.root.readonly = false;
  await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
  const { stdout } = await run('runc', ['run', container], { cwd: bundle, timeout: 60_000 });
  t.match(stdout, /^from layer 2\n/, 'the top layer wins');
  t.notMatch(stdout, /secret/, 'the whited-out file is not there');
  t.match(stdout, /done\n$/);
  t.equal(await readFile(join(work, 'rw', 'upper', 'tmp', 'out'), 'utf8'), 'written\n', "the container's write is in the upper directory");
  r = await runCli(['thin', 'umount', rootfs, '--state', join(work, 'state')]);
  t.equal(r.code, 0, r.stderr);
});
