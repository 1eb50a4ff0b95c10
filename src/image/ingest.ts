/**
 * `cvmfs-ts image ingest`: an OCI image → its layers unpacked into the repository as
 * `.layers/<d[0:2]>/<d>/layerfs` (one nested catalog each, §8.1), image metadata under `.metadata/`,
 * all in one new revision; then thin.json and the thin image (an OCI layout, optionally pushed).
 *
 * Layers go into a staging tree that the publisher merges over the previous revision (union mode):
 * layers already in the repository are neither downloaded nor unpacked again, and their catalogs are
 * carried over by reference.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { DirectorySource } from '../repository/object-source';
import { Repository } from '../repository/repository';
import { publish } from '../publish/publisher';
import { CvmfsError, HashMismatchError } from '../errors';
import { digestHex, type Digest } from './digest';
import { openImageSource, type ImageSourceOptions, type ResolvedImage } from './image-source';
import { isForeignLayer, type Descriptor } from './manifest';
import { formatOrigin, type ImageReference } from './reference';
import { unpackLayer, type UnpackStats } from './layer-unpack';
import { formatThinJson, layerPath, THIN_JSON_NAME } from './thin-json';
import { buildThinImage, writeOciLayout, type ThinImageArtifacts } from './thin-image';
import { pushImage, type PushResult } from './registry-source';

export interface IngestOptions {
  readonly source: string;
  readonly repoDir: string;
  readonly fqrn: string;
  readonly keysDir: string;
  /** Receives thin.json and the thin image layout (`thin-image/`). */
  readonly outputDir: string;
  /** Tag of the thin image in its layout (default `latest`). */
  readonly tag?: string;
  /** `docker://host/name:tag` to push the thin image to. */
  readonly push?: string;
  readonly imageOptions?: ImageSourceOptions;
  /** Where layers are unpacked before publishing (default the system temp dir). */
  readonly stagingParent?: string;
  readonly ttl?: number;
  readonly now?: Date;
  /** One line per step, for the CLI. */
  readonly log?: (line: string) => void;
}

export interface IngestedLayer {
  readonly digest: Digest;
  /** `present`: already in the repository, nothing downloaded. */
  readonly status: 'ingested' | 'present';
  readonly unpacked?: UnpackStats;
}

export interface IngestResult {
  readonly revision: number;
  readonly origin: string;
  readonly name: string;
  readonly layers: readonly IngestedLayer[];
  readonly thinJson: string;
  readonly thinJsonPath: string;
  readonly thinImageDir: string;
  readonly thinImage: ThinImageArtifacts;
  readonly pushed?: PushResult;
}

/** The image's name under `.metadata/`: `registry/repository:tag` like DUCC, `local/<file>:<tag>` otherwise. */
export function metadataName(ref: ImageReference): string {
  switch (ref.transport) {
    case 'docker':
      return `${ref.registry}/${ref.repository}:${ref.tag ?? digestHex(ref.digest!)}`;
    case 'oci':
    case 'oci-archive':
      return `local/${basename(ref.path)}:${ref.tag ?? 'latest'}`;
    case 'docker-archive':
      return `local/${basename(ref.path)}:${ref.select && 'name' in ref.select ? ref.select.name.replace(/[/:]/g, '_') : 'latest'}`;
  }
}

