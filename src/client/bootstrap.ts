/**
 * Which root catalog to mount (§5.1): a fixed CVMFS_ROOT_HASH, or the server's current manifest —
 * signature checked with the certificate, certificate vouched for by the whitelist and master
 * key(s), and never older than what this cache has seen (the breadcrumb). With every server
 * unreachable, the revision recorded in the breadcrumb is mounted from the cache (offline mode).
 */
import { readFile } from 'node:fs/promises';
import type { KeyObject } from 'node:crypto';
import { ContentHash } from '../format/hash';
import { parseManifest, checkManifestFields, verifyManifest, type Manifest } from '../format/manifest';
import { verifyWhitelist } from '../format/whitelist';
import { parseCertificate } from '../format/certificate';
import { CvmfsError } from '../errors';

export interface Breadcrumb {
  rootHash: ContentHash;
  timestamp: number;
  revision: number;
}

/** The parts of the fetch layer bootstrap uses. */
export interface BootstrapSources {
  /** A non-CAS file of the repository (`.cvmfspublished`, `.cvmfswhitelist`), fresh from the server. */
  getRaw(relativePath: string): Promise<Buffer>;
  /** Verified, decompressed cache file of an object. */
  fetchObject(hash: ContentHash, suffix: 'X' | 'C', description: string): Promise<string>;
  readBreadcrumb(): Promise<Breadcrumb | undefined>;
  isCached(hash: ContentHash): Promise<boolean>;
}

export interface BootstrapResult {
  rootHash: ContentHash;
  /** Undefined for a fixed root hash (the catalog says). */
  manifest?: Manifest;
  offline: boolean;
  fixed: boolean;
}

export class MountRefused extends CvmfsError {
  constructor(message: string, options?: ErrorOptions) {
    super('E_MANIFEST', message, options);
  }
}

function isUnreachable(e: unknown): boolean {
  return CvmfsError.is(e, 'E_NETWORK');
}

export async function bootstrap(
  o: { fqrn: string; masterKeys: readonly KeyObject[]; fixedRootHash?: string; now?: Date },
  src: BootstrapSources,
): Promise<BootstrapResult> {
  if (o.fixedRootHash) return { rootHash: ContentHash.parse(o.fixedRootHash), offline: false, fixed: true };
  const breadcrumb = await src.readBreadcrumb();
  let manifestBytes: Buffer;
  try {
    manifestBytes = await src.getRaw('.cvmfspublished');
  } catch (e) {
    if (isUnreachable(e) && breadcrumb && (await src.isCached(breadcrumb.rootHash))) {
      return { rootHash: breadcrumb.rootHash, offline: true, fixed: false };
    }
    throw new MountRefused(`cannot fetch the manifest: ${(e as Error).message}`, { cause: e });
  }
  const unverified = parseManifest(manifestBytes);
  checkManifestFields(unverified, o.fqrn);
  if (!unverified.certificate) throw new MountRefused('manifest names no certificate');
  const certificate = parseCertificate(await readFile(await src.fetchObject(unverified.certificate, 'X', 'certificate')));
  const manifest = verifyManifest(manifestBytes, o.fqrn, certificate.publicKey);
  verifyWhitelist(await src.getRaw('.cvmfswhitelist'), { fqrn: o.fqrn, masterKeys: o.masterKeys, certificate, now: o.now });
  if (breadcrumb && (manifest.revision < breadcrumb.revision || (manifest.publishTimestamp ?? 0) < breadcrumb.timestamp)) {
    throw new MountRefused(
      `server offers revision ${manifest.revision} but this cache has seen revision ${breadcrumb.revision}: refusing to roll back`,
    );
  }
  return { rootHash: manifest.rootCatalog, manifest, offline: false, fixed: false };
}
