/**
 * `docker://HOST[:PORT]/NAME[:TAG|@sha256:…]` — an image in a registry, read through RegistryClient;
 * and `pushImage`, which uploads an image (the thin image) to one.
 */
import type { Readable } from 'node:stream';
import { CvmfsError, FormatError } from '../errors';
import { sha256Digest, type Digest } from './digest';
import { completeImage, platformOf, type ImageSource, type ImageSourceOptions, type ResolvedImage } from './image-source';
import { MEDIA_TYPES, parseManifestDocument, selectPlatform, type Descriptor } from './manifest';
import { parseDockerReference, type DockerReference } from './reference';
import { RegistryClient, type PushBlob, type RegistryClientOptions } from './registry-client';

/** Nested indexes followed at most. */
const MAX_INDEX_DEPTH = 4;

export class RegistrySource implements ImageSource {
  private resolved?: Promise<ResolvedImage>;

  private constructor(
    readonly reference: DockerReference,
    private readonly client: RegistryClient,
    private readonly options: ImageSourceOptions,
  ) {}

  static async open(ref: DockerReference, options: ImageSourceOptions): Promise<RegistrySource> {
    return new RegistrySource(ref, new RegistryClient(ref.registry, options), options);
  }

  resolve(): Promise<ResolvedImage> {
    return (this.resolved ??= this.load());
  }

  private async load(): Promise<ResolvedImage> {
    const { repository } = this.reference;
    let reference: string = this.reference.digest ?? this.reference.tag ?? 'latest';
    for (let depth = 0; depth < MAX_INDEX_DEPTH; depth++) {
      const where = `${this.reference.registry}/${repository}@${reference}`;
      const got = await this.client.getManifest(repository, reference);
      const doc = parseManifestDocument(got.bytes, where, got.contentType);
      if (doc.kind === 'manifest') return completeImage(this, doc.manifest, got.bytes, where);
      reference = selectPlatform(doc.index, platformOf(this.options), where).digest;
    }
    throw new FormatError(`${this.reference.registry}/${repository}: image indexes nested deeper than ${MAX_INDEX_DEPTH}`);
  }

  openBlob(desc: Pick<Descriptor, 'digest' | 'size'>): Promise<Readable> {
    return this.client.openBlob(this.reference.repository, desc);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}

export interface PushImageSpec {
  /** The manifest to store, exactly these bytes. */
  readonly manifestBytes: Buffer;
  /** Content-Type of the manifest; default its `mediaType` field, else the OCI manifest type. */
  readonly manifestMediaType?: string;
  /** The config blob the manifest names. */
  readonly configBytes: Buffer;
  /** Layer blobs we have. A manifest layer not listed here must already be in the repository. */
  readonly blobs: readonly PushBlob[];
}

export interface PushResult {
  readonly manifestDigest: Digest;
  /** Blobs uploaded. */
  readonly uploaded: readonly Digest[];
  /** Blobs the registry already had. */
  readonly present: readonly Digest[];
}

/**
 * Pushes an image: each blob unless the registry has it already (HEAD), the config, then the manifest
 * under the reference's tag (or digest). The registry checks every blob's digest on upload.
 */
export async function pushImage(target: DockerReference | string, spec: PushImageSpec, options: RegistryClientOptions = {}): Promise<PushResult> {
  const ref = typeof target === 'string' ? parseDockerReference(target.replace(/^docker:\/\//, '')) : target;
  const doc = parseManifestDocument(spec.manifestBytes, 'manifest to push', spec.manifestMediaType);
  if (doc.kind !== 'manifest') throw new FormatError('pushImage: the manifest is an index, expected an image manifest');
  const manifest = doc.manifest;
  const configDigest = sha256Digest(spec.configBytes);
  if (configDigest !== manifest.config.digest) {
    throw new FormatError(`pushImage: the config hashes to ${configDigest}, the manifest names ${manifest.config.digest}`);
  }
  const manifestDigest = sha256Digest(spec.manifestBytes);
  if (ref.digest && ref.digest !== manifestDigest) throw new FormatError(`pushImage: the manifest is ${manifestDigest}, the reference pins ${ref.digest}`);
  const byDigest = new Map(spec.blobs.map((b) => [b.digest, b]));
  const client = new RegistryClient(ref.registry, options);
  const uploaded: Digest[] = [];
  const present: Digest[] = [];
  try {
    const needed: PushBlob[] = [
      ...manifest.layers.map((l): PushBlob => byDigest.get(l.digest) ?? { digest: l.digest, size: l.size, open: () => missing(l.digest) }),
      { digest: configDigest, size: spec.configBytes.length, open: () => spec.configBytes },
    ];
    for (const blob of needed) {
      if (await client.hasBlob(ref.repository, blob.digest)) {
        present.push(blob.digest);
        continue;
      }
      await client.pushBlob(ref.repository, blob);
      uploaded.push(blob.digest);
    }
    const mediaType = spec.manifestMediaType ?? manifest.mediaType ?? MEDIA_TYPES.ociManifest;
    await client.putManifest(ref.repository, ref.tag ?? manifestDigest, spec.manifestBytes, mediaType);
  } finally {
    await client.close();
  }
  return { manifestDigest, uploaded, present };
}

function missing(digest: Digest): never {
  throw new CvmfsError('E_NOT_FOUND', `pushImage: layer ${digest} is neither given nor in the target repository`);
}