async function presentLayers(repoDir: string, fqrn: string, layers: readonly Descriptor[]): Promise<Set<Digest>> {
  const source = new DirectorySource(repoDir);
  const present = new Set<Digest>();
  if (!(await source.getOptional('.cvmfspublished'))) return present;
  const repo = await Repository.open(source, { fqrn });
  try {
    for (const layer of layers) {
      const path = `/${layerPath(digestHex(layer.digest))}`;
      if ((await repo.catalogFor(path)).db.lookup(path)) present.add(layer.digest);
    }
  } finally {
    await repo.close();
  }
  return present;
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Unpacks one layer into the staging tree with DUCC's per-layer metadata (§8.1). */
async function stageLayer(staging: string, image: ResolvedImage, index: number, open: () => Promise<Readable>): Promise<UnpackStats> {
  const layer = image.layers[index]!;
  const hex = digestHex(layer.digest);
  const layerRoot = join(staging, layerPath(hex));
  await mkdir(layerRoot, { recursive: true });
  const stats = await unpackLayer(await open(), layerRoot, { mediaType: layer.mediaType, what: `layer ${layer.digest}` });
  // The config names each layer's uncompressed digest; a layer that unpacks to other bytes is not this image's.
  const diffId = image.diffIds?.[index];
  if (diffId && diffId !== stats.uncompressedDigest) throw new HashMismatchError(`uncompressed layer ${layer.digest}`, diffId, stats.uncompressedDigest);
  const metadata = join(layerRoot, '..', '.metadata');
  await writeJson(join(metadata, 'layers.json'), [
    {
      id: digestHex(stats.uncompressedDigest),
      created: typeof image.config.value.created === 'string' ? image.config.value.created : undefined,
      'compressed-diff-digest': layer.digest,
      'compressed-size': layer.size,
      'diff-digest': stats.uncompressedDigest,
      'diff-size': stats.bytes,
    },
  ]);
  await writeJson(join(metadata, 'origin.json'), { origin: [image.config.digest] });
  return stats;
}

export async function ingestImage(o: IngestOptions): Promise<IngestResult> {
  const log = o.log ?? (() => undefined);
  const source = await openImageSource(o.source, o.imageOptions);
  const staging = await mkdtemp(join(o.stagingParent ?? tmpdir(), 'cvmfs-ts-ingest-'));
  try {
    // mkdtemp makes 0700; the staging root becomes the repository root, which everyone reads.
    await chmod(staging, 0o755);
    const image = await source.resolve();
    const foreign = image.layers.find(isForeignLayer);
    if (foreign) throw new CvmfsError('E_USAGE', `layer ${foreign.digest} is a foreign layer (not distributable); such images cannot be ingested`);
    const origin = formatOrigin(source.reference, image.manifestDigest);
    const name = metadataName(source.reference);
    const present = await presentLayers(o.repoDir, o.fqrn, image.layers);

    const layers: IngestedLayer[] = [];
    const newCatalogs: string[] = [];
    for (const [i, layer] of image.layers.entries()) {
      const where = `layer ${i + 1}/${image.layers.length} ${layer.digest}`;
      if (present.has(layer.digest) || layers.some((l) => l.digest === layer.digest)) {
        log(`${where}: already in the repository`);
        layers.push({ digest: layer.digest, status: 'present' });
        continue;
      }
      const unpacked = await stageLayer(staging, image, i, () => source.openBlob(layer));
      log(`${where}: ${unpacked.entries} entries, ${unpacked.bytes} bytes (${unpacked.compression})`);
      layers.push({ digest: layer.digest, status: 'ingested', unpacked });
      newCatalogs.push(`/${layerPath(digestHex(layer.digest))}`);
    }

    const thinJson = formatThinJson(o.fqrn, origin, image.layers.map((l) => l.digest));
    const metadata = join(staging, '.metadata', name);
    await mkdir(metadata, { recursive: true });
    await writeFile(join(metadata, 'manifest.json'), image.manifestBytes);
    await writeFile(join(metadata, 'config.json'), image.config.bytes);
    await writeFile(join(metadata, THIN_JSON_NAME), thinJson);

    const published = await publish({
      fqrn: o.fqrn,
      source: staging,
      repoDir: o.repoDir,
      keysDir: o.keysDir,
      ttl: o.ttl,
      now: o.now,
      union: true,
      // `.layers` is one catalog of its own (§8.1), each layer another one below it.
      nestedCatalogs: newCatalogs.length > 0 ? ['/.layers', ...newCatalogs] : [],
    });
    log(`published revision ${published.revision} of ${o.fqrn}`);

    await mkdir(o.outputDir, { recursive: true });
    const thinJsonPath = join(o.outputDir, THIN_JSON_NAME);
    await writeFile(thinJsonPath, thinJson);
    const thinImage = await buildThinImage(JSON.parse(image.config.bytes.toString('utf8')) as Record<string, unknown>, thinJson, origin);
    const thinImageDir = join(o.outputDir, 'thin-image');
    await rm(thinImageDir, { recursive: true, force: true });
    await writeOciLayout(thinImageDir, thinImage, o.tag ?? 'latest');
    let pushed: PushResult | undefined;
    if (o.push) {
      pushed = await pushImage(o.push, {
        manifestBytes: thinImage.manifest.bytes,
        configBytes: thinImage.config.bytes,
        blobs: [{ digest: thinImage.layer.digest, size: thinImage.layer.bytes.length, open: () => thinImage.layer.bytes }],
      }, o.imageOptions);
      log(`pushed the thin image to ${o.push} (${pushed.manifestDigest})`);
    }
    return { revision: published.revision, origin, name, layers, thinJson, thinJsonPath, thinImageDir, thinImage, pushed };
  } finally {
    await rm(staging, { recursive: true, force: true });
    await source.close();
  }
}
