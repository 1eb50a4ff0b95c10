/**
 * Builds OCI images offline for tests: layers from a list of entries (files, directories, symlinks,
 * hardlinks, devices, FIFOs, whiteouts, opaque markers, xattrs incl. binary ones), compressed with gzip,
 * zstd or not at all, written as an OCI image layout directory (`oci:DIR:TAG`) or an OCI archive for
 * `ctr images import` (`writeOciArchive`). Other transports come from it with skopeo (`convertImage`).
 *
 * Example:
 *   const img = await writeOciLayout(dir, {
 *     tag: 'v1',
 *     layers: [
 *       { compression: 'gzip', entries: [dir('etc'), file('etc/motd', 'hi\n', { mode: 0o600 })] },
 *       { compression: 'zstd', entries: [whiteout('etc/motd'), opaque('var/cache')] },
 *     ],
 *   });
 *   // img.layers[i].digest / .diffId / .size, img.manifestDigest, img.configBytes …
 *
 * Layer tars are written by src/image/tar-writer.ts (PAX like Go's archive/tar). Entries are written
 * in the given order and parent directories are NOT added implicitly (so tests can check how a reader
 * copes with missing parents); `withParents()` adds them.
 */
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { buildTar, type TarWriteEntry } from '../../src/image/tar-writer';
import { unpackLayer } from '../../src/image/layer-unpack';
import { MEDIA_TYPES, type Platform } from '../../src/image/manifest';
import type { Digest } from '../../src/image/digest';

/** Owner, mode, mtime and xattrs common to every entry kind. */
export interface EntryMeta {
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Seconds since the epoch; default FIXED_MTIME. */
  readonly mtime?: number;
  /** Raw values: a Buffer is written byte for byte (binary xattrs such as security.capability). */
  readonly xattrs?: Readonly<Record<string, Buffer | string>>;
}

export type LayerEntry =
  | (EntryMeta & { readonly kind: 'file'; readonly path: string; readonly content: Buffer | string })
  | (EntryMeta & { readonly kind: 'dir'; readonly path: string })
  | (EntryMeta & { readonly kind: 'symlink'; readonly path: string; readonly target: string })
  | (EntryMeta & { readonly kind: 'hardlink'; readonly path: string; readonly target: string })
  | (EntryMeta & { readonly kind: 'char' | 'block'; readonly path: string; readonly major: number; readonly minor: number })
  | (EntryMeta & { readonly kind: 'fifo'; readonly path: string })
  /** `path` is the name hidden: written as `<dir>/.wh.<base>`. */
  | (EntryMeta & { readonly kind: 'whiteout'; readonly path: string })
  /** `path` is the directory made opaque: written as `<path>/.wh..wh..opq`. */
  | (EntryMeta & { readonly kind: 'opaque'; readonly path: string })
  /** Any raw member, e.g. hostile names (`../x`, `/etc/passwd`). */
  | { readonly kind: 'raw'; readonly entry: TarWriteEntry };

export type Compression = 'gzip' | 'zstd' | 'none';

export interface LayerSpec {
  readonly entries: readonly LayerEntry[];
  /** Default gzip. */
  readonly compression?: Compression;
  /** Default: the OCI type matching the compression. */
  readonly mediaType?: string;
}

export interface ImageSpec {
  readonly layers: readonly LayerSpec[];
  /** `org.opencontainers.image.ref.name` in index.json; default 'latest'. */
  readonly tag?: string;
  /** Default linux/amd64. */
  readonly platform?: Platform;
  /** Merged into the config's `config` object (Env, Cmd, Entrypoint, …). */
  readonly runConfig?: Readonly<Record<string, unknown>>;
  /**
   * Also put manifests for these platforms (one small different layer each) beside the image, all
   * behind one image index that index.json references under the tag: tests platform selection.
   */
  readonly decoyPlatforms?: readonly Platform[];
  /** More annotations on the image's entry in index.json (e.g. `io.containerd.image.name`). */
  readonly annotations?: Readonly<Record<string, string>>;
}

export interface BuiltLayer {
  /** The uncompressed tar. */
  readonly tar: Buffer;
  /** The blob as stored (compressed or not). */
  readonly blob: Buffer;
  readonly digest: Digest;
  readonly diffId: Digest;
  readonly size: number;
  readonly mediaType: string;
}

export interface BuiltImage {
  readonly dir: string;
  readonly tag: string;
  readonly layers: readonly BuiltLayer[];
  readonly configBytes: Buffer;
  readonly configDigest: Digest;
  readonly manifestBytes: Buffer;
  readonly manifestDigest: Digest;
  /** The index referenced from index.json when decoyPlatforms were given. */
  readonly indexDigest?: Digest;
}

export const FIXED_MTIME = 1_600_000_000;

