/**
 * unpackLayer: the unpacked tree keeps owners, modes (setuid after chown), mtimes (directories too),
 * xattrs (binary security.capability), hardlinks, devices and FIFOs; OCI whiteouts become 0:0 character
 * devices and opaque markers the trusted.overlay.opaque xattr; hostile member names are refused with a
 * SourceError naming the member; a stream that fails verification at its end fails the unpack.
 */
import t, { type Test } from 'tap';
import { lstat, readFile, readlink, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, pipeline } from 'node:stream';
import { execFileSync } from 'node:child_process';
import { getAttribute, listAttributes } from '@napi-rs/xattr';
import { unpackLayer, OVERLAY_OPAQUE_XATTR } from '../../src/image/layer-unpack';
import { VerifyingStream } from '../../src/image/digest';
import { CvmfsError } from '../../src/errors';
import { tempDir } from '../helpers/repo';
import {
  buildLayer,
  device,
  dir,
  fifo,
  file,
  fileCapability,
  hardlink,
  opaque,
  raw,
  symlink,
  whiteout,
  withParents,
  FIXED_MTIME,
  type Compression,
  type LayerEntry,
} from '../helpers/oci';

const CAP = fileCapability(10, 31); // cap_net_bind_service + cap_setfcap: bytes ≥ 0x80 in the value
const BINARY = Buffer.from([0x00, 0xff, 0x80, 0xfe, 0x0a]);

const RICH: LayerEntry[] = [
  dir('.', { mode: 0o755, mtime: FIXED_MTIME - 50 }),
  dir('bin', { mode: 0o755, mtime: FIXED_MTIME - 1 }),
  file('bin/ping', 'ELF-ish\n', { mode: 0o4755, uid: 0, gid: 0, xattrs: { 'security.capability': CAP } }),
  file('bin/owned', 'owned by 1000:2000\n', { mode: 0o2750, uid: 1000, gid: 2000, mtime: FIXED_MTIME - 100 }),
  hardlink('bin/ping-hl', 'bin/ping'),
  symlink('bin/sh', 'busybox', { uid: 7, gid: 8, mtime: FIXED_MTIME - 7 }),
  dir('tmp', { mode: 0o1777, mtime: FIXED_MTIME - 3 }),
  dir('etc', { mode: 0o750, uid: 3, gid: 4, mtime: FIXED_MTIME - 5, xattrs: { 'user.dir': 'attr' } }),
  file('etc/secret', 'x', { mode: 0o600, xattrs: { 'user.binary': BINARY, 'trusted.overlay.opaque': 'y' } }),
  dir('dev', { mtime: FIXED_MTIME - 9 }),
  device('char', 'dev/null', 1, 3, { mode: 0o666 }),
  device('block', 'dev/loop9', 7, 9, { mode: 0o660, gid: 6 }),
  fifo('dev/pipe', { mode: 0o620 }),
  dir('var', { mtime: FIXED_MTIME - 11 }),
  opaque('var'),
  whiteout('var/gone'),
  whiteout('etc/removed'),
  // Missing parent: made implicitly for the whiteout.
  whiteout('usr/lib/old.so'),
  // The layer has the name itself: its whiteout must not replace it (either order).
  file('etc/kept', 'kept\n'),
  whiteout('etc/kept'),
  whiteout('etc/kept2'),
  file('etc/kept2', 'kept2\n'),
  // A later member replaces an earlier one, as tar does.
  file('etc/twice', 'first\n'),
  file('etc/twice', 'second\n', { mode: 0o640 }),
];

async function unpack(t: Test, entries: readonly LayerEntry[], compression: Compression = 'gzip') {
  const layer = buildLayer({ entries, compression });
  const dest = join(await tempDir(t, 'cvmfs-ts-unpack-'), 'layerfs');
  const stats = await unpackLayer(Readable.from([layer.blob]), dest, { mediaType: layer.mediaType, what: layer.digest });
  return { layer, dest, stats };
}

