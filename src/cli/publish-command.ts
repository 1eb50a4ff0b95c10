/** `cvmfs-ts publish`: runs the publisher with a progress display and prints a one-line summary. */
import { publish, type PublishResult } from '../publish/publisher';
import { parseAlgorithmName } from '../format/hash';
import type { ChunkSizes } from '../format/chunker';
import { createProgress } from './progress';

export interface PublishCommandOptions {
  keys: string;
  ttl?: number;
  hash: string;
  chunkSizes?: ChunkSizes;
  chunking: boolean;
  external?: boolean;
}

function summary(r: PublishResult, fqrn: string, seconds: number): string {
  const mib = (n: number) => (n / 2 ** 20).toFixed(1);
  return (
    `published ${fqrn} revision ${r.revision}: ${r.entries} entries, ${mib(r.fileBytes)} MiB of files, ` +
    `${r.objects.objectsWritten} new objects (${mib(r.objects.bytesWritten)} MiB stored), ` +
    `${r.objects.objectsReused} reused, ${r.catalogsWritten} catalogs written, ${r.catalogsReused} reused, ` +
    `root ${r.rootHash} in ${seconds.toFixed(1)} s`
  );
}

export async function runPublish(
  fqrn: string,
  source: string,
  repoDir: string,
  o: PublishCommandOptions,
): Promise<PublishResult> {
  const started = Date.now();
  const progress = createProgress();
  let result: PublishResult;
  try {
    result = await publish({
      fqrn,
      source,
      repoDir,
      keysDir: o.keys,
      ttl: o.ttl,
      algorithm: parseAlgorithmName(o.hash),
      chunking: o.chunking ? o.chunkSizes : false,
      external: o.external,
      progress,
    });
  } finally {
    progress.stop();
  }
  process.stdout.write(summary(result, fqrn, (Date.now() - started) / 1000) + '\n');
  return result;
}

