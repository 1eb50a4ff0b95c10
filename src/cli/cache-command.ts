/**
 * `cvmfs-ts cache list|size|evict|pin|unpin|wipe|rebuild`: manages a client cache directory directly,
 * through its quota ledger (`cachedb`, src/cache/quota.ts); no daemon has to run. Running mounts that
 * share the directory go on working: their pins are respected (`evict` refuses, `wipe` keeps those
 * objects), and they see the changes the next time they look.
 *
 * Which directory: `--cache-dir DIR`, or the one the configuration of FQRN names (CVMFS_CACHE_DIR, or
 * CVMFS_CACHE_BASE/shared|FQRN), read from `--config-root` ($CVMFS_TS_CONFIG_ROOT, /etc/cvmfs).
 *
 * Targets of evict/pin/unpin: an object hash (`hex[-algo]`), or a repository PATH (`/dir/file`) of a
 * regular file. A path is resolved offline, through the catalogs in the cache: the breadcrumb
 * `cvmfschecksum.<fqrn>` names the last mounted root catalog, nested catalogs are followed down, and a
 * chunked file means all of its chunks. If a catalog on the way is not cached, the path cannot be
 * resolved and the command says so (use the hash instead: `getfattr -n user.hash FILE` on the mount).
 * Without a FQRN the only breadcrumb in the directory is used. `pin` pins only what is cached
 * (unlike cvmfs_talk, it cannot download); the pin persists until `unpin`.
 *
 * When no mount has the ledger open, the commands reconcile it with the directory first (a scan of
 * 00..ff), since a mount without a quota or a copied cache leaves it out of step; while a mount with a
 * quota runs, the ledger is trusted as is (`rebuild` forces the scan).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../config/bash-config';
import { parseSettings } from '../config/parameters';
import { DiskCache } from '../cache/disk-cache';
import { SqliteQuota } from '../cache/quota';
import { formatCacheSize, formatQuotaEntry, megabytes } from '../cache/quota-report';
import { CatalogDb } from '../catalog/catalog-db';
import { ContentHash } from '../format/hash';
import { CvmfsError } from '../errors';

export type CacheAction = 'list' | 'size' | 'evict' | 'pin' | 'unpin' | 'wipe' | 'rebuild';

export interface CacheCommandOptions {
  cacheDir?: string;
  configRoot?: string;
  pinned?: boolean;
  catalogs?: boolean;
  json?: boolean;
}

const MB = 1024 * 1024;

interface Location {
  dir: string;
  fqrn?: string;
  /** The configured CVMFS_QUOTA_LIMIT in MB, when read from a configuration. */
  limitMb?: number;
}

async function locate(fqrn: string | undefined, o: CacheCommandOptions): Promise<Location> {
  let loc: Location;
  if (o.cacheDir) {
    loc = { dir: o.cacheDir, fqrn };
  } else {
    if (!fqrn) throw new CvmfsError('E_USAGE', 'name a repository (FQRN) or give --cache-dir DIR');
    const settings = parseSettings(await loadConfig(fqrn, { root: o.configRoot ?? process.env.CVMFS_TS_CONFIG_ROOT }));
    loc = { dir: settings.cacheDir, fqrn, limitMb: settings.quotaLimitMb };
  }
  const s = await stat(join(loc.dir, '00')).catch(() => undefined);
  if (!s?.isDirectory()) throw new CvmfsError('E_USAGE', `${loc.dir} is not a cvmfs cache directory`);
  return loc;
}

