/**
 * Magic extended attributes (§5.7): read-only views of the mount's state and of an entry's
 * storage, answered on any path. Names are registered with what they apply to, so listxattr and
 * getxattr agree on which exist where.
 */
import { readFile } from 'node:fs/promises';
import type { ResolvedEntry } from './catalog-tree';
import { ContentHash } from '../format/hash';
import { zlibCompress } from '../format/compression';
import { COUNTER_NAMES } from '../format/catalog-schema';
import type { CatalogDb } from '../catalog/catalog-db';

/** Live figures of a mount, provided by its composition root. */
export interface MountStatus {
  readonly fqrn: string;
  readonly version: string;
  readonly pid: number;
  readonly startedAt: Date;
  revision(): number;
  rootHash(): ContentHash;
  /** When the root catalog's TTL runs out; undefined for a fixed root hash. */
  expiresAt(): Date | undefined;
  host(): string;
  hostList(): readonly string[];
  proxy(): string;
  loadedCatalogs(): number;
  downloads(): number;
  bytesDownloaded(): number;
  /** Seconds spent downloading, for the average speed. */
  downloadSeconds(): number;
  cacheHits(): number;
  cacheMisses(): number;
  openCalls(): number;
  dirOpenCalls(): number;
  ioErrors(): number;
  timeouts(): { proxy: number; direct: number };
  externalHost(): string;
  /** Where an object would sit in the cache, if it is there. */
  cachedPath(hash: ContentHash): Promise<string | undefined>;
  /** Chunk list of a regular file. */
  chunks(r: ResolvedEntry): { offset: number; size: number; hash: ContentHash }[];
  /** Path of the mount's control socket (talk.ts); '' when it has none. */
  talkSocket?(): string;
}

type Applies = 'any' | 'regular' | 'hashed' | 'symlink' | 'external';

interface MagicXattr {
  applies: Applies;
  /** Answered by getxattr but not listed: names the real client does not have stay out of listings. */
  hidden?: boolean;
  value(r: ResolvedEntry, s: MountStatus): string | Promise<string>;
}

function counterLines(db: CatalogDb): string {
  const { self, subtree } = db.counters();
  return COUNTER_NAMES.map((n) => `${n},${self[n] + subtree[n]}\n`).join('');
}

