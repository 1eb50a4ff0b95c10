/**
 * `docker-archive:FILE[:NAME:TAG | :@N]` — the `docker save` format: `manifest.json` lists, per image,
 * its `Config` file, its `RepoTags` and its `Layers` (base first). Two generations exist:
 *
 * - up to Docker 24: `<id>/layer.tar` members, plain tars (the same layer may be a symlink to another
 *   `<id>/layer.tar`) and `<config-sha256>.json`; a plain layer's digest is its diff_id, taken from the
 *   config's `rootfs.diff_ids` and verified when read;
 * - Docker 25+: also an OCI layout, members under `blobs/sha256/<hex>`, named by their digest.
 *
 * The archive has no manifest of its own, so one is synthesised (OCI media types; layer types from each
 * layer's magic bytes). Every blob read is verified like any other source's.
 */
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { CvmfsError, FormatError } from '../errors';
import { sha256Digest, VerifyingStream, type Digest } from './digest';
import { detectCompression } from './decompress';
import { createHash } from 'node:crypto';
import { completeImage, MAX_METADATA_BYTES, type ImageSource, type ImageSourceOptions, type ResolvedImage } from './image-source';
import { MEDIA_TYPES, parseJson, parseImageConfig, type Descriptor, type ImageManifest } from './manifest';
import { parseDockerReference, type DockerArchiveReference } from './reference';
import { TarFiles } from './layout-files';

interface ArchiveImage {
  readonly config: string;
  readonly repoTags: readonly string[];
  readonly layers: readonly string[];
}

const BLOB_PATH = /^(?:\.\/)?blobs\/sha256\/([0-9a-f]{64})$/;
const LEGACY_CONFIG = /^(?:\.\/)?([0-9a-f]{64})\.json$/;

function parseArchiveManifest(bytes: Buffer, where: string): ArchiveImage[] {
  const doc = parseJson(bytes, where);
  if (!Array.isArray(doc)) throw new FormatError(`${where} is not a JSON array`);
  return doc.map((raw: unknown, i): ArchiveImage => {
    const o = raw as Record<string, unknown>;
    if (typeof o !== 'object' || o === null || typeof o.Config !== 'string' || !Array.isArray(o.Layers)) {
      throw new FormatError(`${where}[${i}] needs Config and Layers`);
    }
    const layers = o.Layers.map((l, j) => {
      if (typeof l !== 'string') throw new FormatError(`${where}[${i}].Layers[${j}] is not a path`);
      return l;
    });
    const repoTags = Array.isArray(o.RepoTags) ? o.RepoTags.filter((t): t is string => typeof t === 'string') : [];
    return { config: o.Config, repoTags, layers };
  });
}

/** Compares archive tags the way docker does: `alpine:3` and `docker.io/library/alpine:3` are one name. */
function sameName(a: string, b: string): boolean {
  try {
    const x = parseDockerReference(a);
    const y = parseDockerReference(b);
    return x.registry === y.registry && x.repository === y.repository && x.tag === y.tag;
  } catch {
    return a === b;
  }
}

export class DockerArchiveSource implements ImageSource {
  private resolved?: Promise<ResolvedImage>;
  /** Member path of each blob, filled by resolve(). */
  private readonly paths = new Map<Digest, string>();

  private constructor(
    readonly reference: DockerArchiveReference,
    private readonly files: TarFiles,
  ) {}

  static async open(ref: DockerArchiveReference, options: ImageSourceOptions): Promise<DockerArchiveSource> {
    return new DockerArchiveSource(ref, await TarFiles.open(ref.path, options.tmpDir));
  }

  resolve(): Promise<ResolvedImage> {
    return (this.resolved ??= this.load());
  }

  private pick(images: ArchiveImage[], where: string): ArchiveImage {
    const sel = this.reference.select;
    if (sel === undefined) {
      if (images.length !== 1) throw new CvmfsError('E_USAGE', `${where} holds ${images.length} images: name one with docker-archive:FILE:NAME:TAG or :@INDEX`);
      return images[0];
    }
    if ('index' in sel) {
      const img = images[sel.index];
      if (!img) throw new CvmfsError('E_NOT_FOUND', `${where} has no image @${sel.index} (it holds ${images.length})`);
      return img;
    }
    const img = images.find((i) => i.repoTags.some((t) => sameName(t, sel.name)));
    if (!img) {
      const tags = images.flatMap((i) => i.repoTags);
      throw new CvmfsError('E_NOT_FOUND', `${where} has no image ${JSON.stringify(sel.name)} (tags: ${tags.join(', ') || 'none'})`);
    }
    return img;
  }

  private async load(): Promise<ResolvedImage> {
    const where = `${this.files.where} manifest.json`;
    const image = this.pick(parseArchiveManifest(await this.files.readFile('manifest.json', MAX_METADATA_BYTES), where), where);

    const configBytes = await this.files.readFile(image.config, MAX_METADATA_BYTES);
    const named = BLOB_PATH.exec(image.config) ?? LEGACY_CONFIG.exec(image.config);
    const configDigest = sha256Digest(configBytes);
    if (named && `sha256:${named[1]}` !== configDigest) {
      throw new CvmfsError('E_HASH_MISMATCH', `${this.files.where}: config ${image.config} hashes to ${configDigest}`);
    }
    this.paths.set(configDigest, image.config);
    const config = parseImageConfig(configBytes, `${this.files.where} ${image.config}`, image.layers.length);

    const layers: Descriptor[] = [];
    for (const [i, path] of image.layers.entries()) {
      const size = await this.files.size(path);
      const compression = detectCompression(await this.files.head(path, 4));
      const blob = BLOB_PATH.exec(path);
      let digest: Digest;
      if (blob) digest = `sha256:${blob[1]}`;
      else if (compression === 'none' && config.rootfs) digest = config.rootfs.diff_ids[i];
      else digest = await this.hashMember(path);
      this.paths.set(digest, path);
      const mediaType = compression === 'gzip' ? MEDIA_TYPES.ociLayerGzip : compression === 'zstd' ? MEDIA_TYPES.ociLayerZstd : MEDIA_TYPES.ociLayer;
      layers.push({ mediaType, digest, size });
    }
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociManifest,
      config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: configBytes.length },
      layers,
    };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    return completeImage(this, manifest, manifestBytes, this.files.where);
  }

  /** The digest of a member whose name does not tell it (a compressed legacy layer): read it once. */
  private async hashMember(path: string): Promise<Digest> {
    const h = createHash('sha256');
    for await (const c of await this.files.open(path)) h.update(c as Buffer);
    return `sha256:${h.digest('hex')}`;
  }

  async openBlob(desc: Pick<Descriptor, 'digest' | 'size'>): Promise<Readable> {
    // resolve() itself reads the config through here, with the path already known: no waiting on it then.
    let path = this.paths.get(desc.digest);
    if (path === undefined) {
      await this.resolve();
      path = this.paths.get(desc.digest);
    }
    if (path === undefined) throw new CvmfsError('E_NOT_FOUND', `${this.files.where}: no blob ${desc.digest}`);
    const verify = new VerifyingStream(desc, `${this.files.where} ${path}`);
    pipeline(await this.files.open(path), verify, () => {
      // Errors surface on `verify`.
    });
    return verify;
  }

  close(): Promise<void> {
    return this.files.close();
  }
}