/** The hashes a target names: one hash, or the object(s) of a file path found through cached catalogs. */
async function resolveTarget(cache: DiskCache, target: string, fqrn: string | undefined): Promise<{ hashes: ContentHash[]; what: string }> {
  try {
    return { hashes: [ContentHash.parse(target)], what: target };
  } catch {
    // not a hash: a repository path
  }
  const repo = fqrn ?? (await onlyBreadcrumb(cache.dir));
  const crumb = await cache.readBreadcrumb(repo);
  if (!crumb) throw new CvmfsError('E_NOT_FOUND', `no breadcrumb for ${repo} in ${cache.dir}: its catalogs are not known`);
  const path = target.replace(/\/+$/, '').replace(/^\/*/, '/');
  const catalogs: CatalogDb[] = [];
  const open = async (hash: ContentHash, mountPath: string) => {
    if (!(await cache.has(hash))) {
      throw new CvmfsError('E_NOT_FOUND', `the catalog of ${mountPath || '/'} (${hash}) is not in the cache; give the object hash instead`);
    }
    const db = new CatalogDb(cache.pathOf(hash));
    catalogs.push(db);
    return db;
  };
  try {
    let db = await open(crumb.rootHash, '');
    let mount = '';
    for (;;) {
      const ref = db.nestedCatalogs().find((r) => r.hash && r.path !== mount && (path === r.path || path.startsWith(`${r.path}/`)));
      if (!ref?.hash) break;
      db = await open(ref.hash, ref.path);
      mount = ref.path;
    }
    const entry = db.lookup(path);
    if (!entry) throw new CvmfsError('E_NOT_FOUND', `${path}: no such entry in ${repo} (revision ${crumb.revision})`);
    if (entry.type !== 'regular') throw new CvmfsError('E_USAGE', `${path}: not a regular file`);
    const hashes = entry.flags.chunked ? db.chunks(path, entry).map((c) => c.hash) : entry.hash ? [entry.hash] : [];
    return { hashes, what: path };
  } finally {
    for (const c of catalogs) c.close();
  }
}

async function onlyBreadcrumb(dir: string): Promise<string> {
  const names = (await readdir(dir)).filter((n) => n.startsWith('cvmfschecksum.')).map((n) => n.slice('cvmfschecksum.'.length));
  if (names.length === 1) return names[0]!;
  throw new CvmfsError(
    'E_USAGE',
    names.length === 0 ? `no repository was mounted from ${dir}` : `${dir} holds several repositories (${names.join(', ')}): name one`,
  );
}

/** Runs one cache action; text for stdout goes through `out`, warnings through `warn`. */
export async function runCacheCommand(
  action: CacheAction,
  target: string | undefined,
  fqrn: string | undefined,
  o: CacheCommandOptions,
  out: (text: string) => void = (t) => process.stdout.write(t),
  warn: (text: string) => void = (t) => process.stderr.write(t),
): Promise<void> {
  const loc = await locate(fqrn, o);
  const cache = new DiskCache(loc.dir);
  const quota = await SqliteQuota.open(loc.dir, { log: (_level, m) => warn(`cvmfs-ts: ${m}\n`) });
  try {
    // With no mount keeping the ledger up to date right now, the directory may hold objects it does not
    // know (a mount without CVMFS_QUOTA_LIMIT, files copied in): look at the files first.
    if (action !== 'rebuild' && action !== 'wipe' && quota.otherProcesses().length === 0) await quota.reconcile();
    switch (action) {
      case 'size': {
        const u = quota.usage();
        const limit = loc.limitMb !== undefined ? loc.limitMb * MB : u.lastLimitBytes;
        if (o.json) {
          out(JSON.stringify({ dir: loc.dir, bytes: u.bytes, objects: u.objects, pinnedBytes: u.pinnedBytes, limitBytes: limit }) + '\n');
        } else {
          out(formatCacheSize(u, limit));
        }
        return;
      }
      case 'list': {
        const entries = quota.list({ pinnedOnly: o.pinned, kind: o.catalogs ? 'catalog' : undefined });
        if (o.json) out(JSON.stringify(entries, null, 1) + '\n');
        else for (const e of entries) out(formatQuotaEntry(e) + '\n');
        return;
      }
      case 'evict': {
        const { hashes, what } = await resolveTarget(cache, target!, loc.fqrn);
        const results = [];
        for (const h of hashes) results.push(await quota.remove(h));
        if (results.includes('pinned')) {
          throw new CvmfsError('E_USAGE', `${what}: pinned (by 'cache pin' or a running mount); ${results.filter((r) => r === 'removed').length} of ${hashes.length} object(s) evicted`);
        }
        const removed = results.filter((r) => r === 'removed').length;
        out(removed > 0 ? `evicted ${what} (${removed} object(s))\n` : `${what} is not in the cache\n`);
        return;
      }
      case 'pin':
      case 'unpin': {
        const { hashes, what } = await resolveTarget(cache, target!, loc.fqrn);
        const missing = hashes.filter((h) => !quota.setPersistentPin(h, action === 'pin'));
        if (missing.length > 0 && action === 'pin') {
          throw new CvmfsError('E_NOT_FOUND', `${what}: ${missing.length} of ${hashes.length} object(s) not in the cache (pin only pins cached objects)`);
        }
        out(`${action === 'pin' ? 'pinned' : 'unpinned'} ${what} (${hashes.length - missing.length} object(s))\n`);
        return;
      }
      case 'wipe': {
        await cache.removeAbandonedTransactions();
        const r = await quota.wipe();
        out(`removed ${r.removed} object(s) (${megabytes(r.removedBytes)}); kept ${r.kept} pinned object(s) (${megabytes(r.keptBytes)})\n`);
        if (r.holders.length > 0) warn(`cvmfs-ts: warning: running mounts (pid ${r.holders.join(', ')}) hold objects in ${loc.dir}; those were kept\n`);
        return;
      }
      case 'rebuild': {
        const r = await quota.reconcile();
        out(`reconciled ${loc.dir}: ${r.files} file(s), ${r.added} added, ${r.missing} missing, ${r.damaged} damaged removed\n`);
        return;
      }
    }
  } finally {
    await quota.close();
  }
}
