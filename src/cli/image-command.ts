/** `cvmfs-ts image ingest`: the command-line edge of src/image/ingest.ts. */
import { resolve } from 'node:path';
import { ingestImage } from '../image/ingest';
import { credentialsFromEnv } from '../image/registry-client';

export interface ImageIngestCommandOptions {
  repo: string;
  fqrn: string;
  keys: string;
  output: string;
  tag: string;
  push?: string;
  plainHttp?: boolean;
  tlsVerify: boolean;
  staging?: string;
  ttl?: number;
  json?: boolean;
}

export async function runImageIngest(source: string, o: ImageIngestCommandOptions): Promise<void> {
  const result = await ingestImage({
    source,
    repoDir: resolve(o.repo),
    fqrn: o.fqrn,
    keysDir: resolve(o.keys),
    outputDir: resolve(o.output),
    tag: o.tag,
    push: o.push,
    imageOptions: { plainHttp: o.plainHttp, tlsVerify: o.tlsVerify, credentials: credentialsFromEnv() },
    stagingParent: o.staging,
    ttl: o.ttl,
    log: o.json ? undefined : (line) => process.stderr.write(`${line}\n`),
  });
  if (o.json) {
    const { thinImage, ...rest } = result;
    process.stdout.write(`${JSON.stringify({ ...rest, thinImageManifest: thinImage.manifest.digest }, null, 2)}\n`);
    return;
  }
  const added = result.layers.filter((l) => l.status === 'ingested').length;
  process.stdout.write(
    `${result.name}: ${result.layers.length} layers (${added} new, ${result.layers.length - added} already present), ` +
      `revision ${result.revision}\nthin.json: ${result.thinJsonPath}\nthin image: ${result.thinImageDir} (${result.thinImage.manifest.digest})\n`,
  );
}
