/**
 * Short names for lower directories, like docker's overlay2 `l/` directory: ROOT/l/<name> is a
 * symlink to a snapshot's fs or to a CVMFS layer directory. overlayfs takes its whole option
 * string from one page (4096 bytes); with 60 lower layers, full paths (a CVMFS layer path is
 * about 100 bytes) would not fit, short links (ROOT/l/ + 10 characters) do.
 *
 * The name is derived from the target path (sha256, base32), so the same target always gets the
 * same link without a table, across restarts, and creating it twice is harmless. A different
 * target that happens to have the same prefix gets a longer name.
 */
import { createHash } from 'node:crypto';
import { readlink, readdir, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError } from './errors';

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
export const LINK_NAME_LENGTH = 10;

function base32(bytes: Buffer): string {
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return out;
}

export class ShortLinks {
  /** @param dir ROOT/l; must exist. */
  constructor(readonly dir: string) {}

  private candidates(target: string): string[] {
    const full = base32(createHash('sha256').update(target).digest());
    const names: string[] = [];
    for (let n = LINK_NAME_LENGTH; n <= full.length; n++) names.push(full.slice(0, n));
    return names;
  }

  /** The short path that leads to `target` (an absolute directory path), creating the link if needed. */
  async link(target: string): Promise<string> {
    for (const name of this.candidates(target)) {
      const path = join(this.dir, name);
      const existing = await readlink(path).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT') return undefined;
        throw e;
      });
      if (existing === target) return path;
      if (existing !== undefined) continue; // another target has this prefix
      try {
        await symlink(target, path);
        return path;
      } catch (e) {
        // A concurrent call made the same link: fine if it points where we want.
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        if ((await readlink(path)) === target) return path;
      }
    }
    throw new SnapshotError('E_IO', `no free short link name for ${target}`);
  }

  /** Removes the link of `target`, if there is one. */
  async unlink(target: string): Promise<void> {
    for (const name of this.candidates(target)) {
      const path = join(this.dir, name);
      const existing = await readlink(path).catch(() => undefined);
      if (existing === undefined) return;
      if (existing === target) {
        await unlink(path).catch(() => undefined);
        return;
      }
    }
  }

  /** Removes every link whose target `keep` rejects (and anything in the directory that is not a link). */
  async prune(keep: (target: string) => boolean): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.dir)) {
      const path = join(this.dir, name);
      const target = await readlink(path).catch(() => undefined);
      if (target !== undefined && keep(target)) continue;
      await unlink(path).catch(() => undefined);
      removed++;
    }
    return removed;
  }
}