const MAGIC: Record<string, MagicXattr> = {
  'user.fqrn': { applies: 'any', value: (_r, s) => s.fqrn },
  'user.revision': { applies: 'any', value: (_r, s) => String(s.revision()) },
  'user.root_hash': { applies: 'any', value: (_r, s) => s.rootHash().toString() },
  'user.hash': { applies: 'hashed', value: (r) => r.entry.hash!.toString() },
  'user.lhash': {
    applies: 'hashed',
    // Hash of the cached copy, re-compressed as the server would (another zlib may differ bytewise).
    value: async (r, s) => {
      const path = await s.cachedPath(r.entry.hash!);
      if (!path) return 'Not in cache';
      const plain = await readFile(path);
      const stored = r.entry.flags.compression === 0 ? zlibCompress(plain) : plain;
      return ContentHash.compute(r.entry.hash!.algorithm, stored).toString();
    },
  },
  'user.chunks': { applies: 'regular', value: (r, s) => String(r.entry.flags.chunked ? s.chunks(r).length : 1) },
  'user.chunk_list': {
    applies: 'regular',
    value: (r, s) => {
      const rows = r.entry.flags.chunked
        ? s.chunks(r).map((c) => `${c.hash},${c.offset},${c.size}`)
        : [`${r.entry.hash ?? ''},0,${r.entry.size}`];
      return `hash,offset,size\n${rows.join('\n')}\n`;
    },
  },
  'user.compression': { applies: 'regular', value: (r) => (r.entry.flags.compression === 0 ? 'zlib' : 'none') },
  'user.direct_io': { applies: 'regular', value: (r) => (r.entry.flags.directIo ? '1' : '0') },
  'user.external_file': { applies: 'regular', value: (r) => (r.entry.flags.external ? '1' : '0') },
  'user.external_host': { applies: 'any', value: (_r, s) => s.externalHost() },
  'user.external_url': { applies: 'external', value: (r, s) => `${s.externalHost()}${r.path}` },
  'user.host': { applies: 'any', value: (_r, s) => s.host() },
  'user.host_list': { applies: 'any', value: (_r, s) => s.hostList().join(';') },
  'user.proxy': { applies: 'any', value: (_r, s) => s.proxy() },
  'user.nclg': { applies: 'any', value: (_r, s) => String(s.loadedCatalogs()) },
  'user.ndownload': { applies: 'any', value: (_r, s) => String(s.downloads()) },
  'user.nopen': { applies: 'any', value: (_r, s) => String(s.openCalls()) },
  'user.ndiropen': { applies: 'any', value: (_r, s) => String(s.dirOpenCalls()) },
  'user.nioerr': { applies: 'any', value: (_r, s) => String(s.ioErrors()) },
  'user.pid': { applies: 'any', value: (_r, s) => String(s.pid) },
  'user.uptime': { applies: 'any', value: (_r, s) => String(Math.floor((Date.now() - s.startedAt.getTime()) / 60_000)) },
  'user.expires': {
    applies: 'any',
    value: (_r, s) => {
      const at = s.expiresAt();
      return at ? String(Math.max(0, Math.floor((at.getTime() - Date.now()) / 60_000))) : 'never (fixed root catalog)';
    },
  },
  'user.rawlink': { applies: 'symlink', value: (r) => r.entry.symlink },
  'xfsroot.rawlink': { applies: 'symlink', value: (r) => r.entry.symlink },
  'user.rx': { applies: 'any', value: (_r, s) => String(Math.floor(s.bytesDownloaded() / 1024)) },
  'user.speed': {
    applies: 'any',
    value: (_r, s) => {
      const seconds = s.downloadSeconds();
      return seconds > 0 ? String(Math.floor(s.bytesDownloaded() / 1024 / seconds)) : 'n/a';
    },
  },
  'user.hitrate': {
    applies: 'any',
    value: (_r, s) => {
      const total = s.cacheHits() + s.cacheMisses();
      return total > 0 ? ((100 * s.cacheHits()) / total).toFixed(3) : 'n/a';
    },
  },
  'user.timeout': { applies: 'any', value: (_r, s) => String(s.timeouts().proxy) },
  'user.timeout_direct': { applies: 'any', value: (_r, s) => String(s.timeouts().direct) },
  'user.version': { applies: 'any', value: (_r, s) => s.version },
  // Ours, not cvmfs's: lets `cvmfs-ts talk` find the socket of a mount whose configuration it cannot read.
  'user.talk_socket': { applies: 'any', hidden: true, value: (_r, s) => s.talkSocket?.() ?? '' },
  'user.catalog_counters': {
    applies: 'any',
    value: (r) => `catalog_hash: ${r.catalog.hash}\ncatalog_mountpoint: ${r.catalog.mountPath || '/'}\n${counterLines(r.catalog.db)}`,
  },
  'user.repo_counters': { applies: 'any', value: (r) => counterLines(rootOf(r).db) },
};

function rootOf(r: ResolvedEntry) {
  let c = r.catalog;
  while (c.parent) c = c.parent;
  return c;
}

function applies(a: Applies, r: ResolvedEntry): boolean {
  switch (a) {
    case 'any':
      return true;
    case 'regular':
      return r.entry.type === 'regular';
    case 'hashed':
      return r.entry.hash !== undefined;
    case 'symlink':
      return r.entry.type === 'symlink';
    case 'external':
      return r.entry.type === 'regular' && r.entry.flags.external;
  }
}

export function isMagicXattr(name: string): boolean {
  return name in MAGIC;
}

/** The value, or undefined when the name is not magic or does not apply to this entry. */
export async function magicXattr(name: string, r: ResolvedEntry, s: MountStatus): Promise<string | undefined> {
  const m = MAGIC[name];
  if (!m || !applies(m.applies, r)) return undefined;
  return m.value(r, s);
}

export function magicXattrNames(r: ResolvedEntry): string[] {
  return Object.entries(MAGIC)
    .filter(([, m]) => !m.hidden && applies(m.applies, r))
    .map(([name]) => name);
}
