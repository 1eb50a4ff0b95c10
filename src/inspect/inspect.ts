/**
 * `cvmfs-ts inspect`: verifies a repository's signatures and prints what a client would mount —
 * revision, root hash, TTL, publish time, the catalog tree, and optionally one directory listing.
 */
import type { KeyObject } from 'node:crypto';
import { Repository } from '../repository/repository';
import { openSource } from '../repository/object-source';
import type { CatalogEntry } from '../catalog/catalog-db';
import type { Counters } from '../format/catalog-schema';
import { verifyRepository, type VerifyReport } from '../repository/verify';
import { repositoryPath } from '../format/path-key';
import { CvmfsError } from '../errors';

export interface InspectOptions {
  location: string; // URL or directory
  fqrn: string;
  masterKeys: readonly KeyObject[];
  path?: string; // repository path to list, e.g. "/" or "/software"
  /** Fetch and hash-check every object and counter too (`--check-objects`). */
  checkObjects?: boolean;
  now?: Date;
}

export interface CatalogSummary {
  mountPath: string;
  hash: string;
  size: number; // uncompressed bytes
  revision: number;
  depth: number;
  entries: number; // self entries
  counters: Counters;
}

export interface InspectReport {
  fqrn: string;
  revision: number;
  rootHash: string;
  ttl: number;
  publishTime: Date | undefined;
  certificateFingerprint: string;
  whitelistExpires: Date;
  catalogs: CatalogSummary[];
  listing?: { path: string; entries: CatalogEntry[] };
  verification?: VerifyReport;
}

export class RepositoryDamagedError extends CvmfsError {
  constructor(readonly report: VerifyReport) {
    const n = report.problems.length;
    super('E_HASH_MISMATCH', `${n} problem${n === 1 ? '' : 's'} found: ${report.problems.join('; ')}`);
  }
}

function totalEntries(c: Counters): number {
  return c.regular + c.symlink + c.special + c.dir;
}

/** Kept exported here for existing callers; it lives in format/ so the publisher can use it too. */
export { repositoryPath };

export async function inspect(o: InspectOptions): Promise<InspectReport> {
  const repo = await Repository.open(openSource(o.location), { fqrn: o.fqrn, masterKeys: o.masterKeys, now: o.now });
  try {
    const catalogs: CatalogSummary[] = [];
    const sizes = new Map<string, number>();
    for await (const c of repo.walkCatalogs()) {
      for (const ref of c.db.nestedCatalogs()) sizes.set(ref.path, ref.size);
      const { self } = c.db.counters();
      catalogs.push({
        mountPath: c.mountPath === '' ? '/' : c.mountPath,
        hash: c.hash.toString(),
        size: c.mountPath === '' ? repo.manifest.rootCatalogSize ?? 0 : sizes.get(c.mountPath) ?? 0,
        revision: c.db.revision(),
        depth: c.depth,
        entries: totalEntries(self),
        counters: self,
      });
    }
    const report: InspectReport = {
      fqrn: o.fqrn,
      revision: repo.manifest.revision,
      rootHash: repo.rootHash.toString(),
      ttl: repo.manifest.ttl,
      publishTime: repo.manifest.publishTimestamp ? new Date(repo.manifest.publishTimestamp * 1000) : undefined,
      certificateFingerprint: repo.certificate.fingerprint().toFingerprint(),
      whitelistExpires: repo.whitelist!.expires,
      catalogs,
    };
    if (o.path !== undefined) report.listing = await listDirectory(repo, repositoryPath(o.path));
    if (o.checkObjects) {
      report.verification = await verifyRepository(repo);
      if (report.verification.problems.length > 0) throw new RepositoryDamagedError(report.verification);
    }
    return report;
  } finally {
    await repo.close();
  }
}

async function listDirectory(repo: Repository, path: string): Promise<{ path: string; entries: CatalogEntry[] }> {
  const { db } = await repo.catalogFor(path);
  const dir = db.lookup(path);
  if (!dir) throw new CvmfsError('E_NOT_FOUND', `${path || '/'} does not exist in the repository`);
  if (dir.type !== 'directory') return { path, entries: [dir] };
  return { path, entries: db.list(path).filter((e) => !e.flags.hidden) };
}

const TYPE_CHAR: Record<CatalogEntry['type'], string> = {
  directory: 'd',
  regular: '-',
  symlink: 'l',
  fifo: 'p',
  socket: 's',
  char: 'c',
  block: 'b',
};

function modeString(e: CatalogEntry): string {
  const bits = 'rwxrwxrwx';
  let s = TYPE_CHAR[e.type];
  for (let i = 0; i < 9; i++) s += e.mode & (1 << (8 - i)) ? bits[i] : '-';
  return s;
}

function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${u === 0 ? n : n.toFixed(1)} ${units[u]}`;
}

export function formatReport(r: InspectReport): string {
  const lines = [
    `repository        ${r.fqrn}`,
    `revision          ${r.revision}`,
    `root catalog      ${r.rootHash}`,
    `TTL               ${r.ttl} s`,
    `published         ${r.publishTime?.toISOString() ?? 'unknown'}`,
    `certificate       ${r.certificateFingerprint}`,
    `whitelist expires ${r.whitelistExpires.toISOString()}`,
    `signatures        manifest and whitelist verified`,
  ];
  const v = r.verification;
  if (v) {
    lines.push(
      `objects           ${v.objects} objects (${human(v.bytes)}) and ${v.catalogs} catalogs hash-checked, counters consistent`,
    );
  }
  lines.push(
    '',
    `catalogs (${r.catalogs.length}):`,
  );
  for (const c of r.catalogs) {
    const k = c.counters;
    lines.push(
      `${'  '.repeat(c.depth + 1)}${c.mountPath}  ${c.hash}  rev ${c.revision}  ${human(c.size)}  ` +
        `${c.entries} entries (${k.regular} files, ${k.dir} dirs, ${k.symlink} symlinks, ${k.special} special, ` +
        `${k.chunked} chunked in ${k.chunks} chunks, ${human(k.file_size)})`,
    );
  }
  if (r.listing) {
    lines.push('', `${r.listing.path || '/'}:`);
    for (const e of r.listing.entries) {
      const size = String(e.size); // devices: the rdev value, as in the catalog
      const when = new Date(e.mtime * 1000).toISOString().replace('T', ' ').slice(0, 19);
      const name = e.name + (e.type === 'symlink' ? ` -> ${e.symlink}` : '');
      lines.push(`${modeString(e)} ${String(e.linkCount).padStart(3)} ${String(e.uid).padStart(5)} ${String(e.gid).padStart(5)} ${size.padStart(12)} ${when} ${name}`);
    }
  }
  return lines.join('\n') + '\n';
}
