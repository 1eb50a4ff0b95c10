/**
 * Source trees for publisher tests: every kind of entry a repository can hold, built with real
 * syscalls (mknod/mkfifo/setfattr need root, which tests have).
 */
import { mkdir, writeFile, symlink, link, utimes, chmod } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setAttribute } from '@napi-rs/xattr';
import { pseudoRandomBytes } from '../../src/demo/demo-tree';

export const FIXED_MTIME = 1_600_000_000;

/** Small chunk sizes so a 1.5 MiB file is chunked (the real fixture used the same). */
export const SMALL_CHUNKS = { min: 65536, avg: 131072, max: 262144 };

/** a.txt, dir/b.txt and nested/c.txt, nested/ being a nested catalog (.cvmfscatalog). */
export async function writeNestedTree(root: string): Promise<void> {
  await mkdir(join(root, 'dir'), { recursive: true });
  await mkdir(join(root, 'nested'));
  await writeFile(join(root, 'a.txt'), 'file a\n');
  await writeFile(join(root, 'dir', 'b.txt'), 'file b\n');
  await writeFile(join(root, 'nested', '.cvmfscatalog'), '');
  await writeFile(join(root, 'nested', 'c.txt'), 'file c in a nested catalog\n');
}

export async function writeRichTree(root: string): Promise<void> {
  const p = (...parts: string[]) => join(root, ...parts);
  await mkdir(p('dir with space', 'ñandú'), { recursive: true });
  await mkdir(p('nested', 'inner'), { recursive: true });
  await mkdir(p('nested', 'plain'), { recursive: true });
  await mkdir(p('by-dirtab', 'a', 'deeper'), { recursive: true });
  await mkdir(p('by-dirtab', 'b'), { recursive: true });
  await mkdir(p('hardlinks'), { recursive: true });
  await mkdir(p('special'), { recursive: true });
  let deep = p('deep');
  for (let i = 1; i <= 12; i++) deep = join(deep, `d${String(i).padStart(2, '0')}`);
  await mkdir(deep, { recursive: true });
  await writeFile(join(deep, 'leaf.txt'), 'at the bottom\n');

  await writeFile(p('empty.txt'), '');
  await writeFile(p('one-byte.txt'), 'x');
  await writeFile(p('text.txt'), 'Hello, CernVM-FS!\n');
  await writeFile(p('compressible.txt'), 'abcdefgh'.repeat(40_000));
  await writeFile(p('random-1.5M.bin'), pseudoRandomBytes(1_572_864, 7));
  await writeFile(p('run.sh'), '#!/bin/sh\necho run\n', { mode: 0o755 });
  await writeFile(p('readonly.txt'), 'do not touch\n');
  await chmod(p('readonly.txt'), 0o444);
  await writeFile(p('name with spaces.txt'), 'spaces\n');
  await writeFile(p('ünïcødé-名前-файл.txt'), 'unicode\n');
  await writeFile(p('dir with space', 'ñandú', 'inner file.txt'), 'inner\n');
  await writeFile(p('.cvmfsdirtab'), '# catalogs by rule\n/by-dirtab/*\n! */b\n');
  await writeFile(p('by-dirtab', 'a', 'deeper', 'x.txt'), 'x\n');
  await writeFile(p('by-dirtab', 'b', 'y.txt'), 'y\n');
  await writeFile(p('nested', '.cvmfscatalog'), '');
  await writeFile(p('nested', 'inner', '.cvmfscatalog'), '');
  await writeFile(p('nested', 'a.txt'), 'nested a\n');
  await writeFile(p('nested', 'inner', 'b.txt'), 'nested inner b\n');
  await writeFile(p('nested', 'plain', 'c.txt'), 'nested plain c\n');

  await symlink('text.txt', p('link-rel'));
  await symlink('dir with space/ñandú', p('link-rel-dir'));
  await symlink('/cvmfs/test.cvmfs.io/text.txt', p('link-abs'));
  await symlink('does/not/exist', p('link-dangling'));
  await symlink('$(TEST_VAR:-text.txt)', p('link-variant'));

  await writeFile(p('hardlinks', 'original.txt'), 'linked content\n');
  await link(p('hardlinks', 'original.txt'), p('hardlinks', 'second-name.txt'));
  await writeFile(p('hardlinks', 'not-a-link.txt'), 'linked content\n');

  await writeFile(p('xattr.txt'), 'with extended attributes\n');
  await setAttribute(p('xattr.txt'), 'user.color', 'blue');
  await setAttribute(p('xattr.txt'), 'user.binary', Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80, 0x0a]));
  await setAttribute(p('nested', 'plain'), 'user.on-a-dir', 'yes');

  execFileSync('mkfifo', [p('special', 'fifo')]);
  execFileSync('mknod', [p('special', 'null-like'), 'c', '1', '3']);
  execFileSync('mknod', [p('special', 'block'), 'b', '7', '200']);

  await setMtimes(root);
}

/** Gives every entry (not symlinks themselves) a fixed mtime, deepest first. */
export async function setMtimes(root: string, mtime = FIXED_MTIME): Promise<void> {
  execFileSync('find', [root, '-depth', '-exec', 'touch', '-h', '-d', `@${mtime}`, '{}', '+']);
  await utimes(root, mtime, mtime);
}
