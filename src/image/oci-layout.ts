/**
 * `oci:DIR[:TAG]` — an OCI image layout (image-spec "image-layout"): `oci-layout`, `index.json`, and
 * content-addressed blobs under `blobs/sha256/`. Also serves `oci-archive:` over a tar's members.
 *
 * Which image: with a tag, the index.json entries whose `org.opencontainers.image.ref.name` is that tag;
 * without, all entries, which must then be one image (or one per platform). An image index found on the
 * way is followed to the manifest for our platform (default linux/amd64).
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { CvmfsError, FormatError } from '../errors';
import { digestHex, verifyBytes, VerifyingStream } from './digest';
import {
  completeImage,
  MAX_METADATA_BYTES,
  platformOf,
  readSmallBlob,
  type ImageSource,
  type ImageSourceOptions,
  type ResolvedImage,
} from './image-source';
import { parseJson, parseManifestDocument, selectPlatform, type Descriptor, type ImageIndex } from './manifest';
import type { ImageReference } from './reference';
import { DirectoryFiles, type LayoutFiles } from './layout-files';

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** Nested indexes followed at most (index → index → manifest is the deepest seen in practice). */
const MAX_INDEX_DEPTH = 4;

export class OciLayoutSource implements ImageSource {
  private resolved?: Promise<ResolvedImage>;

  constructor(
    readonly reference: ImageReference,
    private readonly files: LayoutFiles,
    private readonly tag: string | undefined,
    private readonly options: ImageSourceOptions,
  ) {}

  static async open(ref: ImageReference & { transport: 'oci' }, options: ImageSourceOptions): Promise<OciLayoutSource> {
    const files = new DirectoryFiles(ref.path);
    await checkLayout(files);
    return new OciLayoutSource(ref, files, ref.tag, options);
  }

  resolve(): Promise<ResolvedImage> {
    return (this.resolved ??= this.load());
  }

  private async load(): Promise<ResolvedImage> {
    const where = this.files.where;
    const doc = parseManifestDocument(await this.files.readFile('index.json', MAX_METADATA_BYTES), `${where}/index.json`, undefined);
    if (doc.kind !== 'index') throw new FormatError(`${where}/index.json is not an image index`);
    let desc = pickEntry(doc.index, this.tag, this.options, where);
    for (let depth = 0; depth < MAX_INDEX_DEPTH; depth++) {
      const what = `${where} manifest ${desc.digest}`;
      const bytes = await readSmallBlob(this, desc, what);
      verifyBytes(bytes, desc, what);
      const d = parseManifestDocument(bytes, what, desc.mediaType);
      if (d.kind === 'manifest') return completeImage(this, d.manifest, bytes, what);
      desc = selectPlatform(d.index, platformOf(this.options), what);
    }
    throw new FormatError(`${where}: image indexes nested deeper than ${MAX_INDEX_DEPTH}`);
  }

  async openBlob(desc: Pick<Descriptor, 'digest' | 'size'>): Promise<Readable> {
    const src = await this.files.open(`blobs/sha256/${digestHex(desc.digest)}`);
    const verify = new VerifyingStream(desc, `${this.files.where} blob ${desc.digest}`);
    pipeline(src, verify, () => {
      // Errors surface on `verify`, which pipeline destroys with them.
    });
    return verify;
  }

  close(): Promise<void> {
    return this.files.close();
  }
}

/** `oci-layout` must exist and name a version 1 layout. */
export async function checkLayout(files: LayoutFiles): Promise<void> {
  const o = parseJson(await files.readFile('oci-layout', 4096), `${files.where}/oci-layout`);
  const version = typeof o === 'object' && o !== null ? (o as Record<string, unknown>).imageLayoutVersion : undefined;
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new FormatError(`${files.where}/oci-layout: imageLayoutVersion ${JSON.stringify(version)} is not supported`);
  }
}

function pickEntry(index: ImageIndex, tag: string | undefined, options: ImageSourceOptions, where: string): Descriptor {
  const entries = tag === undefined ? index.manifests : index.manifests.filter((m) => m.annotations?.[REF_NAME_ANNOTATION] === tag);
  if (entries.length === 0) {
    const tags = index.manifests.map((m) => m.annotations?.[REF_NAME_ANNOTATION]).filter((t) => t !== undefined);
    throw new CvmfsError('E_NOT_FOUND', `${where}: no image ${tag === undefined ? '' : `tagged ${JSON.stringify(tag)} `}in index.json (tags: ${tags.join(', ') || 'none'})`);
  }
  if (entries.length === 1) return entries[0];
  // Several: they must be the same image for different platforms, not differently tagged images.
  const names = new Set(entries.map((m) => m.annotations?.[REF_NAME_ANNOTATION]));
  if (tag === undefined && names.size > 1) {
    throw new CvmfsError('E_USAGE', `${where} holds ${entries.length} images (${[...names].join(', ')}): name one with oci:DIR:TAG`);
  }
  try {
    return selectPlatform({ ...index, manifests: entries }, platformOf(options), `${where}/index.json`);
  } catch (e) {
    if (tag !== undefined) throw e;
    throw new CvmfsError('E_USAGE', `${where} holds ${entries.length} images: name one with oci:DIR:TAG`, { cause: e });
  }
}
