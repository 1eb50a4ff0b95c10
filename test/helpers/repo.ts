/** Shared set-up for tests that publish: keys made once per process, temp dirs, listings. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execFileSync } from 'node:child_process';
import { createKeys, keyFiles, loadPublicKeys } from '../../src/publish/keys';
import { Repository } from '../../src/repository/repository';
import type { ObjectSource } from '../../src/repository/object-source';
import { DirectorySource } from '../../src/repository/object-source';
import { listTree, formatTreeListing } from '../../src/repository/tree-listing';
import { publish } from '../../src/publish/publisher';

export const SHARED = resolve(__dirname, '../../../shared');
export const TREELIST = join(SHARED, 'tools', 'treelist.py');

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'cvmfs-ts-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const keyDirs = new Map<string, Promise<string>>();

/** A key directory for `fqrn`, created once per test process. */
export function testKeys(fqrn: string): Promise<string> {
  let dir = keyDirs.get(fqrn);
  if (!dir) {
    dir = (async () => {
      const d = await mkdtemp(join(tmpdir(), 'cvmfs-ts-keys-'));
      process.once('exit', () => execFileSync('rm', ['-rf', d]));
      await createKeys(fqrn, d);
      return d;
    })();
    keyDirs.set(fqrn, dir);
  }
  return dir;
}

export async function openVerified(fqrn: string, keysDir: string, source: ObjectSource): Promise<Repository> {
  return Repository.open(source, { fqrn, masterKeys: await loadPublicKeys([keyFiles(fqrn, keysDir).masterPublicKey]) });
}

export function openRepoDir(fqrn: string, keysDir: string, repoDir: string): Promise<Repository> {
  return openVerified(fqrn, keysDir, new DirectorySource(repoDir));
}

/** The repository's listing in treelist.py format. */
export async function repositoryListing(repo: Repository, env: Record<string, string | undefined> = {}): Promise<string> {
  const entries = [];
  for await (const e of listTree(repo, { env })) entries.push(e);
  return formatTreeListing(entries);
}

/** treelist.py run on a plain directory. */
export function sourceListing(dir: string): string {
  return execFileSync('python3', [TREELIST, dir, '--no-owner'], { encoding: 'utf8' });
}

/** A view of a repository directory as it was at an older manifest. */
export class PinnedManifestSource extends DirectorySource {
  constructor(
    root: string,
    private readonly manifest: Buffer,
  ) {
    super(root);
  }
  override async get(relativePath: string): Promise<Buffer> {
    return relativePath === '.cvmfspublished' ? this.manifest : super.get(relativePath);
  }
}

export interface PublishedFiles {
  repoDir: string;
  /** The master public key file. */
  pub: string;
  /** Relative path → contents, as published. */
  files: Map<string, Buffer>;
}

/**
 * Writes `files` (relative path → contents) into a source tree, lets `prepare` add to it, and
 * publishes it with 256 KiB / 512 KiB / 1 MiB chunks.
 */
export async function publishFileMap(
  t: { teardown(fn: () => unknown): void },
  fqrn: string,
  files: Map<string, Buffer>,
  prepare?: (src: string) => Promise<void>,
): Promise<PublishedFiles> {
  const dir = await tempDir(t, 'cvmfs-ts-files-');
  const src = join(dir, 'src');
  const repoDir = join(dir, 'repo');
  for (const [rel, data] of files) {
    await mkdir(join(src, rel, '..'), { recursive: true });
    await writeFile(join(src, rel), data);
  }
  await prepare?.(src);
  const keys = await testKeys(fqrn);
  await publish({ fqrn, source: src, repoDir, keysDir: keys, chunking: { min: 256 << 10, avg: 512 << 10, max: 1 << 20 } });
  return { repoDir, pub: keyFiles(fqrn, keys).masterPublicKey, files };
}
