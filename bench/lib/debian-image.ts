/**
 * Container images built offline from Debian packages, for benchmarks.
 *
 * - The base: `debootstrap --variant=minbase SUITE` from the mirror apt uses, with apt lists, caches,
 *   resolv.conf and the like removed (as Debian's official images are).
 * - Each derived image: the base as the lower directory of an overlay mount, `apt-get install` of
 *   its packages in a chroot of the merged directory (apt lists and the package cache on tmpfs, so
 *   they never reach the layer), and the overlay's upper directory becomes the image's second layer
 *   (overlay whiteouts turned into OCI `.wh.` files and opaque directories into `.wh..wh..opq`).
 *
 * Layers are written with GNU tar (PAX, numeric owners, xattrs) and gzip, into one OCI image layout
 * with a tag per image. Everything is cached under `cacheDir` and rebuilt only when missing:
 *
 *   cacheDir/rootfs/base/           the debootstrapped tree (lower directory of every derived image)
 *   cacheDir/layers/NAME.json       a built layer: digest, diff id, sizes, packages
 *   cacheDir/oci/                   the OCI layout (blobs, index.json with tag NAME per image)
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync } from 'node:fs';
import { lstat, mkdir, readFile, readdir, rename, rm, writeFile, copyFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { createGzip } from 'node:zlib';
import { getAttribute } from '@napi-rs/xattr';
import { run } from './proc';

export interface DebianImageSpec {
  /** Tag in the layout; also the cache name of its layer. */
  readonly name: string;
  /** Packages installed on top of the base; none: the base image itself. */
  readonly packages: readonly string[];
}

export interface LayerInfo {
  readonly digest: string;
  readonly diffId: string;
  /** Compressed (blob) size. */
  readonly size: number;
  /** Uncompressed tar size (≈ unpacked size). */
  readonly tarSize: number;
  readonly packages: readonly string[];
}

export interface BuiltImage {
  readonly name: string;
  /** The OCI layout directory. */
  readonly layout: string;
  readonly tag: string;
  readonly manifestDigest: string;
  readonly layers: readonly LayerInfo[];
  /** Manifest + config + layer blobs: what a pull downloads. */
  readonly compressedBytes: number;
  /** Sum of the uncompressed layer tars. */
  readonly unpackedBytes: number;
}

export interface DebianBuildOptions {
  readonly cacheDir: string;
  readonly images: readonly DebianImageSpec[];
  readonly suite?: string;
  /** Default: the first deb.debian.org-like URI in /etc/apt/sources.list*, else http://deb.debian.org/debian. */
  readonly mirror?: string;
  readonly log?: (line: string) => void;
}

const BASE = 'base';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Never in a layer: kernel file systems, device nodes (runtimes provide /dev), build-time DNS. */
const EXCLUDE_ALWAYS = ['dev/*', 'proc/*', 'sys/*', 'run/*', 'tmp/*', 'etc/resolv.conf', 'etc/hostname', 'var/lib/apt/lists/*', 'var/cache/apt/*'];

/** The Debian mirror the machine's apt uses (deb822 `URIs:` or one-line `deb URL`). */
export async function aptMirror(): Promise<string> {
  const files = ['/etc/apt/sources.list'];
  for (const f of await readdir('/etc/apt/sources.list.d').catch(() => [] as string[])) files.push(join('/etc/apt/sources.list.d', f));
  for (const f of files) {
    const text = await readFile(f, 'utf8').catch(() => '');
    for (const m of text.matchAll(/^(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+)/gm)) {
      const uri = m[1]!;
      if (/\/debian\/?$/.test(uri)) return uri.replace(/\/$/, '');
    }
  }
  return 'http://deb.debian.org/debian';
}

async function readJson<T>(path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function sha256Tap(hash: ReturnType<typeof createHash>, count: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      count.n += chunk.length;
      cb(null, chunk);
    },
  });
}

