/**
 * Reading the publish source: directory listings with names checked for what a catalog can hold,
 * lstat with nanosecond times, symlink targets and extended attributes. Every failure names the
 * source path it concerns.
 */
import { lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { listAttributes, getAttribute } from '@napi-rs/xattr';
import { SourceError } from '../errors';

export interface SourceEntry {
  readonly name: string;
  readonly absPath: string;
  readonly stats: BigIntStats;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function reason(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

/** Entries of a directory, sorted by name bytes so publishes are deterministic. */
export async function listDirectory(dir: string): Promise<SourceEntry[]> {
  let raw: Buffer[];
  try {
    raw = await readdir(dir, { encoding: 'buffer' });
  } catch (e) {
    throw new SourceError(dir, `cannot list directory (${reason(e)})`, { cause: e });
  }
  raw.sort(Buffer.compare);
  const entries: SourceEntry[] = [];
  for (const bytes of raw) {
    let name: string;
    try {
      name = utf8.decode(bytes);
    } catch {
      throw new SourceError(join(dir, bytes.toString('latin1')), 'file name is not valid UTF-8');
    }
    const absPath = join(dir, name);
    if (name.includes('\n')) throw new SourceError(JSON.stringify(absPath), 'file name contains a newline');
    entries.push({ name, absPath, stats: await lstatSource(absPath) });
  }
  return entries;
}

export async function lstatSource(path: string): Promise<BigIntStats> {
  try {
    return await lstat(path, { bigint: true });
  } catch (e) {
    throw new SourceError(path, `cannot stat (${reason(e)})`, { cause: e });
  }
}

export async function readSymlink(path: string): Promise<string> {
  let target: Buffer;
  try {
    target = await readlink(path, { encoding: 'buffer' });
  } catch (e) {
    throw new SourceError(path, `cannot read symlink (${reason(e)})`, { cause: e });
  }
  try {
    return utf8.decode(target);
  } catch {
    throw new SourceError(path, 'symlink target is not valid UTF-8');
  }
}

/** Extended attributes (not followed through symlinks), as raw bytes. */
export async function readXattrs(path: string): Promise<Map<string, Buffer>> {
  const result = new Map<string, Buffer>();
  try {
    for (const name of await listAttributes(path)) {
      const value = await getAttribute(path, name);
      result.set(name, value ?? Buffer.alloc(0));
    }
  } catch (e) {
    throw new SourceError(path, `cannot read extended attributes (${(e as Error).message})`, { cause: e });
  }
  return result;
}
