/**
 * The thin image (§8.3): an OCI image whose only layer holds `thin.json`, with the original image's
 * configuration (entrypoint, env, working dir, …), so a runtime that knows thin images starts the
 * original image from CVMFS. Written as an OCI image layout (tag `latest` by default) that skopeo,
 * `ctr images import` and our own registry push read.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { THIN_JSON_NAME } from './thin-json';
import { sha256Digest, type Digest } from './digest';
import { MEDIA_TYPES } from './manifest';
import { buildTar } from './tar-writer';
import { REF_NAME_ANNOTATION } from './oci-layout';

/** Marks the thin image's layer, so tools can tell a thin image from an ordinary one. */
export const THIN_ANNOTATION = 'io.cvmfs-ts.thin-image';

export interface BlobBytes {
  readonly digest: Digest;
  readonly mediaType: string;
  readonly bytes: Buffer;
}

export interface ThinImageArtifacts {
  readonly config: BlobBytes;
  readonly layer: BlobBytes;
  readonly manifest: BlobBytes;
}

/** A one-file tar, reproducible: fixed owner, mode and time. */
function thinLayerTar(thinJson: string): Buffer {
  return buildTar([{ name: THIN_JSON_NAME, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: 0, data: Buffer.from(thinJson) }]);
}

/**
 * Builds the thin image from the original image's config (parsed JSON) and the thin.json text.
 * The config keeps everything but its rootfs, which must name the thin layer's diff id (runtimes
 * verify it), and its history, which must match the layers.
 */
export async function buildThinImage(originalConfig: Record<string, unknown>, thinJson: string, origin: string): Promise<ThinImageArtifacts> {
  const tar = thinLayerTar(thinJson);
  const gz = gzipSync(tar, { level: 9 });
  const layer: BlobBytes = { digest: sha256Digest(gz), mediaType: MEDIA_TYPES.ociLayerGzip, bytes: gz };
  const created = typeof originalConfig.created === 'string' ? originalConfig.created : new Date(0).toISOString();
  const configJson = {
    ...originalConfig,
    rootfs: { type: 'layers', diff_ids: [sha256Digest(tar)] },
    history: [{ created, created_by: 'cvmfs-ts image ingest', comment: `thin image of ${origin}` }],
  };
  const configBytes = Buffer.from(JSON.stringify(configJson));
  const config: BlobBytes = { digest: sha256Digest(configBytes), mediaType: MEDIA_TYPES.ociConfig, bytes: configBytes };
  const manifestJson = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: config.mediaType, digest: config.digest, size: config.bytes.length },
    layers: [{ mediaType: layer.mediaType, digest: layer.digest, size: layer.bytes.length, annotations: { [THIN_ANNOTATION]: 'true' } }],
    annotations: { 'org.opencontainers.image.base.name': origin },
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifestJson));
  return { config, layer, manifest: { digest: sha256Digest(manifestBytes), mediaType: MEDIA_TYPES.ociManifest, bytes: manifestBytes } };
}

/** Writes the artifacts as an OCI image layout in `dir`, tagged `tag`. */
export async function writeOciLayout(dir: string, image: ThinImageArtifacts, tag = 'latest'): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  for (const blob of [image.config, image.layer, image.manifest]) {
    await writeFile(join(blobs, blob.digest.slice('sha256:'.length)), blob.bytes);
  }
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: [
      {
        mediaType: image.manifest.mediaType,
        digest: image.manifest.digest,
        size: image.manifest.bytes.length,
        annotations: { [REF_NAME_ANNOTATION]: tag },
      },
    ],
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
}
