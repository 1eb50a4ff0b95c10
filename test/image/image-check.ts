/**
 * Shared by the image source tests: one test image, and the check that a source serves it — the
 * same config, and layers whose bytes unpack to the original tars (diff_ids), whatever compression
 * and manifest format the transport stored them with.
 */
import type { Test } from 'tap';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { openImageSource, type ImageSourceOptions, type ResolvedImage } from '../../src/image/image-source';
import { unpackLayer } from '../../src/image/layer-unpack';
import { tempDir } from '../helpers/repo';
import { dir, file, fileCapability, hardlink, opaque, symlink, whiteout, type BuiltImage, type ImageSpec } from '../helpers/oci';

/** Three layers, one per compression; the last one deletes and hides things. */
export function testImageSpec(tag = 'v1', compressions: ReadonlyArray<'gzip' | 'zstd' | 'none'> = ['gzip', 'zstd', 'none']): ImageSpec {
  return {
    tag,
    runConfig: { Cmd: ['/bin/sh'], Env: ['PATH=/bin', 'CVMFS_TS_TEST=1'] },
    layers: [
      {
        compression: compressions[0],
        entries: [
          dir('bin'),
          file('bin/tool', '#!/bin/sh\necho tool\n', { mode: 0o755, xattrs: { 'security.capability': fileCapability(10) } }),
          symlink('bin/sh', 'tool'),
          dir('etc'),
          file('etc/os-release', 'ID=test\n'),
          dir('var'),
          dir('var/cache'),
          file('var/cache/old', 'stale\n'),
        ],
      },
      {
        compression: compressions[1],
        entries: [dir('etc'), file('etc/motd', 'hello from layer 2\n', { uid: 1000, gid: 1000, mode: 0o640 }), hardlink('etc/motd.hl', 'etc/motd')],
      },
      { compression: compressions[2], entries: [dir('etc'), whiteout('etc/os-release'), dir('var'), dir('var/cache'), opaque('var/cache')] },
    ],
  };
}

/** Resolves `source` and checks config and every layer against `built`; returns the resolved image. */
export async function checkSource(t: Test, source: string, built: BuiltImage, options: ImageSourceOptions = {}): Promise<ResolvedImage> {
  const src = await openImageSource(source, options);
  try {
    const img = await src.resolve();
    t.equal(await src.resolve(), img, `${source}: resolve() is cached`);
    t.equal(img.layers.length, built.layers.length, `${source}: layer count`);
    t.same(img.diffIds, built.layers.map((l) => l.diffId), `${source}: diff_ids`);
    const cfg = img.config.value as { config?: { Env?: string[] }; architecture?: string };
    t.same(cfg.config?.Env, ['PATH=/bin', 'CVMFS_TS_TEST=1'], `${source}: config Env`);
    t.equal(cfg.architecture, 'amd64');
    const top = await tempDir(t, 'cvmfs-ts-src-');
    for (const [i, layer] of img.layers.entries()) {
      const dest = join(top, String(i));
      const stats = await unpackLayer(await src.openBlob(layer), dest, { mediaType: layer.mediaType, what: layer.digest });
      t.equal(stats.uncompressedDigest, built.layers[i].diffId, `${source}: layer ${i} unpacks to its diff_id`);
    }
    t.equal(await readFile(join(top, '1', 'etc/motd'), 'utf8'), 'hello from layer 2\n', `${source}: content`);
    return img;
  } finally {
    await src.close();
  }
}
