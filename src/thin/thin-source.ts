/**
 * Where `thin mount` gets a thin image's thin.json from: a thin.json file, an OCI layout directory
 * (what `image ingest` writes as OUT/thin-image), or any image reference (`oci:`, `oci-archive:`,
 * `docker-archive:`, `docker://`) whose layer holds thin.json.
 */
import { stat } from 'node:fs/promises';
import { CvmfsError } from '../errors';
import { openImageSource, type ImageSourceOptions } from '../image/image-source';
import { decompressed } from '../image/decompress';
import { readTar } from '../image/tar-reader';
import { parseThinJson, THIN_JSON_NAME, type ThinImage } from '../image/thin-json';
import { THIN_ANNOTATION } from '../image/thin-image';
import { readThinJsonFile } from './thin-mount';

const TRANSPORT = /^(oci|oci-archive|docker-archive):|^docker:\/\//;
/** thin.json is a few hundred bytes per layer; refuse anything absurd. */
const MAX_THIN_JSON = 4 << 20;

/** How the image's config says to run it (what `thin record` applies to its command). */
export interface RunConfig {
  readonly env: readonly string[];
  readonly workingDir: string;
}

/** A thin image as `thin mount`/`thin record` take it: thin.json, plus the run config when the image carries one. */
export interface LoadedThinImage {
  readonly thin: ThinImage;
  readonly run?: RunConfig;
}

function runConfigOf(configBytes: Buffer): RunConfig {
  const doc = JSON.parse(configBytes.toString('utf8')) as { config?: { Env?: unknown; WorkingDir?: unknown } };
  const env = Array.isArray(doc.config?.Env) ? doc.config.Env.filter((e): e is string => typeof e === 'string' && e.includes('=')) : [];
  return { env, workingDir: typeof doc.config?.WorkingDir === 'string' ? doc.config.WorkingDir : '' };
}

/** thin.json out of a thin image: the layer marked as thin (ours), else the image's top layer. */
export async function readThinJsonFromImage(reference: string, options: ImageSourceOptions = {}): Promise<ThinImage> {
  return (await readThinImage(reference, options)).thin;
}

async function readThinImage(reference: string, options: ImageSourceOptions): Promise<LoadedThinImage> {
  const source = await openImageSource(reference, options);
  try {
    const image = await source.resolve();
    const layer = image.layers.find((l) => l.annotations?.[THIN_ANNOTATION] === 'true') ?? image.layers[image.layers.length - 1];
    if (!layer) throw new CvmfsError('E_FORMAT', `${reference}: the image has no layers`);
    const { stream } = await decompressed(await source.openBlob(layer));
    for await (const entry of readTar(stream, { what: `${reference} layer ${layer.digest}` })) {
      const name = entry.header.name.replace(/^(\.\/)+/, '');
      if (name !== THIN_JSON_NAME || entry.header.type !== 'file') continue;
      if (entry.header.size > MAX_THIN_JSON) throw new CvmfsError('E_FORMAT', `${reference}: thin.json is ${entry.header.size} bytes`);
      const chunks: Buffer[] = [];
      for await (const c of entry.body()) chunks.push(c);
      stream.destroy();
      return { thin: parseThinJson(Buffer.concat(chunks).toString('utf8')), run: runConfigOf(image.config.bytes) };
    }
    throw new CvmfsError('E_FORMAT', `${reference}: no thin.json in layer ${layer.digest}; not a thin image`);
  } finally {
    await source.close();
  }
}

export async function loadThinImage(arg: string, options: ImageSourceOptions = {}): Promise<ThinImage> {
  return (await loadThinImageWithConfig(arg, options)).thin;
}

/** Like loadThinImage, with the run config of an image (none for a bare thin.json file). */
export async function loadThinImageWithConfig(arg: string, options: ImageSourceOptions = {}): Promise<LoadedThinImage> {
  if (TRANSPORT.test(arg)) return readThinImage(arg, options);
  const info = await stat(arg).catch((e: NodeJS.ErrnoException) => {
    throw new CvmfsError('E_NOT_FOUND', `${arg}: ${e.code ?? e.message}`, { cause: e });
  });
  return info.isDirectory() ? readThinImage(`oci:${arg}`, options) : { thin: await readThinJsonFile(arg) };
}