async function rejectsMember(t: Test, entries: readonly LayerEntry[], member: string, pattern: RegExp): Promise<void> {
  try {
    await unpack(t, entries);
    t.fail(`${member}: unpacked`);
  } catch (e) {
    t.equal(CvmfsError.is(e) ? e.code : String(e), 'E_SOURCE', `${member}: E_SOURCE`);
    t.match((e as Error).message, member, `${member}: the error names the member`);
    t.match((e as Error).message, pattern, `${member}: why`);
  }
}

for (const compression of ['gzip', 'zstd', 'none'] as const) {
  t.test(`a rich layer (${compression}) keeps metadata; whiteouts become overlay-native`, async (t) => {
    const { layer, dest, stats } = await unpack(t, RICH, compression);
    t.equal(stats.compression, compression);
    t.equal(stats.uncompressedDigest, layer.diffId, 'uncompressedDigest is the diff_id');
    t.equal(stats.bytes, layer.tar.length, 'bytes = uncompressed tar length');
    t.equal(stats.whiteouts, 4, 'four whiteouts made (two skipped: the layer has the name)');
    t.equal(stats.opaqueDirs, 1);

    const ping = await lstat(join(dest, 'bin/ping'));
    t.equal(ping.mode & 0o7777, 0o4755, 'setuid kept (applied after chown)');
    t.equal(ping.nlink, 2, 'hardlink shares the inode');
    t.equal((await lstat(join(dest, 'bin/ping-hl'))).ino, ping.ino);
    t.same(await getAttribute(join(dest, 'bin/ping'), 'security.capability'), CAP, 'binary file capability byte for byte');
    t.match(execFileSync('getcap', [join(dest, 'bin/ping')], { encoding: 'utf8' }), /cap_net_bind_service,cap_setfcap=ep/);

    const owned = await lstat(join(dest, 'bin/owned'));
    t.same([owned.uid, owned.gid, owned.mode & 0o7777, owned.mtimeMs / 1000], [1000, 2000, 0o2750, FIXED_MTIME - 100]);
    const sh = await lstat(join(dest, 'bin/sh'));
    t.ok(sh.isSymbolicLink());
    t.equal(await readlink(join(dest, 'bin/sh')), 'busybox');
    t.same([sh.uid, sh.gid, sh.mtimeMs / 1000], [7, 8, FIXED_MTIME - 7], 'symlink owner and mtime (lchown, lutimes)');

    t.same(await getAttribute(join(dest, 'etc/secret'), 'user.binary'), BINARY);
    t.notOk((await listAttributes(join(dest, 'etc/secret'))).includes('trusted.overlay.opaque'), 'trusted.overlay.* from the tar dropped');
    t.equal((await getAttribute(join(dest, 'etc'), 'user.dir'))?.toString(), 'attr', 'directory xattr');

    for (const [p, major, minor, kind] of [['dev/null', 1, 3, 'char'], ['dev/loop9', 7, 9, 'block']] as const) {
      const st = await lstat(join(dest, p));
      t.ok(kind === 'char' ? st.isCharacterDevice() : st.isBlockDevice(), `${p} is a ${kind} device`);
      t.same([Math.floor(st.rdev / 256), st.rdev % 256], [major, minor], `${p} ${major}:${minor}`);
    }
    t.equal((await lstat(join(dest, 'dev/loop9'))).gid, 6);
    t.equal((await lstat(join(dest, 'dev/null'))).mode & 0o7777, 0o666);
    const pipe = await lstat(join(dest, 'dev/pipe'));
    t.ok(pipe.isFIFO());
    t.equal(pipe.mode & 0o7777, 0o620);

    for (const p of ['var/gone', 'etc/removed', 'usr/lib/old.so']) {
      const st = await lstat(join(dest, p));
      t.ok(st.isCharacterDevice() && st.rdev === 0, `${p} is a 0:0 whiteout device`);
    }
    t.equal((await getAttribute(join(dest, 'var'), OVERLAY_OPAQUE_XATTR))?.toString(), 'y', 'opaque directory');
    const names = [...(await readdir(join(dest, 'var'))), ...(await readdir(join(dest, 'etc'))), ...(await readdir(join(dest, 'usr/lib')))];
    t.notOk(names.some((n) => n.startsWith('.wh.')), 'no .wh. file left');
    t.equal(await readFile(join(dest, 'etc/kept'), 'utf8'), 'kept\n', 'own file wins over its whiteout (file first)');
    t.equal(await readFile(join(dest, 'etc/kept2'), 'utf8'), 'kept2\n', 'own file wins over its whiteout (whiteout first)');
    t.equal(await readFile(join(dest, 'etc/twice'), 'utf8'), 'second\n', 'later member replaces the earlier');
    t.equal((await lstat(join(dest, 'etc/twice'))).mode & 0o777, 0o640);

    // Directory metadata is applied last, after content changed the mtimes.
    for (const [p, mode, mtime] of [['bin', 0o755, FIXED_MTIME - 1], ['tmp', 0o1777, FIXED_MTIME - 3], ['etc', 0o750, FIXED_MTIME - 5], ['dev', 0o755, FIXED_MTIME - 9], ['var', 0o755, FIXED_MTIME - 11], ['', 0o755, FIXED_MTIME - 50]] as const) {
      const st = await lstat(join(dest, p));
      t.same([st.mode & 0o7777, st.mtimeMs / 1000], [mode, mtime], `directory /${p} mode and mtime`);
    }
    t.same([(await lstat(join(dest, 'etc'))).uid, (await lstat(join(dest, 'etc'))).gid], [3, 4], 'directory owner');
  });
}

