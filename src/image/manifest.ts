/**
 * Image manifests, indexes and configs: OCI image-spec v1 and Docker image manifest v2 schema 2 (and its
 * manifest list), parsed into one normalised shape. Schema 1 manifests are refused: they carry no
 * config and no layer digests of the uncompressed content.
 */
import { FormatError, CvmfsError } from '../errors';
import { parseDigest, type Digest } from './digest';

export const MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  ociConfig: 'application/vnd.oci.image.config.v1+json',
  ociLayer: 'application/vnd.oci.image.layer.v1.tar',
  ociLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  ociLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  dockerConfig: 'application/vnd.docker.container.image.v1+json',
  dockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
} as const;

/** What a registry is asked for, best first. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerManifest,
  MEDIA_TYPES.dockerManifestList,
] as const;

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly urls?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: Platform;
}

/** An image manifest, OCI or Docker schema 2; `mediaType` says which. */
export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType: string;
  readonly config: Descriptor;
  /** Base layer first. */
  readonly layers: readonly Descriptor[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** An OCI image index or Docker manifest list. */
export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType: string;
  readonly manifests: readonly Descriptor[];
  readonly annotations?: Readonly<Record<string, string>>;
}

/** The parts of an image config we read; the raw bytes travel alongside for everything else. */
export interface ImageConfig {
  readonly architecture?: string;
  readonly os?: string;
  readonly rootfs?: { readonly type: string; readonly diff_ids: readonly Digest[] };
  readonly [key: string]: unknown;
}

export type ManifestDocument = { readonly kind: 'manifest'; readonly manifest: ImageManifest } | { readonly kind: 'index'; readonly index: ImageIndex };

function object(v: unknown, where: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new FormatError(`${where} is not a JSON object`);
  return v as Record<string, unknown>;
}

export function parseJson(bytes: Uint8Array, where: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch (e) {
    throw new FormatError(`${where} is not JSON: ${(e as Error).message}`);
  }
}

function stringMap(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  const o = object(v, where);
  for (const [k, x] of Object.entries(o)) if (typeof x !== 'string') throw new FormatError(`${where}.${k} is not a string`);
  return o as Record<string, string>;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  const o = object(v, where);
  if (typeof o.mediaType !== 'string') throw new FormatError(`${where}.mediaType is missing`);
  const size = o.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new FormatError(`${where}.size is not a byte count`);
  const d: { -readonly [K in keyof Descriptor]: Descriptor[K] } = { mediaType: o.mediaType, digest: parseDigest(o.digest, `${where}.digest`), size };
  if (Array.isArray(o.urls)) d.urls = o.urls.filter((u): u is string => typeof u === 'string');
  const annotations = stringMap(o.annotations, `${where}.annotations`);
  if (annotations) d.annotations = annotations;
  if (o.platform !== undefined) {
    const p = object(o.platform, `${where}.platform`);
    if (typeof p.os !== 'string' || typeof p.architecture !== 'string') throw new FormatError(`${where}.platform needs os and architecture`);
    d.platform = { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) };
  }
  return d;
}

/**
 * A manifest or index from its bytes. The kind comes from the document's `mediaType`, else from the
 * HTTP Content-Type, else from its shape (`manifests` vs `layers`), since OCI makes `mediaType` optional.
 */
export function parseManifestDocument(bytes: Uint8Array, where: string, contentType?: string): ManifestDocument {
  const o = object(parseJson(bytes, where), where);
  if (o.schemaVersion !== 2) throw new FormatError(`${where}: schemaVersion ${JSON.stringify(o.schemaVersion)} is not supported (only 2)`);
  const declared = typeof o.mediaType === 'string' ? o.mediaType : contentType?.split(';')[0].trim();
  const isIndex =
    declared === MEDIA_TYPES.ociIndex || declared === MEDIA_TYPES.dockerManifestList || (declared === undefined && Array.isArray(o.manifests));
  const annotations = stringMap(o.annotations, `${where}.annotations`);
  if (isIndex) {
    if (!Array.isArray(o.manifests)) throw new FormatError(`${where}: an index without manifests`);
    const manifests = o.manifests.map((m, i) => parseDescriptor(m, `${where}.manifests[${i}]`));
    return { kind: 'index', index: { schemaVersion: 2, mediaType: declared ?? MEDIA_TYPES.ociIndex, manifests, ...(annotations ? { annotations } : {}) } };
  }
  if (declared !== undefined && declared !== MEDIA_TYPES.ociManifest && declared !== MEDIA_TYPES.dockerManifest) {
    throw new FormatError(`${where}: media type ${JSON.stringify(declared)} is not an image manifest`);
  }
  if (!Array.isArray(o.layers)) throw new FormatError(`${where}: a manifest without layers`);
  const config = parseDescriptor(o.config, `${where}.config`);
  const layers = o.layers.map((l, i) => parseDescriptor(l, `${where}.layers[${i}]`));
  return {
    kind: 'manifest',
    manifest: { schemaVersion: 2, mediaType: declared ?? MEDIA_TYPES.ociManifest, config, layers, ...(annotations ? { annotations } : {}) },
  };
}

/**
 * The manifest for `platform` in an index. Variants only decide when the index has several for the
 * same os/architecture. Entries without a platform count only when nothing else is there (a
 * single-image OCI layout often writes none); attestation manifests (`unknown/unknown`) never match.
 */
export function selectPlatform(index: ImageIndex, platform: Platform, where: string): Descriptor {
  const images = index.manifests.filter((m) => m.mediaType !== MEDIA_TYPES.ociIndex && m.mediaType !== MEDIA_TYPES.dockerManifestList);
  const matching = images.filter((m) => m.platform?.os === platform.os && m.platform.architecture === platform.architecture);
  const exact = matching.find((m) => (m.platform?.variant ?? undefined) === platform.variant);
  if (exact) return exact;
  if (matching.length > 0) return matching[0];
  const unlabelled = images.filter((m) => m.platform === undefined);
  if (unlabelled.length === 1 && images.length === 1) return unlabelled[0];
  const offered = images.map((m) => (m.platform ? `${m.platform.os}/${m.platform.architecture}` : 'unlabelled')).join(', ');
  throw new CvmfsError('E_NOT_FOUND', `${where}: no manifest for ${platform.os}/${platform.architecture} (has: ${offered || 'none'})`);
}

/** The config's fields we use, checked; `layerCount` must match its diff_ids when it has them. */
export function parseImageConfig(bytes: Uint8Array, where: string, layerCount: number): ImageConfig {
  const o = object(parseJson(bytes, where), where);
  if (o.rootfs !== undefined) {
    const r = object(o.rootfs, `${where}.rootfs`);
    if (!Array.isArray(r.diff_ids)) throw new FormatError(`${where}.rootfs.diff_ids is missing`);
    const ids = r.diff_ids.map((d, i) => parseDigest(d, `${where}.rootfs.diff_ids[${i}]`));
    if (ids.length !== layerCount) throw new FormatError(`${where}: ${ids.length} diff_ids for ${layerCount} layers`);
  }
  return o as ImageConfig;
}

/** True for layer types that are not in the image and must not be fetched (Windows base layers). */
export function isForeignLayer(d: Descriptor): boolean {
  return d.mediaType === MEDIA_TYPES.dockerForeignLayer || d.mediaType.startsWith('application/vnd.oci.image.layer.nondistributable.');
}
