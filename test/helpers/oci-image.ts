/**
 * Small OCI images for container tests, built offline: layers from an in-memory file list (the
 * static busybox of the busybox-static package makes a runnable base), written as an OCI archive
 * that `ctr images import` reads, and the same layer content as a plain directory (to fake a CVMFS
 * repository's `.layers/xx/<digest>/layerfs`).
 *
 *   const base = await buildLayer(busyboxFiles());
 *   const img = await writeOciArchive(join(dir, 'img.tar'), 'example.org/test/busybox:1', [base]);
 *   await materializeLayer(base.files, join(cvmfsRoot, 'repo', layerPath(base.digest)));
 */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import { mkdir, writeFile, symlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import * as tar from 'tar-stream';

/** A layer's content: path (no leading slash) → file content, or a symlink, or a directory. */
export type LayerFiles = Record<string, string | Buffer | { symlink: string } | { dir: true }>;

export interface Layer {
  readonly files: LayerFiles;
  /** The gzipped tar. */
  readonly blob: Buffer;
  /** sha256:<hex> of the blob (the manifest's layer digest, the CVMFS `.layers` name). */
  readonly digest: string;
  /** sha256:<hex> of the uncompressed tar (the config's diff_id). */
  readonly diffId: string;
}

export interface ImageConfig {
  readonly cmd?: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly env?: readonly string[];
}

export interface OciImage {
  readonly name: string;
  readonly manifestDigest: string;
  readonly configDigest: string;
  readonly layers: readonly Layer[];
}

const MTIME = new Date(1_600_000_000_000);
const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** /bin/busybox (static) plus symlinks for a few applets; the base layer of test images. */
export function busyboxFiles(applets: readonly string[] = ['sh', 'echo', 'cat', 'ls', 'wc', 'touch', 'mkdir', 'rm', 'sleep']): LayerFiles {
  const files: LayerFiles = { bin: { dir: true }, 'bin/busybox': readFileSync('/bin/busybox'), tmp: { dir: true }, etc: { dir: true } };
  for (const a of applets) files[`bin/${a}`] = { symlink: 'busybox' };
  files['etc/passwd'] = 'root:x:0:0:root:/root:/bin/sh\n';
  return files;
}

function tarOf(files: LayerFiles): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<Buffer>((ok, fail) => {
    pack.on('end', () => ok(Buffer.concat(chunks)));
    pack.on('error', fail);
  });
  // Parents before children, in a stable order, so equal content gives equal digests.
  for (const path of Object.keys(files).sort()) {
    const v = files[path]!;
    if (typeof v === 'string' || Buffer.isBuffer(v)) {
      const body = Buffer.from(v);
      const exec = path.startsWith('bin/') || path.endsWith('.sh');
      pack.entry({ name: path, type: 'file', mode: exec ? 0o755 : 0o644, mtime: MTIME, size: body.length }, body);
    } else if ('symlink' in v) {
      pack.entry({ name: path, type: 'symlink', linkname: v.symlink, mode: 0o777, mtime: MTIME });
    } else {
      pack.entry({ name: `${path}/`, type: 'directory', mode: 0o755, mtime: MTIME });
    }
  }
  pack.finalize();
  return done;
}

export async function buildLayer(files: LayerFiles): Promise<Layer> {
  const raw = await tarOf(files);
  const blob = gzipSync(raw, { level: 1 });
  return { files, blob, digest: sha256(blob), diffId: sha256(raw) };
}

/** Writes a layer's content as a directory tree (what unpacking it gives). */
export async function materializeLayer(files: LayerFiles, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const path of Object.keys(files).sort()) {
    const v = files[path]!;
    const target = join(dir, path);
    if (typeof v === 'string' || Buffer.isBuffer(v)) {
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, v, { mode: path.startsWith('bin/') ? 0o755 : 0o644 });
    } else if ('symlink' in v) {
      await mkdir(dirname(target), { recursive: true });
      await symlink(v.symlink, target);
    } else {
      await mkdir(target, { recursive: true });
    }
  }
}

/**
 * Writes an OCI archive (tar of an OCI image layout) holding one linux/amd64 image. The index
 * carries `io.containerd.image.name`, so `ctr images import` names the image `name`.
 */
export async function writeOciArchive(path: string, name: string, layers: readonly Layer[], config: ImageConfig = {}): Promise<OciImage> {
  const configJson = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: config.cmd ?? ['/bin/sh'], Entrypoint: config.entrypoint, Env: config.env ?? ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(configJson), size: configJson.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.blob.length })),
    }),
  );
  const tag = name.slice(name.lastIndexOf(':') + 1);
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(manifest),
          size: manifest.length,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': tag },
        },
      ],
    }),
  );
  const blobs = new Map<string, Buffer>([
    [sha256(configJson), configJson],
    [sha256(manifest), manifest],
    ...layers.map((l): [string, Buffer] => [l.digest, l.blob]),
  ]);
  const pack = tar.pack();
  const out: Buffer[] = [];
  pack.on('data', (c: unknown) => out.push(c as Buffer));
  const finished = new Promise<void>((ok, fail) => {
    pack.on('end', ok);
    pack.on('error', fail);
  });
  const file = (n: string, b: Buffer) => pack.entry({ name: n, type: 'file', mode: 0o644, mtime: MTIME, size: b.length }, b);
  file('oci-layout', Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
  file('index.json', index);
  pack.entry({ name: 'blobs/', type: 'directory', mode: 0o755, mtime: MTIME });
  pack.entry({ name: 'blobs/sha256/', type: 'directory', mode: 0o755, mtime: MTIME });
  for (const [digest, b] of blobs) file(`blobs/sha256/${digest.slice('sha256:'.length)}`, b);
  pack.finalize();
  await finished;
  await writeFile(path, Buffer.concat(out));
  return { name, manifestDigest: sha256(manifest), configDigest: sha256(configJson), layers };
}
