/**
 * The local transports read the same image: an OCI layout written by test/helpers/oci.ts, and what
 * skopeo makes of it (oci-archive, docker-archive), plus a hand-made Docker 25-style archive
 * (blobs/sha256 members, a symlinked legacy layer). Platform selection through an image index, tag
 * lookup, and a corrupted blob (typed error, nothing unpacked is kept by a careful consumer).
 */
import t from 'tap';
import { join } from 'node:path';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { openImageSource } from '../../src/image/image-source';
import { unpackLayer } from '../../src/image/layer-unpack';
import { buildTar, type TarWriteEntry } from '../../src/image/tar-writer';
import { formatOrigin, parseImageReference } from '../../src/image/reference';
import { CvmfsError } from '../../src/errors';
import { tempDir } from '../helpers/repo';
import { convertImage, writeOciLayout, sha256, type BuiltImage } from '../helpers/oci';
import { checkSource, testImageSpec } from './image-check';
import { registryMissing } from '../helpers/registry';

const noSkopeo = registryMissing();

let fixture: Promise<{ top: string; built: BuiltImage }> | undefined;
function image(): Promise<{ top: string; built: BuiltImage }> {
  return (fixture ??= (async () => {
    const top = await tempDir(t, 'cvmfs-ts-sources-');
    const built = await writeOciLayout(join(top, 'layout'), testImageSpec('v1'));
    return { top, built };
  })());
}

t.test('oci: layout by tag, and the only image without a tag', async (t) => {
  const { top, built } = await image();
  const img = await checkSource(t, `oci:${top}/layout:v1`, built);
  t.equal(img.manifestDigest, built.manifestDigest, 'manifest bytes as stored');
  t.same(img.manifestBytes, built.manifestBytes);
  t.equal(img.config.digest, built.configDigest);
  await checkSource(t, `oci:${top}/layout`, built);
  t.equal(formatOrigin(parseImageReference(`oci:${top}/layout:v1`), img.manifestDigest), `oci:${top}/layout:v1@${built.manifestDigest}`);
});

t.test('oci: an image index is followed to linux/amd64; tags are looked up', async (t) => {
  const dir = join(await tempDir(t), 'multi');
  const built = await writeOciLayout(dir, {
    ...testImageSpec('multi'),
    decoyPlatforms: [
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
      { os: 'windows', architecture: 'amd64' },
    ],
  });
  const other = await writeOciLayout(dir, { tag: 'other', layers: [{ entries: [] }] });
  const img = await checkSource(t, `oci:${dir}:multi`, built);
  t.equal(img.manifestDigest, built.manifestDigest, 'the amd64 manifest, not a decoy');
  const arm = await openImageSource(`oci:${dir}:multi`, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
  t.not((await arm.resolve()).manifestDigest, built.manifestDigest, 'another platform gets its own manifest');
  await arm.close();
  const s390 = await openImageSource(`oci:${dir}:multi`, { platform: { os: 'linux', architecture: 's390x' } });
  await t.rejects(s390.resolve(), { code: 'E_NOT_FOUND', message: /no manifest for linux\/s390x/ });
  await s390.close();
  const missing = await openImageSource(`oci:${dir}:nope`);
  await t.rejects(missing.resolve(), { code: 'E_NOT_FOUND', message: /tags: multi, other/ });
  await missing.close();
  const ambiguous = await openImageSource(`oci:${dir}`);
  await t.rejects(ambiguous.resolve(), { code: 'E_USAGE', message: /2 images \(multi, other\)/ });
  await ambiguous.close();
  t.ok(other.manifestDigest);
  await t.rejects(openImageSource(`oci:${dir}/not-there:x`), { code: 'E_NOT_FOUND' });
});

t.test('a corrupted blob is a typed error and fails the unpack', async (t) => {
  const dir = join(await tempDir(t), 'corrupt');
  const built = await writeOciLayout(dir, testImageSpec('v1'));
  // Same size, one byte changed in the middle of the zstd layer.
  const path = join(dir, 'blobs/sha256', built.layers[1].digest.slice(7));
  const bytes = await readFile(path);
  bytes[bytes.length >> 1] ^= 0xff;
  await writeFile(path, bytes);
  const src = await openImageSource(`oci:${dir}:v1`);
  const img = await src.resolve();
  try {
    await unpackLayer(await src.openBlob(img.layers[1]), join(dir, 'unpacked'));
    t.fail('unpacked a corrupt layer');
  } catch (e) {
    t.ok(CvmfsError.is(e), `a CvmfsError: ${String(e)}`);
    // zstd notices the damage itself (checksum) or the digest check does; both are typed.
    t.match((e as CvmfsError).code, /^E_(HASH_MISMATCH|FORMAT)$/);
  }
  // Read raw: the digest check is what fails, at the end of the stream.
  const chunks: Buffer[] = [];
  await t.rejects(
    (async () => {
      for await (const c of await src.openBlob(img.layers[1])) chunks.push(c as Buffer);
    })(),
    { code: 'E_HASH_MISMATCH', message: new RegExp(built.layers[1].digest) },
  );
  t.equal(Buffer.concat(chunks).length, bytes.length, 'all bytes flowed before the error: it replaces the end');
  // A wrong size is caught as soon as it overruns.
  await t.rejects(
    (async () => {
      for await (const c of await src.openBlob({ digest: built.layers[0].digest, size: 10 })) void c;
    })(),
    { code: 'E_HASH_MISMATCH', message: /more than the expected 10 bytes/ },
  );
  // A corrupt config is caught by resolve().
  await writeFile(join(dir, 'blobs/sha256', built.configDigest.slice(7)), Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: [] } })));
  const again = await openImageSource(`oci:${dir}:v1`);
  await t.rejects(again.resolve(), { code: 'E_HASH_MISMATCH' });
  await again.close();
  await src.close();
});

