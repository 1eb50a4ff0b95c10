/**
 * The built-in demo repository's source tree: a little of everything a repository holds
 * (nested catalogs, chunked and empty files, symlinks incl. a variant one, a hardlink, xattrs).
 */
import { mkdir, writeFile, symlink, link } from 'node:fs/promises';
import { join } from 'node:path';
import { setAttribute } from '@napi-rs/xattr';

/** Deterministic pseudo-random bytes (xorshift32), so the demo publishes the same objects each time. */
export function pseudoRandomBytes(size: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

export async function writeDemoTree(root: string): Promise<void> {
  const p = (...parts: string[]) => join(root, ...parts);
  await mkdir(p('software', 'v1', 'bin'), { recursive: true });
  await mkdir(p('software', 'v2', 'bin'), { recursive: true });
  await mkdir(p('data'), { recursive: true });
  await mkdir(p('docs'), { recursive: true });
  await writeFile(p('README'), 'This is the cvmfs-ts demo repository.\n');
  await writeFile(p('empty'), '');
  await writeFile(p('docs', 'notes.txt'), 'Objects are content-addressed, compressed and verified.\n'.repeat(50));
  await writeFile(p('.cvmfsdirtab'), '# every software version is its own catalog\n/software/*\n');
  for (const v of ['v1', 'v2']) {
    await writeFile(p('software', v, 'bin', 'hello'), `#!/bin/sh\necho "hello from ${v}"\n`, { mode: 0o755 });
  }
  await symlink('v2', p('software', 'latest'));
  await symlink('$(DEMO_VERSION:-v1)', p('software', 'selected'));
  await writeFile(p('data', 'random-3M.bin'), pseudoRandomBytes(3 * 1024 * 1024));
  await writeFile(p('data', '.cvmfscatalog'), '');
  await link(p('docs', 'notes.txt'), p('docs', 'notes-hardlink.txt'));
  await setAttribute(p('docs', 'notes.txt'), 'user.purpose', 'demo');
}
