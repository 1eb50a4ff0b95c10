/**
 * Remote layers in a real containerd: `ctr-remote images rpull` (stargz-snapshotter 0.12's client,
 * which labels each layer with containerd.io/snapshot/remote/stargz.digest) pulls an image whose
 * layers a fake CVMFS repository already holds; our snapshotter answers ALREADY_EXISTS for each, so
 * nothing is unpacked locally, and the container runs on the repository's layer directories.
 * (The CRI label containerd.io/snapshot/cri.layer-digest is covered over gRPC in service.test.ts.)
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { containerdMissing, startContainerd } from '../helpers/containerd';
import { startRegistry } from '../helpers/registry';
import { buildLayer, busyboxEntries, file, materializeLayer, writeOciArchive } from '../helpers/oci';
import { tempDir } from '../helpers/repo';
import { layerPath } from '../../src/image/thin-json';

const REPO = 'layers.cvmfs-ts.test';

function missing(): string | undefined {
  return containerdMissing() ?? (existsSync('/usr/bin/ctr-remote') ? (existsSync('/usr/bin/docker-registry') ? undefined : 'no docker-registry') : 'no ctr-remote (stargz-snapshotter)');
}

t.test('ctr-remote rpull takes layers from CVMFS', { skip: missing() }, async (t) => {
  const cvmfsRoot = await tempDir(t, 'cvmfs-');
  const env = await startContainerd(t, { cvmfsRoot, repositories: [REPO] });
  const registry = await startRegistry(t);
  // Unique content, so that no snapshot of an earlier pull can stand in for the remote layers.
  const unique = randomBytes(8).toString('hex');
  const specs = [{ entries: [...busyboxEntries(), file('id.txt', `${unique}\n`)] }, { entries: [file('hello.txt', 'hello\n')] }];
  const layers = specs.map(buildLayer);
  // The repository's copies carry a marker the image layers do not have.
  for (const l of layers) {
    const layerDir = join(cvmfsRoot, REPO, layerPath(l.digest));
    await materializeLayer(l, layerDir);
    await writeFile(join(layerDir, 'from-cvmfs'), `${l.digest}\n`);
  }

  const local = 'example.org/cvmfs-ts/remote:1';
  const remote = `${registry.host}/cvmfs-ts/remote:1`;
  const pusher = `${env.namespace}-push`;
  await writeOciArchive(join(env.dir, 'image.tar'), local, { layers: specs });
  await env.ctr(['images', 'import', '--no-unpack', join(env.dir, 'image.tar')], { namespace: pusher });
  await env.ctr(['images', 'tag', local, remote], { namespace: pusher });
  await env.ctr(['images', 'push', '--plain-http', remote], { namespace: pusher });

  await env.ctr(['images', 'rpull', '--plain-http', '--snapshotter', env.snapshotter, remote], { binary: 'ctr-remote' });
  const log = await env.snapshotterLog();
  for (const l of layers) {
    t.match(log, `"containerd.io/snapshot/remote/stargz.digest":"${l.digest}"`, 'ctr-remote labels the layer digest');
    t.match(log, `remote layer ${l.digest} at ${join(cvmfsRoot, REPO, layerPath(l.digest))} is snapshot`, 'found in the repository');
  }
  t.equal(log.match(/Prepare failed: ALREADY_EXISTS: target snapshot/g)?.length, 2, 'Prepare answered ALREADY_EXISTS for both layers');
  t.same(await readdir(join(env.snapshotterRoot, 'snapshots')), [], 'nothing unpacked locally');

  const r = await env.ctr(['run', '--snapshotter', env.snapshotter, '--rm', remote, 'r1', 'sh', '-c', 'cat /id.txt /hello.txt /from-cvmfs; busybox echo hello']);
  t.equal(r.stdout, `${unique}\nhello\n${layers[1]!.digest}\nhello\n`, 'the container runs on the repository layers');

  await env.ctr(['images', 'rm', '--sync', remote]);
  t.equal((await env.snapshots(['ls'])).stdout.trim().split('\n').length, 1, 'snapshots removed');
  for (const l of layers) t.ok(existsSync(join(cvmfsRoot, REPO, layerPath(l.digest))), 'repository layers untouched');
});