t.test('GNU tar as the oracle: a layer made by `tar --xattrs` unpacks like the source tree', async (t) => {
  const top = await tempDir(t, 'cvmfs-ts-gnutar-');
  const src = join(top, 'src');
  execFileSync('sh', ['-ec', `
    mkdir -p ${src}/a/b && cd ${src}
    printf 'hello' > a/f && ln a/f a/b/hl && ln -s ../f a/b/sl && mkfifo a/p
    setcap cap_setfcap,cap_net_bind_service=ep a/f && setfattr -n user.bin -v 0xff80fe a/f
    chown 12:34 a/b/sl -h && chmod 4711 a/f
    mkdir -p long/${'d'.repeat(120)} && echo x > long/${'d'.repeat(120)}/${'f'.repeat(110)}
    find . -exec touch -h -d @1500000000 {} +
    tar --xattrs --xattrs-include='*' --numeric-owner -czf ${top}/layer.tgz .
  `]);
  const dest = join(top, 'out');
  const stats = await unpackLayer(Readable.from([await readFile(join(top, 'layer.tgz'))]), dest);
  t.equal(stats.compression, 'gzip');
  const list = (d: string) => execFileSync('sh', ['-c', `cd ${d} && find . -printf '%p %y %m %U:%G %s %n %l %T@\\n' | sort && getfattr -R -d -m - -h --absolute-names . 2>/dev/null | sort`], { encoding: 'utf8' });
  // The root directory's mtime changed when the tarball was written into `top`, not `src`: compare the rest.
  const strip = (s: string) => s.split('\n').filter((l) => !l.startsWith('. d')).join('\n');
  t.equal(strip(list(dest)), strip(list(src)), 'same names, types, modes, owners, sizes, link counts, targets, mtimes, xattrs');
});

t.test('hostile members are refused, naming the member', async (t) => {
  await rejectsMember(t, [raw({ name: '../escape', type: 'file', data: Buffer.from('x') })], '../escape', /'\.\.'/);
  await rejectsMember(t, [raw({ name: 'a/../../escape', type: 'file', data: Buffer.from('x') })], 'a/../../escape', /'\.\.'/);
  await rejectsMember(t, [raw({ name: '/etc/passwd', type: 'file', data: Buffer.from('x') })], '/etc/passwd', /absolute/);
  await rejectsMember(t, [symlink('lnk', '/tmp'), file('lnk/evil', 'x')], 'lnk/evil', /through the symlink lnk/);
  await rejectsMember(t, [symlink('lnk', '.'), whiteout('lnk/x')], 'lnk/.wh.x', /through the symlink lnk/);
  await rejectsMember(t, [symlink('lnk', '/etc'), opaque('lnk')], 'lnk/.wh..wh..opq', /through the symlink lnk/);
  await rejectsMember(t, [hardlink('hl', '/etc/shadow')], 'hl', /absolute/);
  await rejectsMember(t, [hardlink('hl', '../outside')], 'hl', /'\.\.'/);
  await rejectsMember(t, [hardlink('hl', 'not/in/layer')], 'hl', /not a file of this layer/);
  await rejectsMember(t, [dir('d'), hardlink('hl', 'd')], 'hl', /not a file of this layer/);
  await rejectsMember(t, [file('f', 'x'), file('f/g', 'y')], 'f/g', /f is not a directory/);
  await rejectsMember(t, [whiteout('x/.wh.y')], 'x/.wh..wh.y', /invalid whiteout/);
});