export const file = (path: string, content: Buffer | string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'file', path, content, ...meta });
export const dir = (path: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'dir', path, ...meta });
export const symlink = (path: string, target: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'symlink', path, target, ...meta });
export const hardlink = (path: string, target: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'hardlink', path, target, ...meta });
export const device = (kind: 'char' | 'block', path: string, major: number, minor: number, meta: EntryMeta = {}): LayerEntry => ({ kind, path, major, minor, ...meta });
export const fifo = (path: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'fifo', path, ...meta });
export const whiteout = (path: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'whiteout', path, ...meta });
export const opaque = (path: string, meta: EntryMeta = {}): LayerEntry => ({ kind: 'opaque', path, ...meta });
export const raw = (entry: TarWriteEntry): LayerEntry => ({ kind: 'raw', entry });

/** `security.capability` (VFS_CAP_REVISION_2, effective) granting the capability numbers given. */
export function fileCapability(...caps: number[]): Buffer {
  const b = Buffer.alloc(20);
  b.writeUInt32LE(0x02000001, 0);
  for (const c of caps) {
    const word = c < 32 ? 4 : 12;
    b.writeUInt32LE((b.readUInt32LE(word) | (1 << c % 32)) >>> 0, word);
  }
  return b;
}

/** `entries` preceded by directory entries for every missing parent (0755, root, FIXED_MTIME). */
export function withParents(entries: readonly LayerEntry[]): LayerEntry[] {
  const seen = new Set<string>();
  const out: LayerEntry[] = [];
  for (const e of entries) {
    if (e.kind === 'raw') {
      out.push(e);
      continue;
    }
    const parts = e.path.split('/').filter(Boolean);
    const upto = e.kind === 'opaque' ? parts.length : parts.length - 1;
    for (let i = 1; i <= upto; i++) {
      const p = parts.slice(0, i).join('/');
      if (!seen.has(p)) {
        seen.add(p);
        out.push(dir(p));
      }
    }
    if (e.kind === 'dir') seen.add(parts.join('/'));
    out.push(e);
  }
  return out;
}

function tarEntryOf(e: LayerEntry): TarWriteEntry {
  if (e.kind === 'raw') return e.entry;
  const meta = { mode: e.mode, uid: e.uid ?? 0, gid: e.gid ?? 0, mtime: e.mtime ?? FIXED_MTIME, xattrs: e.xattrs };
  const split = (p: string): [string, string] => {
    const i = p.lastIndexOf('/');
    return i < 0 ? ['', p] : [p.slice(0, i + 1), p.slice(i + 1)];
  };
  switch (e.kind) {
    case 'file':
      return { ...meta, name: e.path, type: 'file', data: Buffer.from(e.content) };
    case 'dir':
      return { ...meta, name: e.path, type: 'directory' };
    case 'symlink':
      return { ...meta, name: e.path, type: 'symlink', linkname: e.target };
    case 'hardlink':
      return { ...meta, name: e.path, type: 'link', linkname: e.target };
    case 'char':
    case 'block':
      return { ...meta, name: e.path, type: e.kind === 'char' ? 'character-device' : 'block-device', devmajor: e.major, devminor: e.minor };
    case 'fifo':
      return { ...meta, name: e.path, type: 'fifo' };
    case 'whiteout': {
      const [d, base] = split(e.path);
      return { ...meta, name: `${d}.wh.${base}`, type: 'file', data: Buffer.alloc(0) };
    }
    case 'opaque':
      return { ...meta, name: `${e.path.replace(/\/$/, '')}/.wh..wh..opq`, type: 'file', data: Buffer.alloc(0) };
  }
}

export function sha256(data: Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

function compressWith(c: Compression, tar: Buffer): Buffer {
  return c === 'gzip' ? gzipSync(tar) : c === 'zstd' ? zstdCompress(tar) : tar;
}

const LAYER_TYPES: Record<Compression, string> = { gzip: MEDIA_TYPES.ociLayerGzip, zstd: MEDIA_TYPES.ociLayerZstd, none: MEDIA_TYPES.ociLayer };

export function buildLayer(spec: LayerSpec): BuiltLayer {
  const tar = buildTar(spec.entries.map(tarEntryOf));
  const compression = spec.compression ?? 'gzip';
  const blob = compressWith(compression, tar);
  return { tar, blob, digest: sha256(blob), diffId: sha256(tar), size: blob.length, mediaType: spec.mediaType ?? LAYER_TYPES[compression] };
}

/** Unpacks a built layer into `dir` (as root), as ingest fills a repository's `.layers/xx/<digest>/layerfs`. */
export async function materializeLayer(layer: BuiltLayer, dir: string): Promise<void> {
  await unpackLayer(Readable.from([layer.blob]), dir, { mediaType: layer.mediaType, what: layer.digest });
}

async function writeBlob(layoutDir: string, data: Buffer): Promise<Digest> {
  const d = sha256(data);
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layoutDir, 'blobs', 'sha256', d.slice(7)), data);
  return d;
}

