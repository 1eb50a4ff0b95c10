/**
 * End to end, without containerd: `image ingest` of an OCI layout into a repository, the repository
 * served over HTTP, and `thin mount` of the thin image, which mounts the repository on demand and
 * stacks its layer directories with overlayfs. Checks the overlay semantics a container relies on
 * (whiteouts, opaque directories, replaced files, capabilities, hardlinks, writes go to the upper
 * directory only), layer reuse on re-ingest, and a 60-layer image.
 */
import t from 'tap';
import { lstat, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { getAttribute } from '@napi-rs/xattr';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { mountDaemonPid, quietly, unmountDaemon, writeConfigRoot } from '../helpers/mount';
import { dir, file, fileCapability, hardlink, opaque, symlink, whiteout, withParents, writeOciLayout } from '../helpers/oci';
import { parseThinJson, layerPath } from '../../src/image/thin-json';
import { isMountpoint } from '../../src/system/mounts';

const FQRN = 'images.cvmfs-ts.test';
const CAP_NET_BIND_SERVICE = 10;

t.test('image ingest → serve → thin mount: overlay semantics over the CVMFS layers', async (t) => {
  const work = await tempDir(t);
  const keys = await testKeys(FQRN);
  const repoDir = join(work, 'repo');
  const base = await writeOciLayout(join(work, 'base'), {
    tag: 'v1',
    runConfig: { Cmd: ['/bin/tool'], Env: ['PATH=/bin'] },
    layers: [
      {
        compression: 'gzip',
        entries: withParents([
          file('etc/motd', 'base\n'),
          file('etc/gone', 'deleted by layer 2\n'),
          file('etc/replaced', 'old\n'),
          dir('var/cache'),
          file('var/cache/old-a', 'a'),
          file('var/cache/old-b', 'b'),
          file('bin/tool', '#!/bin/sh\necho tool\n', { mode: 0o755, xattrs: { 'security.capability': fileCapability(CAP_NET_BIND_SERVICE) } }),
          hardlink('bin/tool-link', 'bin/tool'),
          symlink('bin/alias', 'tool'),
        ]),
      },
      { compression: 'zstd', entries: withParents([whiteout('etc/gone'), file('etc/replaced', 'new\n'), opaque('var/cache'), file('var/cache/fresh', 'f')]) },
    ],
  });
  const tall = await writeOciLayout(join(work, 'tall'), {
    tag: 'v1',
    layers: Array.from({ length: 60 }, (_, i) => ({
      compression: 'gzip' as const,
      entries: withParents([file(`layers/${String(i).padStart(2, '0')}`, `${i}\n`), file('top', `layer ${i}\n`)]),
    })),
  });

  const ingest = async (layout: string, out: string) => {
    const r = await runCli(['image', 'ingest', `oci:${layout}:v1`, '--repo', repoDir, '--fqrn', FQRN, '--keys', keys, '--output', out, '--json'], { timeoutMs: 300_000 });
    t.equal(r.code, 0, `ingest ${layout}: ${r.stderr}`);
    return JSON.parse(r.stdout) as { revision: number; layers: { digest: string; status: string }[]; thinJsonPath: string; thinImageDir: string };
  };
  const first = await ingest(base.dir, join(work, 'out-base'));
  t.equal(first.revision, 1);
  t.same(first.layers.map((l) => l.status), ['ingested', 'ingested']);
  const thin = parseThinJson(await readFile(first.thinJsonPath, 'utf8'));
  t.same(thin.layers.map((l) => `sha256:${l.digest}`), base.layers.map((l) => l.digest), 'thin.json names the compressed layer digests, base first');
  t.ok(thin.layers.every((l) => l.repository === FQRN && l.path === layerPath(l.digest)), 'DUCC urls');

  const again = await ingest(base.dir, join(work, 'out-again'));
  t.equal(again.revision, 2);
  t.same(again.layers.map((l) => l.status), ['present', 'present'], 're-ingest downloads and unpacks nothing');
  const tallResult = await ingest(tall.dir, join(work, 'out-tall'));
  t.equal(tallResult.revision, 3);
  t.equal(tallResult.layers.filter((l) => l.status === 'ingested').length, 60);

  const served = await serveRepository(t, repoDir);
  const configRoot = await writeConfigRoot(work, { fqrn: FQRN, serverUrl: served.url, publicKey: join(keys, `${FQRN}.pub`) }, join(work, 'cache'));
  const cvmfsRoot = join(work, 'cvmfs');
  const repoMount = join(cvmfsRoot, FQRN);
  const state = join(work, 'state');
  const targets = [join(work, 'rootfs'), join(work, 'rootfs-tall')];
  let daemon = 0;
  t.teardown(async () => {
    for (const target of targets) quietly('umount', ['-l', target]);
    await unmountDaemon(repoMount, daemon);
  });

  const [target, tallTarget] = targets as [string, string];
  const thinMount = async (image: string, to: string) => {
    const r = await runCli(['thin', 'mount', image, to, '--cvmfs-root', cvmfsRoot, '--config-root', configRoot, '--state', state, '--json'], { timeoutMs: 120_000 });
    t.equal(r.code, 0, `thin mount: ${r.stderr}`);
    return JSON.parse(r.stdout) as { upperDir: string; optionBytes: number; lowerDirs: string[] };
  };
  const mounted = await thinMount(first.thinImageDir, target);
  t.ok(await isMountpoint(repoMount), 'the repository was mounted on demand');
  daemon = await mountDaemonPid(repoMount);
  t.ok(await isMountpoint(target), 'the thin image is mounted');
  t.same(mounted.lowerDirs, [...thin.layers].reverse().map((l) => join(repoMount, l.path)), 'top layer first');

  await t.test('the layers in the repository carry overlay-native whiteouts', async (t) => {
    const [l1, l2] = thin.layers.map((l) => join(repoMount, l.path)) as [string, string];
    const gone = await lstat(join(l2, 'etc/gone'));
    t.ok(gone.isCharacterDevice() && gone.rdev === 0, '.wh.gone became a 0:0 character device');
    t.equal((await getAttribute(join(l2, 'var/cache'), 'trusted.overlay.opaque'))?.toString(), 'y', 'opaque marker became the xattr');
    t.notOk((await readdir(l2, { recursive: true })).some((n) => String(n).includes('.wh.')), 'no .wh. files left');
    t.notOk((await readdir(l1)).includes('.cvmfscatalog'), 'a layer root shows no catalog marker');
  });

  await t.test('the container view', async (t) => {
    t.equal(await readFile(join(target, 'etc/motd'), 'utf8'), 'base\n');
    t.equal(await readFile(join(target, 'etc/replaced'), 'utf8'), 'new\n', 'the upper layer replaces a file');
    t.notOk((await readdir(join(target, 'etc'))).includes('gone'), 'a whited-out file is not listed');
    await t.rejects(stat(join(target, 'etc/gone')), { code: 'ENOENT' }, 'nor reachable');
    t.same(await readdir(join(target, 'var/cache')), ['fresh'], 'an opaque directory hides the lower content');
    const tool = await stat(join(target, 'bin/tool'));
    t.equal(tool.mode & 0o7777, 0o755);
    t.equal((await stat(join(target, 'bin/tool-link'))).ino, tool.ino, 'hardlinks share an inode');
    t.same(await getAttribute(join(target, 'bin/tool'), 'security.capability'), fileCapability(CAP_NET_BIND_SERVICE), 'file capabilities kept');
    t.equal(await readFile(join(target, 'bin/alias'), 'utf8'), '#!/bin/sh\necho tool\n', 'symlink');
  });

  await t.test('writes land in the upper directory only', async (t) => {
    await writeFile(join(target, 'etc/written'), 'w\n');
    await writeFile(join(target, 'etc/motd'), 'changed\n');
    t.equal(await readFile(join(mounted.upperDir, 'etc/written'), 'utf8'), 'w\n');
    t.equal(await readFile(join(mounted.upperDir, 'etc/motd'), 'utf8'), 'changed\n', 'copy-up');
    for (const layer of thin.layers) {
      t.equal(await readFile(join(repoMount, layer.path, 'etc/motd'), 'utf8').catch(() => 'absent'), layer === thin.layers[0] ? 'base\n' : 'absent', 'the CVMFS layer is untouched');
    }
  });

  await t.test('60 layers mount (lowerdir via short links)', async (t) => {
    const tallMount = await thinMount(tallResult.thinImageDir, tallTarget);
    t.equal(tallMount.lowerDirs.length, 60);
    t.ok(tallMount.lowerDirs.join(':').length > 4096, 'the full paths would not fit into one page of mount options');
    t.ok(tallMount.optionBytes < 4096, `the option string has ${tallMount.optionBytes} bytes`);
    t.equal((await readdir(join(tallTarget, 'layers'))).length, 60, 'every layer contributes');
    t.equal(await readFile(join(tallTarget, 'top'), 'utf8'), 'layer 59\n', 'the top layer wins');
    const r = await runCli(['thin', 'umount', tallTarget, '--state', state, '--clean']);
    t.equal(r.code, 0, r.stderr);
    t.notOk(await isMountpoint(tallTarget));
  });

  const r = await runCli(['thin', 'umount', target, '--state', state]);
  t.equal(r.code, 0, r.stderr);
  t.notOk(await isMountpoint(target), 'thin umount');
  t.equal(await readFile(join(mounted.upperDir, 'etc/written'), 'utf8'), 'w\n', 'the upper directory is kept without --clean');
});