t.test('a symlink replaced by a directory is no longer a way out', async (t) => {
  const { dest } = await unpack(t, [symlink('d', '/tmp'), dir('d'), file('d/f', 'inside')]);
  t.ok((await lstat(join(dest, 'd'))).isDirectory());
  t.equal(await readFile(join(dest, 'd/f'), 'utf8'), 'inside');
});

t.test('queued nodes under a directory that a symlink replaces do not follow the symlink', async (t) => {
  const outside = await tempDir(t, 'cvmfs-ts-outside-');
  const { dest } = await unpack(t, [dir('d'), whiteout('d/x'), fifo('d/p'), symlink('d', outside), file('after', '1')]);
  t.same(await readdir(outside), [], 'nothing made outside');
  t.ok((await lstat(join(dest, 'd'))).isSymbolicLink());
});

t.test('implicit parents are made; a directory replaced by a file drops what was below', async (t) => {
  const { dest, stats } = await unpack(t, [file('a/b/c', 'deep'), dir('x'), file('x/y', '1'), file('x', 'now a file')]);
  t.equal(await readFile(join(dest, 'a/b/c'), 'utf8'), 'deep');
  t.equal(await readFile(join(dest, 'x'), 'utf8'), 'now a file');
  t.equal(stats.files, 3);
});

t.test('many whiteouts and devices are made in batches', async (t) => {
  const entries = withParents(Array.from({ length: 1500 }, (_, i) => (i % 3 === 0 ? fifo(`d${i % 7}/p${i}`) : whiteout(`d${i % 7}/w${i}`))));
  const { dest, stats } = await unpack(t, entries);
  t.equal(stats.whiteouts, 1000);
  t.ok((await lstat(join(dest, 'd1/w1'))).isCharacterDevice());
  t.ok((await lstat(join(dest, 'd0/p0'))).isFIFO());
  t.equal((await readdir(join(dest, 'd4'))).length, Math.ceil(1500 / 7) - (1500 % 7 <= 4 ? 1 : 0));
});

t.test('a stream failing its digest check at the end fails the unpack', async (t) => {
  for (const compression of ['gzip', 'zstd', 'none'] as const) {
    const layer = buildLayer({ entries: withParents([file('a/f', 'content')]), compression });
    const wrong = { digest: `sha256:${'0'.repeat(64)}` as const, size: layer.size };
    const verified = new VerifyingStream(wrong, 'test blob');
    pipeline(Readable.from([layer.blob]), verified, () => {});
    const dest = join(await tempDir(t), 'l');
    await t.rejects(unpackLayer(verified, dest), { code: 'E_HASH_MISMATCH' }, `${compression}: E_HASH_MISMATCH`);
  }
});

t.test('truncated and garbage layers are format errors', async (t) => {
  const layer = buildLayer({ entries: [file('f', Buffer.alloc(5000, 1))], compression: 'none' });
  await t.rejects(unpackLayer(Readable.from([layer.tar.subarray(0, 2000)]), join(await tempDir(t), 'l')), { code: 'E_FORMAT' }, 'truncated');
  const garbage = Buffer.alloc(1024, 0x41);
  await t.rejects(unpackLayer(Readable.from([garbage]), join(await tempDir(t), 'l')), { code: 'E_FORMAT' }, 'garbage header');
  const dir2 = await tempDir(t);
  await writeFile(join(dir2, 'x'), '');
  const gz = buildLayer({ entries: [file('f', 'x')], compression: 'gzip' }).blob;
  await t.rejects(unpackLayer(Readable.from([gz.subarray(0, gz.length - 10)]), join(dir2, 'l')), 'truncated gzip fails');
});