t.test('oci-archive from skopeo, plain and gzip-compressed', { skip: noSkopeo }, async (t) => {
  const { top, built } = await image();
  const archive = join(top, 'image.oci.tar');
  await convertImage(`oci:${top}/layout:v1`, `oci-archive:${archive}:v1`);
  await checkSource(t, `oci-archive:${archive}:v1`, built);
  await checkSource(t, `oci-archive:${archive}`, built);
  const gz = join(top, 'image.oci.tar.gz');
  await writeFile(gz, gzipSync(await readFile(archive)));
  const tmp = await tempDir(t, 'cvmfs-ts-archtmp-');
  await checkSource(t, `oci-archive:${gz}:v1`, built, { tmpDir: tmp });
  t.same(await readdir(tmp), [], 'the decompressed copy is removed on close');
});

t.test('docker-archive from skopeo (legacy layout)', { skip: noSkopeo }, async (t) => {
  const top = await tempDir(t, 'cvmfs-ts-dockerarchive-');
  // Docker images cannot carry zstd layers: skopeo refuses to convert them.
  const built = await writeOciLayout(join(top, 'layout'), testImageSpec('v1', ['gzip', 'gzip', 'none']));
  const archive = join(top, 'image.docker.tar');
  await convertImage(`oci:${top}/layout:v1`, `docker-archive:${archive}:example.org/test/img:v1`);
  const img = await checkSource(t, `docker-archive:${archive}`, built);
  // Layers are plain tars: their digests are the diff_ids.
  t.same(img.layers.map((l) => l.digest), built.layers.map((l) => l.diffId), 'layer digests = diff_ids');
  await checkSource(t, `docker-archive:${archive}:example.org/test/img:v1`, built);
  await checkSource(t, `docker-archive:${archive}:@0`, built);
  const wrong = await openImageSource(`docker-archive:${archive}:example.org/test/img:v2`);
  await t.rejects(wrong.resolve(), { code: 'E_NOT_FOUND', message: /example.org\/test\/img:v1/ });
  await wrong.close();
  t.equal(formatOrigin(parseImageReference(`docker-archive:${archive}:@0`), img.manifestDigest), `docker-archive:${archive}:@0`);
});

t.test('docker-archive in the Docker 25 layout (blobs/sha256, a symlinked legacy layer path)', async (t) => {
  const { top, built } = await image();
  const layout = join(top, 'layout');
  const entries: TarWriteEntry[] = [];
  const blob = async (data: Buffer) => {
    const d = sha256(data);
    entries.push({ name: `blobs/sha256/${d.slice(7)}`, type: 'file', data, mode: 0o644 });
    return d;
  };
  const layerPaths: string[] = [];
  for (const [i, l] of built.layers.entries()) {
    const d = await blob(l.tar);
    if (i === 1) {
      entries.push({ name: 'legacy/', type: 'directory' }, { name: 'legacy/layer.tar', type: 'symlink', linkname: `../blobs/sha256/${d.slice(7)}` });
      layerPaths.push('legacy/layer.tar');
    } else layerPaths.push(`blobs/sha256/${d.slice(7)}`);
  }
  await blob(await readFile(join(layout, 'blobs/sha256', built.configDigest.slice(7))));
  const manifestJson = [{ Config: `blobs/sha256/${built.configDigest.slice(7)}`, RepoTags: ['test/img:latest'], Layers: layerPaths }];
  entries.push({ name: 'manifest.json', type: 'file', data: Buffer.from(JSON.stringify(manifestJson)) });
  entries.push({ name: 'oci-layout', type: 'file', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') });
  const archive = join(top, 'docker25.tar');
  await writeFile(archive, buildTar(entries));
  const img = await checkSource(t, `docker-archive:${archive}`, built);
  t.same(img.layers.map((l) => l.digest), built.layers.map((l) => l.diffId));
  await checkSource(t, `docker-archive:${archive}:docker.io/test/img:latest`, built);
  // A layer whose bytes do not match its blobs/sha256 name is caught while reading.
  const bad = Buffer.from(await readFile(archive));
  const at = bad.indexOf(built.layers[0].tar.subarray(512, 600));
  t.ok(at > 0);
  bad[at] ^= 1;
  const badArchive = join(top, 'docker25-bad.tar');
  await writeFile(badArchive, bad);
  const src = await openImageSource(`docker-archive:${badArchive}`);
  const resolved = await src.resolve();
  await t.rejects(unpackLayer(await src.openBlob(resolved.layers[0]), join(top, 'bad-unpack')), { code: 'E_HASH_MISMATCH' });
  await src.close();
});
