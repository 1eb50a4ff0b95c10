/**
 * The tar reader and writer against GNU tar as the oracle: long names, binary xattrs, devices,
 * base-256 numbers, PAX records; what we write GNU tar lists and extracts identically.
 */
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { readTar, type TarHeader } from '../../src/image/tar-reader';
import { buildTar, tarEntry, tarEnd, type TarWriteEntry } from '../../src/image/tar-writer';
import { tempDir } from '../helpers/repo';

async function readAll(data: Buffer, chunk = 7): Promise<Array<{ h: TarHeader; body: Buffer }>> {
  // Odd chunk sizes: headers and bodies straddle chunk boundaries.
  const pieces = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  const out = [];
  for await (const e of readTar(Readable.from(pieces))) {
    const parts: Buffer[] = [];
    for await (const c of e.body()) parts.push(c);
    out.push({ h: e.header, body: Buffer.concat(parts) });
  }
  return out;
}

const LONG = `${'d'.repeat(150)}/${'ü'.repeat(60)}.txt`;
const CAP = Buffer.from('0100000200040080000000000000000000000000', 'hex');

const ENTRIES: TarWriteEntry[] = [
  { name: 'dir', type: 'directory', mode: 0o1755, uid: 1, gid: 2, mtime: 1_500_000_000 },
  { name: 'dir/file', type: 'file', data: Buffer.from('hello\n'), mode: 0o4755, xattrs: { 'security.capability': CAP, 'user.x': 'ä' } },
  { name: LONG, type: 'file', data: Buffer.alloc(1500, 0x61), uid: 3_000_000, gid: 70_000_000 },
  { name: 'dir/hl', type: 'link', linkname: 'dir/file' },
  { name: 'dir/sl', type: 'symlink', linkname: `../${'t'.repeat(120)}` },
  { name: 'dev', type: 'character-device', devmajor: 4, devminor: 64, mode: 0o620 },
  { name: 'blk', type: 'block-device', devmajor: 8, devminor: 1 },
  { name: 'fifo', type: 'fifo', mtime: 1_600_000_000.5 },
];

t.test('what we write, we read back', async (t) => {
  const got = await readAll(buildTar(ENTRIES));
  t.equal(got.length, ENTRIES.length);
  t.equal(got[0].h.name, 'dir/');
  t.equal(got[0].h.mode, 0o1755);
  t.same(got[1].h.xattrs.get('security.capability'), CAP, 'binary xattr byte for byte');
  t.equal(got[1].h.xattrs.get('user.x')?.toString(), 'ä');
  t.equal(got[1].body.toString(), 'hello\n');
  t.equal(got[2].h.name, LONG, 'long UTF-8 name via PAX path');
  t.same([got[2].h.uid, got[2].h.gid, got[2].body.length], [3_000_000, 70_000_000, 1500]);
  t.equal(got[3].h.type, 'link');
  t.equal(got[4].h.linkname, `../${'t'.repeat(120)}`, 'long link target via PAX linkpath');
  t.same([got[5].h.type, got[5].h.devmajor, got[5].h.devminor, got[5].h.mode], ['character-device', 4, 64, 0o620]);
  t.equal(got[6].h.type, 'block-device');
  t.equal(got[7].h.mtime, 1_600_000_000.5, 'fractional mtime via PAX');
});

t.test('GNU tar lists and extracts what we write', async (t) => {
  const dir = await tempDir(t, 'cvmfs-ts-tar-');
  const file = join(dir, 'w.tar');
  await writeFile(file, buildTar(ENTRIES.filter((e) => e.type !== 'block-device' && e.type !== 'character-device')));
  const list = execFileSync('tar', ['--numeric-owner', '-tvf', file], { encoding: 'utf8' });
  t.match(list, /drwxr-xr-t 1\/2 .* dir\//);
  t.match(list, new RegExp(`3000000/70000000 +1500 .* ${LONG}`));
  t.match(list, /dir\/hl link to dir\/file/);
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '-xf', file, '-C', dir]);
  t.equal(execFileSync('getcap', [join(dir, 'dir/file')], { encoding: 'utf8' }).trim().split(/\s+/).pop(), 'cap_net_bind_service,cap_setfcap=ep');
  t.equal((await readFile(join(dir, LONG))).length, 1500);
});

t.test('GNU tar formats we read: gnu (L/K long names, base-256), posix, v7', async (t) => {
  const dir = await tempDir(t, 'cvmfs-ts-tar-');
  const src = join(dir, 'src');
  execFileSync('sh', ['-ec', `mkdir -p ${src}/${'x'.repeat(120)} && cd ${src} && printf abc > ${'x'.repeat(120)}/${'y'.repeat(120)} && ln -s ${'z'.repeat(130)} sl && chown 2097152:3 sl -h && printf q > short`]);
  for (const format of ['gnu', 'posix', 'oldgnu']) {
    const file = join(dir, `${format}.tar`);
    execFileSync('tar', [`--format=${format}`, '-cf', file, '-C', src, '.']);
    const got = await readAll(await readFile(file), 512 * 3 + 1);
    const names = got.map((e) => e.h.name).sort();
    t.same(names, ['./', './short', './sl', `./${'x'.repeat(120)}/`, `./${'x'.repeat(120)}/${'y'.repeat(120)}`], `${format}: names`);
    const sl = got.find((e) => e.h.name === './sl')!;
    t.equal(sl.h.linkname, 'z'.repeat(130), `${format}: long link target`);
    t.equal(sl.h.uid, 2097152, `${format}: uid beyond 7 octal digits`);
    t.equal(got.find((e) => e.h.name.endsWith('y'.repeat(120)))!.body.toString(), 'abc');
  }
  const v7 = join(dir, 'v7.tar');
  execFileSync('tar', ['--format=v7', '-cf', v7, '-C', src, 'short']);
  t.same((await readAll(await readFile(v7))).map((e) => [e.h.name, e.body.toString()]), [['short', 'q']]);
});

t.test('broken archives', async (t) => {
  const good = buildTar([{ name: 'f', type: 'file', data: Buffer.alloc(1000, 1) }]);
  const badSum = Buffer.from(good);
  badSum[10] ^= 1;
  await t.rejects(readAll(badSum), { code: 'E_FORMAT', message: /checksum/ });
  await t.rejects(readAll(good.subarray(0, 700)), { code: 'E_FORMAT', message: /truncated/ });
  await t.rejects(readAll(good.subarray(0, 300)), { code: 'E_FORMAT', message: /truncated header/ });
  const pax = Buffer.concat([tarEntry({ name: 'f', type: 'file', xattrs: { 'user.a': 'b' } }), tarEnd()]);
  const at = pax.indexOf('user.a');
  pax.write('9', at - 16); // spoil the record length digits
  await t.rejects(readAll(pax), { code: 'E_FORMAT' });
  t.same(await readAll(good.subarray(0, 1536)), [{ h: (await readAll(good))[0].h, body: Buffer.alloc(1000, 1) }], 'missing end blocks tolerated');
});
