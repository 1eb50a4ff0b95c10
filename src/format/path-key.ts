/**
 * Catalog path keys (§3.5): MD5 of the full repository path ("" for the root), read as two
 * little-endian signed 64-bit integers. Kept as bigint so no bit is lost in JavaScript.
 */
import { createHash } from 'node:crypto';
import { CvmfsError } from '../errors';

export interface PathKey {
  readonly md5path1: bigint;
  readonly md5path2: bigint;
}

export function pathKey(path: string | Buffer): PathKey {
  const md5 = createHash('md5').update(path).digest();
  return { md5path1: md5.readBigInt64LE(0), md5path2: md5.readBigInt64LE(8) };
}

/** The parent key of the repository root is (0, 0). */
export const ROOT_PARENT_KEY: PathKey = { md5path1: 0n, md5path2: 0n };

/** Parent path in catalog notation: "/a/b" → "/a", "/a" → "", "" → undefined. */
export function parentPath(path: string): string | undefined {
  if (path === '') return undefined;
  return path.slice(0, path.lastIndexOf('/'));
}

/** Normalizes "/a/b/" or "a/b" to catalog notation "/a/b"; "/" is the root "". */
export function repositoryPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new CvmfsError('E_USAGE', `path '${path}' must not contain '..'`);
  return parts.length === 0 ? '' : `/${parts.join('/')}`;
}
