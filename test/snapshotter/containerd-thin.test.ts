/**
 * Thin images in a real containerd: the image's only layer holds thin.json, the layers it names
 * sit in a fake CVMFS root (plain directories laid out like a DUCC repository); containers see
 * the merged layers, also with 60 of them.
 */
import t from 'tap';
import { join } from 'node:path';
import { containerdMissing, startContainerd } from '../helpers/containerd';
import { buildLayer, busyboxEntries, file, materializeLayer, writeOciArchive, type BuiltLayer } from '../helpers/oci';
import { tempDir } from '../helpers/repo';
import { formatThinJson, layerPath } from '../../src/image/thin-json';

const REPO = 'thin.cvmfs-ts.test';

/** Puts the layers into the fake repository and writes a thin image naming them. */
async function thinImage(dir: string, cvmfsRoot: string, name: string, layers: BuiltLayer[]): Promise<string> {
  for (const l of layers) await materializeLayer(l, join(cvmfsRoot, REPO, layerPath(l.digest)));
  const thinJson = formatThinJson(REPO, `docker://${name}`, layers.map((l) => l.digest));
  const archive = join(dir, `${name.replace(/[/:]/g, '_')}.tar`);
  await writeOciArchive(archive, name, { layers: [{ entries: [file('thin.json', thinJson)] }] });
  return archive;
}

t.test('thin images through the cvmfs-ts snapshotter', { skip: containerdMissing() }, async (t) => {
  const cvmfsRoot = await tempDir(t, 'cvmfs-');
  const env = await startContainerd(t, { cvmfsRoot });
  const sn = ['--snapshotter', env.snapshotter];

  t.test('a thin image runs on its CVMFS layers', async (t) => {
    const layers = [
      buildLayer({ entries: [...busyboxEntries(), file('etc/motd', 'base\n')] }),
      buildLayer({ entries: [file('etc/motd', 'layer 2\n'), file('data/b', 'b\n')] }),
      buildLayer({ entries: [file('etc/motd', 'layer 3\n'), file('data/c', 'c\n')] }),
    ];
    const name = 'example.org/cvmfs-ts/thin:3';
    await env.ctr(['images', 'import', '--no-unpack', await thinImage(env.dir, cvmfsRoot, name, layers)]);
    const r = await env.ctr(['run', ...sn, '--rm', name, 'thin1', 'sh', '-c', 'cat /etc/motd; ls /data; ls /']);
    const [motd, data, root] = [r.stdout.split('\n')[0], r.stdout.split('\n').slice(1, 3), r.stdout.split('\n').slice(3)];
    t.equal(motd, 'layer 3', 'the top layer wins');
    t.same(data, ['b', 'c'], 'merged directories');
    t.notOk(root.includes('thin.json'), 'thin.json is not in the container');
    t.ok(root.includes('bin'));

    // A container's writes go to its own upper directory, never into the (read-only) layers.
    await env.ctr(['run', ...sn, name, 'thin2', 'sh', '-c', 'echo w > /etc/motd']);
    const m = await env.mountOptions('thin2');
    const lowerdir = m.options.find((o) => o.startsWith('lowerdir='))!;
    t.equal(lowerdir.split(':').length, 3);
    const again = await env.ctr(['run', ...sn, '--rm', name, 'thin3', 'cat', '/etc/motd']);
    t.equal(again.stdout, 'layer 3\n', 'layers unchanged');
    await env.ctr(['containers', 'rm', 'thin2']);
  });

  t.test('a 60-layer thin image mounts', async (t) => {
    const layers = [buildLayer({ entries: [...busyboxEntries(), file('layers/0', '0\n')] })];
    for (let i = 1; i < 60; i++) layers.push(buildLayer({ entries: [file(`layers/${i}`, `${i}\n`), file('top', `${i}\n`)] }));
    const name = 'example.org/cvmfs-ts/thin:60';
    await env.ctr(['images', 'import', '--no-unpack', await thinImage(env.dir, cvmfsRoot, name, layers)]);
    const r = await env.ctr(['run', ...sn, name, 'thin60', 'sh', '-c', 'ls /layers | wc -l; cat /top']);
    t.same(r.stdout.split(/\s+/).filter(Boolean), ['60', '59']);
    const m = await env.mountOptions('thin60');
    const lowerdir = m.options.find((o) => o.startsWith('lowerdir='))!;
    t.equal(lowerdir.split(':').length, 60, '60 lower directories');
    const data = m.options.join(',');
    t.ok(data.length < 4096 - 512, `mount data of ${data.length} bytes fits a page without containerd's compaction`);
    await env.ctr(['containers', 'rm', 'thin60']);
  });

  t.test('removing thin images removes their snapshots, not the CVMFS layers', async (t) => {
    await env.ctr(['images', 'rm', '--sync', 'example.org/cvmfs-ts/thin:3', 'example.org/cvmfs-ts/thin:60']);
    t.equal((await env.snapshots(['ls'])).stdout.trim().split('\n').length, 1, 'only the header line');
    t.same(env.mountsUnder(), []);
    t.same(env.mountsUnder(cvmfsRoot), []);
  });
});