interface TarPlan {
  /** Directory whose content becomes the layer. */
  readonly dir: string;
  /** Members to leave out (relative, no leading slash; anchored globs). */
  readonly exclude: readonly string[];
  /** Relative paths of overlay whiteouts (0:0 character devices) → `.wh.` files. */
  readonly whiteouts: readonly string[];
  /** Relative paths of opaque directories → `DIR/.wh..wh..opq`. */
  readonly opaques: readonly string[];
}

/** Writes the layer of `plan` as a gzip blob into `layout`; returns digest, diff id and sizes. */
async function writeLayer(plan: TarPlan, layout: string, work: string): Promise<Omit<LayerInfo, 'packages'>> {
  await mkdir(work, { recursive: true });
  const tarFile = join(work, 'layer.tar');
  const members = (await readdir(plan.dir)).sort();
  const literal = join(work, 'exclude-literal');
  await writeFile(literal, plan.whiteouts.map((p) => `${p}\n`).join(''));
  await run([
    'tar',
    '--create',
    '--file',
    tarFile,
    '--format=pax',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '--numeric-owner',
    '--xattrs',
    '--xattrs-include=*',
    '--xattrs-exclude=trusted.overlay.*',
    '--sort=name',
    '--anchored',
    '--wildcards',
    ...plan.exclude.map((e) => `--exclude=${e}`),
    '--no-wildcards',
    `--exclude-from=${literal}`,
    '-C',
    plan.dir,
    '--',
    ...members,
  ]);
  if (plan.whiteouts.length > 0 || plan.opaques.length > 0) {
    // Markers go into a staging tree and are appended to the archive.
    const staging = join(work, 'markers');
    const names: string[] = [];
    for (const w of plan.whiteouts) names.push(join(dirname(w), `.wh.${w.slice(w.lastIndexOf('/') + 1)}`));
    for (const o of plan.opaques) names.push(join(o, '.wh..wh..opq'));
    for (const n of names) {
      await mkdir(join(staging, dirname(n)), { recursive: true });
      await writeFile(join(staging, n), '');
    }
    await run(['tar', '--append', '--file', tarFile, '--format=pax', '--numeric-owner', '--owner=0', '--group=0', '--mode=0644', '--no-recursion', '-C', staging, '--', ...names]);
    await rm(staging, { recursive: true, force: true });
  }
  const diff = createHash('sha256');
  const blob = createHash('sha256');
  const tarCount = { n: 0 };
  const blobCount = { n: 0 };
  const tmpBlob = join(work, 'layer.tar.gz');
  await pipeline(createReadStream(tarFile), sha256Tap(diff, tarCount), createGzip({ level: 6 }), sha256Tap(blob, blobCount), createWriteStream(tmpBlob));
  const digest = `sha256:${blob.digest('hex')}`;
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  await rename(tmpBlob, join(layout, 'blobs', 'sha256', digest.slice(7)));
  await rm(tarFile, { force: true });
  return { digest, diffId: `sha256:${diff.digest('hex')}`, size: blobCount.n, tarSize: tarCount.n };
}

/** Overlay whiteouts and opaque directories in an upper directory (relative paths). */
async function overlayMarkers(upper: string): Promise<{ whiteouts: string[]; opaques: string[] }> {
  const whiteouts: string[] = [];
  const opaques: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of await readdir(join(upper, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(upper, r));
      if (st.isCharacterDevice() && st.rdev === 0) whiteouts.push(r);
      else if (st.isDirectory()) {
        const v = await getAttribute(join(upper, r), 'trusted.overlay.opaque').catch(() => null);
        if (v && v.toString() === 'y') opaques.push(r);
        await walk(r);
      }
    }
  };
  await walk('');
  return { whiteouts, opaques };
}

async function umountQuiet(path: string): Promise<void> {
  await run(['umount', path], { allowFail: true }).then((r) => (r.code === 0 ? r : run(['umount', '-l', path], { allowFail: true })));
}

