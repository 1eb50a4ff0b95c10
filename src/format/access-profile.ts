/**
 * An access profile: the objects a container read during its first seconds, in the order it first
 * read them (`cvmfs-ts thin record`). Stored in the repository beside the image's layers and named
 * from thin.json; a client prefetches them on a cold start. Objects are named by content hash, so a
 * profile recorded on one machine serves every other.
 *
 * ```json
 * { "version": 1, "kind": "cvmfs-ts access profile", "created": "2026-…Z", "seconds": 30,
 *   "command": ["python3", "-c", "…"], "layers": ["<64 hex>", …],
 *   "objects": [{ "hash": "<hex>[-rmd160|-shake128]", "suffix": "" | "P", "compressed": true,
 *                 "size": 1234, "path": ".layers/…/usr/lib/…" }, …] }
 * ```
 */
import { FormatError } from '../errors';
import { ContentHash, type ObjectSuffix } from './hash';

export const ACCESS_PROFILE_VERSION = 1;
export const ACCESS_PROFILE_KIND = 'cvmfs-ts access profile';

export interface ProfiledObject {
  readonly hash: ContentHash;
  /** '' for a whole file, 'P' for a chunk. */
  readonly suffix: ObjectSuffix;
  readonly compressed: boolean;
  /** Decompressed size. */
  readonly size: number;
  /** Repository path of the file it belongs to (for messages and statistics). */
  readonly path: string;
}

export interface AccessProfile {
  readonly created: string;
  /** Length of the recording window. */
  readonly seconds: number;
  readonly command: readonly string[];
  /** Layer digests (hex) of the image, base first. */
  readonly layers: readonly string[];
  readonly objects: readonly ProfiledObject[];
}

export function serializeAccessProfile(p: AccessProfile): string {
  const objects = p.objects.map((o) => ({ hash: o.hash.toString(), suffix: o.suffix, compressed: o.compressed, size: o.size, path: o.path }));
  return `${JSON.stringify({ version: ACCESS_PROFILE_VERSION, kind: ACCESS_PROFILE_KIND, created: p.created, seconds: p.seconds, command: p.command, layers: p.layers, objects })}\n`;
}

const SUFFIXES: ReadonlySet<string> = new Set(['', 'P']);

/** Parses a profile; FormatError names the first thing that is wrong. */
export function parseAccessProfile(text: string): AccessProfile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    throw new FormatError(`access profile is not JSON: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new FormatError('access profile is not a JSON object');
  const o = doc as Record<string, unknown>;
  if (o.kind !== ACCESS_PROFILE_KIND) throw new FormatError(`not an access profile (kind ${JSON.stringify(o.kind)})`);
  if (o.version !== ACCESS_PROFILE_VERSION) throw new FormatError(`access profile version ${JSON.stringify(o.version)} is not ${ACCESS_PROFILE_VERSION}`);
  if (!Array.isArray(o.objects)) throw new FormatError('access profile has no objects list');
  const objects = o.objects.map((raw: unknown, i): ProfiledObject => {
    const where = `access profile object ${i}`;
    if (typeof raw !== 'object' || raw === null) throw new FormatError(`${where} is not an object`);
    const e = raw as Record<string, unknown>;
    if (typeof e.hash !== 'string') throw new FormatError(`${where}: hash is missing`);
    let hash: ContentHash;
    try {
      hash = ContentHash.parse(e.hash);
    } catch {
      throw new FormatError(`${where}: ${JSON.stringify(e.hash)} is not a content hash`);
    }
    if (typeof e.suffix !== 'string' || !SUFFIXES.has(e.suffix)) throw new FormatError(`${where}: suffix ${JSON.stringify(e.suffix)} is not "" or "P"`);
    if (typeof e.compressed !== 'boolean') throw new FormatError(`${where}: compressed is not a boolean`);
    if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) throw new FormatError(`${where}: size is not a byte count`);
    return { hash, suffix: e.suffix as ObjectSuffix, compressed: e.compressed, size: e.size, path: typeof e.path === 'string' ? e.path : '' };
  });
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  return {
    created: typeof o.created === 'string' ? o.created : '',
    seconds: typeof o.seconds === 'number' ? o.seconds : 0,
    command: strings(o.command),
    layers: strings(o.layers),
    objects,
  };
}
