/**
 * Disk usage of a directory tree the way containerd's fs.DiskUsage counts it: each distinct inode
 * once (hard links), st_blocks * 512 bytes, the root included. Asynchronous so that a big upper
 * directory does not stall the other gRPC calls.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Usage } from './types';

export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0;
  const visit = async (path: string): Promise<void> => {
    const st = await lstat(path, { bigint: true }).catch((e: NodeJS.ErrnoException) => {
      // Files vanish under a running container; what is gone uses nothing.
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
    if (!st) return;
    const inode = `${st.dev}:${st.ino}`;
    if (!seen.has(inode)) {
      seen.add(inode);
      size += Number(st.blocks) * 512;
    }
    if (st.isDirectory()) {
      const names = await readdir(path).catch(() => [] as string[]);
      for (const name of names) await visit(join(path, name));
    }
  };
  await visit(root);
  return { size, inodes: seen.size };
}