async function debootstrap(rootfs: string, suite: string, mirror: string, log: (l: string) => void): Promise<void> {
  log(`debootstrap --variant=minbase ${suite} from ${mirror} (a few minutes, once)`);
  await rm(rootfs, { recursive: true, force: true });
  await mkdir(dirname(rootfs), { recursive: true });
  try {
    await run(['debootstrap', '--variant=minbase', suite, rootfs, mirror], { timeoutMs: 30 * 60_000 });
  } catch (e) {
    await umountQuiet(join(rootfs, 'proc'));
    await umountQuiet(join(rootfs, 'sys'));
    throw e;
  }
  // What official images leave out as well.
  for (const p of ['var/lib/apt/lists', 'var/cache/apt/archives']) {
    for (const f of await readdir(join(rootfs, p)).catch(() => [] as string[])) {
      if (f !== 'partial' && f !== 'lock') await rm(join(rootfs, p, f), { recursive: true, force: true });
    }
  }
  for (const f of await readdir(join(rootfs, 'var/cache/apt')).catch(() => [] as string[])) {
    if (f.endsWith('.bin')) await rm(join(rootfs, 'var/cache/apt', f), { force: true });
  }
  await writeFile(join(rootfs, '.bench-complete'), new Date().toISOString() + '\n');
}

/** apt-get install `packages` over the base in an overlay; returns the upper directory. */
async function installOnBase(base: string, work: string, packages: readonly string[], log: (l: string) => void): Promise<string> {
  await rm(work, { recursive: true, force: true });
  const upper = join(work, 'upper');
  const merged = join(work, 'merged');
  for (const d of [upper, join(work, 'work'), merged]) await mkdir(d, { recursive: true });
  const mounts: string[] = [];
  const mount = async (argv: string[], target: string) => {
    await run(['mount', ...argv, target]);
    mounts.push(target);
  };
  try {
    await mount(['-t', 'overlay', 'overlay', '-o', `lowerdir=${base},upperdir=${upper},workdir=${join(work, 'work')}`], merged);
    await mount(['-t', 'proc', 'proc'], join(merged, 'proc'));
    await mount(['-t', 'tmpfs', 'tmpfs'], join(merged, 'var/lib/apt/lists'));
    await mount(['-t', 'tmpfs', 'tmpfs'], join(merged, 'var/cache/apt'));
    await mount(['-t', 'tmpfs', 'tmpfs'], join(merged, 'tmp'));
    await copyFile('/etc/resolv.conf', join(merged, 'etc/resolv.conf'));
    const env = ['/usr/bin/env', '-i', `PATH=${PATH}`, 'DEBIAN_FRONTEND=noninteractive', 'LANG=C.UTF-8', 'HOME=/root'];
    log(`apt-get install ${packages.join(' ')}`);
    await run(['chroot', merged, ...env, 'apt-get', '-q', 'update'], { timeoutMs: 20 * 60_000 });
    await run(['chroot', merged, ...env, 'apt-get', '-q', '-y', '--no-install-recommends', 'install', ...packages], { timeoutMs: 30 * 60_000 });
    await rm(join(merged, 'etc/resolv.conf'), { force: true });
  } finally {
    for (const m of mounts.reverse()) await umountQuiet(m);
  }
  return upper;
}

