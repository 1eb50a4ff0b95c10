/**
 * A verified view of a whole repository for tools (§1.3–1.6, §6.2): the manifest checked with the
 * certificate, the whitelist with the master key(s), then catalogs and objects checked against
 * their content hashes before anything is read from them.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeyObject } from 'node:crypto';
import { ContentHash, type ObjectSuffix } from '../format/hash';
import { objectPath } from '../format/object-name';
import { zlibDecompress } from '../format/compression';
import { verifyManifest, parseManifest, type Manifest } from '../format/manifest';
import { verifyWhitelist, type Whitelist } from '../format/whitelist';
import { parseCertificate, type Certificate } from '../format/certificate';
import { CatalogDb } from '../catalog/catalog-db';
import type { ObjectSource } from './object-source';
import { HashMismatchError, CvmfsError } from '../errors';

/** Fetches an object and checks that its stored bytes hash to its name. */
export async function fetchVerified(source: ObjectSource, hash: ContentHash, suffix: ObjectSuffix): Promise<Buffer> {
  const path = objectPath(hash, suffix);
  const stored = await source.get(path);
  const actual = ContentHash.compute(hash.algorithm, stored);
  if (!actual.equals(hash)) throw new HashMismatchError(`object ${path}`, hash.toString(), actual.toString());
  return stored;
}

export interface OpenOptions {
  fqrn: string;
  /** Master public keys for the whitelist; without any, only the manifest signature is checked (publisher's own view). */
  masterKeys?: readonly KeyObject[];
  now?: Date;
}

export class Repository {
  private tempDir: string | undefined;
  private readonly catalogs = new Map<string, CatalogDb>();

  private constructor(
    readonly source: ObjectSource,
    readonly fqrn: string,
    readonly manifest: Manifest,
    readonly certificate: Certificate,
    readonly whitelist: Whitelist | undefined,
  ) {}

  /** Fetches and verifies manifest, certificate and (given master keys) whitelist. */
  static async open(source: ObjectSource, o: OpenOptions): Promise<Repository> {
    const manifestBytes = await source.get('.cvmfspublished');
    const unverified = parseManifest(manifestBytes);
    if (!unverified.certificate) throw new CvmfsError('E_MANIFEST', 'manifest names no certificate (X line)');
    const certBytes = await fetchVerified(source, unverified.certificate, 'X').catch((e) => {
      throw new CvmfsError(CvmfsError.is(e) ? e.code : 'E_IO', `certificate: ${(e as Error).message}`, { cause: e });
    });
    const certificate = parseCertificate(zlibDecompress(certBytes, 'certificate object'));
    const manifest = verifyManifest(manifestBytes, o.fqrn, certificate.publicKey);
    let whitelist: Whitelist | undefined;
    if (o.masterKeys) {
      whitelist = verifyWhitelist(await source.get('.cvmfswhitelist'), {
        fqrn: o.fqrn,
        masterKeys: o.masterKeys,
        certificate,
        now: o.now,
      });
    }
    return new Repository(source, o.fqrn, manifest, certificate, whitelist);
  }

  get rootHash(): ContentHash {
    return this.manifest.rootCatalog;
  }

  /** Fetches, verifies and opens a catalog (cached for the life of this object). */
  async catalog(hash: ContentHash): Promise<CatalogDb> {
    const open = this.catalogs.get(hash.toString());
    if (open) return open;
    const db = await this.load(hash);
    this.catalogs.set(hash.toString(), db);
    return db;
  }

  /**
   * Runs `use` on a catalog without keeping it open afterwards: for tools that read a little of
   * each of many large catalogs, whose inflated copies would otherwise pile up in the temporary
   * directory. A catalog already open through catalog() is used as it is and stays open.
   */
  async peekCatalog<T>(hash: ContentHash, use: (db: CatalogDb) => T): Promise<T> {
    const open = this.catalogs.get(hash.toString());
    if (open) return use(open);
    // Its own file name: a concurrent catalog() of the same hash must not lose its file to our rm.
    const db = await this.load(hash, '.peek');
    try {
      return use(db);
    } finally {
      db.close();
      await rm(db.file, { force: true });
    }
  }

  private async load(hash: ContentHash, suffix = ''): Promise<CatalogDb> {
    const key = hash.toString();
    const stored = await fetchVerified(this.source, hash, 'C');
    this.tempDir ??= await mkdtemp(join(tmpdir(), 'cvmfs-ts-catalogs-'));
    const file = join(this.tempDir, key + suffix);
    await writeFile(file, zlibDecompress(stored, `catalog ${key}`));
    return new CatalogDb(file);
  }

  rootCatalog(): Promise<CatalogDb> {
    return this.catalog(this.rootHash);
  }

  /**
   * The catalog holding `path` (§5.2): the deepest nested catalog whose mount path is a
   * component-wise prefix of it. A nested mountpoint itself resolves to the nested catalog.
   */
  async catalogFor(path: string): Promise<{ mountPath: string; hash: ContentHash; db: CatalogDb }> {
    let current = { mountPath: '', hash: this.rootHash, db: await this.rootCatalog() };
    for (;;) {
      const ref = current.db
        .nestedCatalogs()
        .find((r) => r.hash && (path === r.path || path.startsWith(`${r.path}/`)));
      if (!ref?.hash) return current;
      current = { mountPath: ref.path, hash: ref.hash, db: await this.catalog(ref.hash) };
    }
  }

  /** Visits every catalog depth-first with its mount path, root first. */
  async *walkCatalogs(): AsyncGenerator<{ mountPath: string; hash: ContentHash; db: CatalogDb; depth: number }> {
    const stack: { mountPath: string; hash: ContentHash; depth: number }[] = [{ mountPath: '', hash: this.rootHash, depth: 0 }];
    while (stack.length > 0) {
      const next = stack.pop()!;
      const db = await this.catalog(next.hash);
      yield { ...next, db };
      const nested = db.nestedCatalogs();
      for (let i = nested.length - 1; i >= 0; i--) {
        const ref = nested[i]!;
        if (!ref.hash) throw new CvmfsError('E_FORMAT', `nested catalog ${ref.path} has no hash`);
        stack.push({ mountPath: ref.path, hash: ref.hash, depth: next.depth + 1 });
      }
    }
  }

  async close(): Promise<void> {
    for (const db of this.catalogs.values()) db.close();
    this.catalogs.clear();
    if (this.tempDir) await rm(this.tempDir, { recursive: true, force: true });
    await this.source.close();
  }
}