async function writeImage(layoutDir: string, layers: readonly BuiltLayer[], platform: Platform, runConfig: Readonly<Record<string, unknown>> = {}) {
  for (const l of layers) await writeBlob(layoutDir, l.blob);
  const config = {
    created: new Date(FIXED_MTIME * 1000).toISOString(),
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], ...runConfig },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: new Date(FIXED_MTIME * 1000).toISOString(), created_by: 'test/helpers/oci.ts' })),
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = await writeBlob(layoutDir, configBytes);
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await writeBlob(layoutDir, manifestBytes);
  return { configBytes, configDigest, manifestBytes, manifestDigest };
}

/**
 * Writes the image into the OCI layout at `layoutDir` (created if needed; an existing index.json
 * keeps its other entries, one with the same tag is replaced) and returns what went in.
 */
export async function writeOciLayout(layoutDir: string, spec: ImageSpec): Promise<BuiltImage> {
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const tag = spec.tag ?? 'latest';
  const platform = spec.platform ?? { os: 'linux', architecture: 'amd64' };
  const layers = spec.layers.map(buildLayer);
  const img = await writeImage(layoutDir, layers, platform, spec.runConfig);
  let entry: Record<string, unknown> = {
    mediaType: MEDIA_TYPES.ociManifest,
    digest: img.manifestDigest,
    size: img.manifestBytes.length,
    platform,
  };
  let indexDigest: Digest | undefined;
  if (spec.decoyPlatforms && spec.decoyPlatforms.length > 0) {
    const manifests: Array<Record<string, unknown>> = [];
    for (const [i, p] of spec.decoyPlatforms.entries()) {
      const decoy = buildLayer({ entries: [file(`decoy-${i}`, `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}\n`)] });
      const d = await writeImage(layoutDir, [decoy], p);
      manifests.push({ mediaType: MEDIA_TYPES.ociManifest, digest: d.manifestDigest, size: d.manifestBytes.length, platform: p });
    }
    // The real image in the middle: selection must not just take the first or the last.
    manifests.splice(Math.floor(manifests.length / 2), 0, { ...entry });
    const indexBytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MEDIA_TYPES.ociIndex, manifests }));
    indexDigest = await writeBlob(layoutDir, indexBytes);
    entry = { mediaType: MEDIA_TYPES.ociIndex, digest: indexDigest, size: indexBytes.length };
  }
  entry.annotations = { ...spec.annotations, 'org.opencontainers.image.ref.name': tag };
  let index: { schemaVersion: number; mediaType?: string; manifests: Array<Record<string, unknown>> } = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociIndex,
    manifests: [],
  };
  try {
    index = JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as typeof index;
  } catch {
    // a new layout
  }
  index.manifests = index.manifests.filter((m) => (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push(entry);
  await writeFile(join(layoutDir, 'index.json'), JSON.stringify(index));
  return { dir: layoutDir, tag, layers, ...img, ...(indexDigest ? { indexDigest } : {}) };
}

/**
 * Writes the image as an OCI archive (a tar of its layout, kept beside it in `<path>.layout`) that
 * `ctr images import` names `name` (annotation `io.containerd.image.name`; the tag is `name`'s).
 */
export async function writeOciArchive(path: string, name: string, spec: Omit<ImageSpec, 'tag' | 'annotations'>): Promise<BuiltImage> {
  const img = await writeOciLayout(`${path}.layout`, {
    ...spec,
    tag: name.slice(name.lastIndexOf(':') + 1),
    annotations: { 'io.containerd.image.name': name },
  });
  await run('tar', ['-cf', path, '-C', img.dir, 'oci-layout', 'index.json', 'blobs']);
  return img;
}

/** Runs a command, resolving with stdout; rejects with its stderr. */
export function run(cmd: string, args: readonly string[], timeoutMs = 120_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/**
 * `skopeo copy` from one transport to another (`oci:DIR:tag` → `docker-archive:FILE`, …), with no
 * signature policy and no TLS verification (local test registries). Extra flags go before the names.
 */
export function convertImage(from: string, to: string, extra: readonly string[] = []): Promise<string> {
  return run('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', '--dest-tls-verify=false', ...extra, from, to]);
}

/** A runnable userland for container tests: the static busybox of busybox-static, applet links, /etc/passwd. */
export function busyboxEntries(applets: readonly string[] = ['sh', 'echo', 'cat', 'ls', 'wc', 'touch', 'mkdir', 'rm', 'sleep', 'stat']): LayerEntry[] {
  return withParents([
    file('bin/busybox', readFileSync('/bin/busybox'), { mode: 0o755 }),
    ...applets.map((a) => symlink(`bin/${a}`, 'busybox')),
    dir('tmp', { mode: 0o1777 }),
    file('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'),
  ]);
}