async function writeImage(layout: string, tag: string, layers: readonly LayerInfo[]): Promise<{ manifestDigest: string; metaBytes: number }> {
  const put = async (data: Buffer) => {
    const d = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    await writeFile(join(layout, 'blobs', 'sha256', d.slice(7)), data);
    return d;
  };
  const created = '2025-05-20T00:00:00Z';
  const config = Buffer.from(
    JSON.stringify({
      created,
      architecture: 'amd64',
      os: 'linux',
      config: { Env: [`PATH=${PATH}`, 'LANG=C.UTF-8'], Cmd: ['bash'], WorkingDir: '/' },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((l) => ({ created, created_by: l.packages.length ? `apt-get install ${l.packages.join(' ')}` : 'debootstrap --variant=minbase' })),
    }),
  );
  const configDigest = await put(config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size })),
    }),
  );
  const manifestDigest = await put(manifest);
  const indexFile = join(layout, 'index.json');
  const index = (await readJson<{ schemaVersion: number; manifests: Array<Record<string, unknown>> }>(indexFile)) ?? { schemaVersion: 2, manifests: [] };
  index.manifests = index.manifests.filter((m) => (m.annotations as Record<string, string> | undefined)?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push({
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    digest: manifestDigest,
    size: manifest.length,
    platform: { architecture: 'amd64', os: 'linux' },
    annotations: { 'org.opencontainers.image.ref.name': tag },
  });
  await writeFile(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(indexFile, JSON.stringify(index, null, 1));
  return { manifestDigest, metaBytes: config.length + manifest.length };
}

/** Builds (or finds in the cache) every image of `o.images`; the layer of each is rebuilt only when missing. */
export async function buildDebianImages(o: DebianBuildOptions): Promise<Map<string, BuiltImage>> {
  const log = o.log ?? ((l: string) => process.stderr.write(`${l}\n`));
  const suite = o.suite ?? 'bookworm';
  const mirror = o.mirror ?? (await aptMirror());
  const layout = join(o.cacheDir, 'oci');
  const layersDir = join(o.cacheDir, 'layers');
  const rootfs = join(o.cacheDir, 'rootfs', BASE);
  await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
  await mkdir(layersDir, { recursive: true });

  const layerOf = async (name: string, packages: readonly string[], build: () => Promise<Omit<LayerInfo, 'packages'>>): Promise<LayerInfo> => {
    const file = join(layersDir, `${name}.json`);
    const cached = await readJson<LayerInfo>(file);
    if (cached && existsSync(join(layout, 'blobs', 'sha256', cached.digest.slice(7))) && JSON.stringify(cached.packages) === JSON.stringify(packages)) return cached;
    const started = Date.now();
    const info: LayerInfo = { ...(await build()), packages };
    await writeFile(file, JSON.stringify(info, null, 2) + '\n');
    log(`layer ${name}: ${(info.tarSize / 1e6).toFixed(0)} MB unpacked, ${(info.size / 1e6).toFixed(0)} MB gzip (${((Date.now() - started) / 1000).toFixed(0)} s)`);
    return info;
  };

  const ensureRootfs = async () => {
    if (!existsSync(join(rootfs, '.bench-complete'))) await debootstrap(rootfs, suite, mirror, log);
  };
  const base = await layerOf(BASE, [], async () => {
    await ensureRootfs();
    return writeLayer({ dir: rootfs, exclude: [...EXCLUDE_ALWAYS, '.bench-complete'], whiteouts: [], opaques: [] }, layout, join(o.cacheDir, 'work', BASE));
  });

  const images = new Map<string, BuiltImage>();
  for (const spec of o.images) {
    const layers = [base];
    if (spec.packages.length > 0) {
      layers.push(
        await layerOf(spec.name, spec.packages, async () => {
          await ensureRootfs();
          const work = join(o.cacheDir, 'work', spec.name);
          const upper = await installOnBase(rootfs, work, spec.packages, log);
          const markers = await overlayMarkers(upper);
          // A whiteout of something never in a layer (resolv.conf copied in for apt) needs no marker.
          const excluded = (p: string) => EXCLUDE_ALWAYS.some((g) => new RegExp(`^${g.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`).test(p));
          markers.whiteouts = markers.whiteouts.filter((w) => !excluded(w));
          const info = await writeLayer({ dir: upper, exclude: EXCLUDE_ALWAYS, ...markers }, layout, join(work, 'tar'));
          await rm(work, { recursive: true, force: true });
          return info;
        }),
      );
    }
    const { manifestDigest, metaBytes } = await writeImage(layout, spec.name, layers);
    images.set(spec.name, {
      name: spec.name,
      layout,
      tag: spec.name,
      manifestDigest,
      layers,
      compressedBytes: metaBytes + layers.reduce((s, l) => s + l.size, 0),
      unpackedBytes: layers.reduce((s, l) => s + l.tarSize, 0),
    });
  }
  return images;
}
