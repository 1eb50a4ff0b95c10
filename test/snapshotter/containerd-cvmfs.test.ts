/**
 * The whole thin-image path with real parts only: an image pushed to a private registry, ingested
 * from there into a repository (`cvmfs-ts image ingest docker://… --push …-thin`), the repository
 * served by `cvmfs-ts serve` and mounted by the snapshotter on demand with `cvmfs-ts mount`;
 * containerd pulls the thin image and runs it through our snapshotter. Then the remote-layer path:
 * `ctr-remote images rpull` of the original image takes every layer from the repository, and the
 * registry's access log shows no layer download.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { containerdMissing, startContainerd } from '../helpers/containerd';
import { startRegistry } from '../helpers/registry';
import { busyboxEntries, convertImage, dir, file, opaque, whiteout, withParents, writeOciLayout } from '../helpers/oci';
import { runCli } from '../helpers/cli';
import { tempDir, testKeys } from '../helpers/repo';
import { serveRepository } from '../helpers/serve';
import { mountDaemonPid, unmountDaemon, writeConfigRoot } from '../helpers/mount';
import { layerPath } from '../../src/image/thin-json';

const FQRN = 'containers.cvmfs-ts.test';

function missing(): string | undefined {
  return containerdMissing() ?? (existsSync('/usr/bin/ctr-remote') ? undefined : 'no ctr-remote (stargz-snapshotter)');
}

/** GETs of blob `digest` in the registry's access log. */
function blobGets(log: string, digest: string): number {
  return log.split('\n').filter((l) => l.includes(`"GET /v2/`) && l.includes(`/blobs/${digest} `)).length;
}

t.test('thin image and remote layers from a real repository through containerd', { skip: missing() }, async (t) => {
  const work = await tempDir(t);
  const keys = await testKeys(FQRN);
  const repoDir = join(work, 'repo');
  const image = await writeOciLayout(join(work, 'layout'), {
    tag: 'v1',
    layers: [
      { entries: [...busyboxEntries(), file('etc/motd', 'base\n'), file('etc/secret', 'hidden by layer 2\n'), dir('data'), file('data/old', 'o\n')] },
      { compression: 'zstd', entries: withParents([whiteout('etc/secret'), opaque('data'), file('data/new', 'n\n'), file('etc/motd', 'top\n')]) },
    ],
  });
  const registry = await startRegistry(t, { logFile: join(work, 'registry.log') });
  const registryLog = () => readFile(join(work, 'registry.log'), 'utf8');
  const original = `${registry.host}/app:1`;
  const thinRef = `${registry.host}/app:1-thin`;
  await convertImage(`oci:${image.dir}:v1`, `docker://${original}`);

  const ingest = await runCli(
    ['image', 'ingest', `docker://${original}`, '--plain-http', '--repo', repoDir, '--fqrn', FQRN, '--keys', keys, '--output', join(work, 'out'), '--push', `docker://${thinRef}`],
    { timeoutMs: 300_000 },
  );
  t.equal(ingest.code, 0, ingest.stderr);

  const served = await serveRepository(t, repoDir);
  const configRoot = await writeConfigRoot(work, { fqrn: FQRN, serverUrl: served.url, publicKey: join(keys, `${FQRN}.pub`) }, join(work, 'cache'));
  const cvmfsRoot = join(work, 'cvmfs');
  const repoMount = join(cvmfsRoot, FQRN);
  const env = await startContainerd(t, { cvmfsRoot, repositories: [FQRN], snapshotterEnv: { CVMFS_TS_CONFIG_ROOT: configRoot } });
  // Registered after containerd's teardown, so it runs after the overlays on top are gone.
  t.teardown(async () => unmountDaemon(repoMount, await mountDaemonPid(repoMount)));

  await t.test('the thin image runs from the repository', async (t) => {
    await env.ctr(['images', 'pull', '--plain-http', '--snapshotter', env.snapshotter, thinRef]);
    const r = await env.ctr(['run', '--snapshotter', env.snapshotter, thinRef, 'thin1', 'sh', '-c', 'cat /etc/motd; ls /etc; ls /data; echo w > /written; ls /thin.json 2>&1; echo done']);
    t.match(r.stdout, /^top\n/, 'the top layer wins');
    t.notMatch(r.stdout, /secret/, 'a whited-out file is invisible');
    t.match(r.stdout, /\nnew\n/, 'the opaque directory shows the new content…');
    t.notMatch(r.stdout, /\nold\n/, '…and hides the old');
    t.match(r.stdout, /No such file/, 'thin.json itself is not in the container');
    t.match(r.stdout, /done\n$/);
    t.ok(existsSync(join(repoMount, '.layers')), 'the snapshotter mounted the repository with cvmfs-ts mount');
    const upper = (await env.mountOptions('thin1')).options.find((o) => o.startsWith('upperdir='))?.slice('upperdir='.length);
    t.ok(upper, 'the container has an upper directory');
    t.equal(await readFile(join(upper!, 'written'), 'utf8'), 'w\n', "the container's write is in its upper directory");
    for (const l of image.layers) t.notOk(existsSync(join(repoMount, layerPath(l.digest), 'written')), 'and in no layer');
    await env.ctr(['containers', 'rm', 'thin1']);
  });

  await t.test('ctr-remote rpull of the original image downloads no layer', async (t) => {
    const before = await registryLog();
    for (const l of image.layers) t.ok(blobGets(before, l.digest) >= 1, `ingest downloaded ${l.digest} once`);
    await env.ctr(['images', 'rpull', '--plain-http', '--snapshotter', env.snapshotter, original], { binary: 'ctr-remote' });
    const after = await registryLog();
    for (const l of image.layers) t.equal(blobGets(after, l.digest), blobGets(before, l.digest), `no download of layer ${l.digest} by the pull`);
    const r = await env.ctr(['run', '--snapshotter', env.snapshotter, '--rm', original, 'remote1', 'sh', '-c', 'cat /etc/motd; ls /data']);
    t.equal(r.stdout, 'top\nnew\n', 'the container runs on the repository layers');
  });
});
