/**
 * Where an image comes from, behind one interface for every transport (reference.ts): resolve the
 * manifest for our platform and its config, then stream blobs by descriptor.
 *
 * Every blob comes out verified: `openBlob` returns a stream that fails at its end instead of ending
 * when the bytes do not hash to the descriptor's digest or do not have its size (digest.ts), so a
 * consumer that commits only after the end never commits corrupt content. Manifests and configs are
 * checked whole before they are parsed.
 */
import type { Readable } from 'node:stream';
import { CvmfsError } from '../errors';
import { sha256Digest, verifyBytes, type Digest } from './digest';
import { parseImageConfig, DEFAULT_PLATFORM, type Descriptor, type ImageConfig, type ImageManifest, type Platform } from './manifest';
import { parseImageReference, type ImageReference } from './reference';

export interface ResolvedImage {
  /** Normalised manifest (OCI or Docker schema 2; `mediaType` says which). */
  readonly manifest: ImageManifest;
  /** The manifest exactly as stored or served (for pushing or recording it unchanged). */
  readonly manifestBytes: Buffer;
  /** sha256 of manifestBytes. */
  readonly manifestDigest: Digest;
  readonly config: {
    readonly value: ImageConfig;
    readonly bytes: Buffer;
    readonly digest: Digest;
  };
  /** The manifest's layers, base first. */
  readonly layers: readonly Descriptor[];
  /** `rootfs.diff_ids` of the config (sha256 of each uncompressed layer), when it has them. */
  readonly diffIds?: readonly Digest[];
}

export interface ImageSource {
  readonly reference: ImageReference;
  /** The image for the platform asked for; the same object on later calls. */
  resolve(): Promise<ResolvedImage>;
  /** The blob's bytes, verified against `desc.digest` and `desc.size` while they stream. */
  openBlob(desc: Pick<Descriptor, 'digest' | 'size'>): Promise<Readable>;
  /** Releases files, temporary copies and connections. */
  close(): Promise<void>;
}

export interface Credentials {
  readonly username: string;
  readonly password: string;
}

export interface ImageSourceOptions {
  /** Default linux/amd64. */
  readonly platform?: Platform;
  /**
   * Registry credentials, sent to a token realm or as Basic auth when the registry asks. Not read from
   * the environment here: the CLI passes `credentialsFromEnv()` (registry-client.ts) when it wants to.
   */
  readonly credentials?: Credentials;
  /** Verify registry TLS certificates (default true). */
  readonly tlsVerify?: boolean;
  /** Talk plain HTTP to the registry instead of HTTPS (default false), like skopeo's tls-verify=false on a local registry. */
  readonly plainHttp?: boolean;
  /** Where temporary files go (compressed archives); default os.tmpdir(). */
  readonly tmpDir?: string;
  readonly userAgent?: string;
}

/** Largest manifest, index or config we read into memory. */
export const MAX_METADATA_BYTES = 16 << 20;

/** The whole of a small verified blob (manifest, index, config). */
export async function readSmallBlob(source: ImageSource, desc: Pick<Descriptor, 'digest' | 'size'>, what: string): Promise<Buffer> {
  if (desc.size > MAX_METADATA_BYTES) throw new CvmfsError('E_FORMAT', `${what} ${desc.digest} is ${desc.size} bytes, too large`);
  const chunks: Buffer[] = [];
  for await (const c of await source.openBlob(desc)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Loads and checks the config of `manifest` and assembles the resolved image. */
export async function completeImage(source: ImageSource, manifest: ImageManifest, manifestBytes: Buffer, where: string): Promise<ResolvedImage> {
  const configBytes = await readSmallBlob(source, manifest.config, `${where} config`);
  verifyBytes(configBytes, manifest.config, `${where} config ${manifest.config.digest}`);
  const value = parseImageConfig(configBytes, `${where} config`, manifest.layers.length);
  return {
    manifest,
    manifestBytes,
    manifestDigest: sha256Digest(manifestBytes),
    config: { value, bytes: configBytes, digest: manifest.config.digest },
    layers: manifest.layers,
    ...(value.rootfs ? { diffIds: value.rootfs.diff_ids } : {}),
  };
}

export function platformOf(options: ImageSourceOptions): Platform {
  return options.platform ?? DEFAULT_PLATFORM;
}

/** Opens `source` (skopeo transport syntax) with the implementation for its transport. */
export async function openImageSource(source: string | ImageReference, options: ImageSourceOptions = {}): Promise<ImageSource> {
  const ref = typeof source === 'string' ? parseImageReference(source) : source;
  // Required lazily: each transport pulls in only its own dependencies.
  switch (ref.transport) {
    case 'oci':
      return (await import('./oci-layout')).OciLayoutSource.open(ref, options);
    case 'oci-archive':
      return (await import('./oci-archive')).openOciArchive(ref, options);
    case 'docker-archive':
      return (await import('./docker-archive')).DockerArchiveSource.open(ref, options);
    case 'docker':
      return (await import('./registry-source')).RegistrySource.open(ref, options);
  }
}
