/**
 * docker:// against a real registry (Debian's docker-registry on 127.0.0.1, test/helpers/registry.ts):
 * images pushed there by skopeo (OCI, Docker schema 2, a multi-platform index) read back through
 * RegistrySource; token auth (the registry's own auth.token with a JWT token server) and Basic auth;
 * pushImage round trips (skipping blobs the registry has); a blob corrupted in the registry's storage
 * is a typed error.
 */
import t, { type Test } from 'tap';
import { join } from 'node:path';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import { openImageSource, type ImageSource } from '../../src/image/image-source';
import { pushImage } from '../../src/image/registry-source';
import { MEDIA_TYPES } from '../../src/image/manifest';
import { parseChallenges } from '../../src/image/registry-client';
import { formatOrigin, parseImageReference } from '../../src/image/reference';
import { unpackLayer } from '../../src/image/layer-unpack';
import { tempDir } from '../helpers/repo';
import { convertImage, run, writeOciLayout } from '../helpers/oci';
import { PASSWORD, USER, registryMissing, startRegistry } from '../helpers/registry';
import { checkSource, testImageSpec } from './image-check';

const skip = registryMissing();
const CREDS = { username: USER, password: PASSWORD };

t.test('parseChallenges', async (t) => {
  t.same(parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'), [
    { scheme: 'Bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:a/b:pull,push' } },
  ]);
  t.same(parseChallenges(['Basic realm="x y"', 'Bearer realm=http://h/t, error="invalid_token"']), [
    { scheme: 'Basic', params: { realm: 'x y' } },
    { scheme: 'Bearer', params: { realm: 'http://h/t', error: 'invalid_token' } },
  ]);
  t.same(parseChallenges('Basic realm="a\\"b", Bearer realm="r"'), [
    { scheme: 'Basic', params: { realm: 'a"b' } },
    { scheme: 'Bearer', params: { realm: 'r' } },
  ]);
  t.same(parseChallenges(undefined), []);
});

t.test('no auth: OCI, Docker schema 2 and a multi-platform index', { skip }, async (t) => {
  const reg = await startRegistry(t);
  const top = await tempDir(t, 'cvmfs-ts-reg-');
  const built = await writeOciLayout(join(top, 'oci'), testImageSpec('v1'));
  await convertImage(`oci:${top}/oci:v1`, `docker://${reg.host}/test/img:v1`);
  const img = await checkSource(t, `docker://${reg.host}/test/img:v1`, built, { plainHttp: true });
  t.equal(img.manifest.mediaType, MEDIA_TYPES.ociManifest);
  t.equal(img.config.digest, built.configDigest, 'the same config');
  // skopeo re-serialises the manifest on upload, so its digest is the registry's, not ours.
  await checkSource(t, `docker://${reg.host}/test/img@${img.manifestDigest}`, built, { plainHttp: true });
  t.equal(formatOrigin(parseImageReference(`docker://${reg.host}/test/img:v1`), img.manifestDigest), `docker://${reg.host}/test/img:v1@${img.manifestDigest}`);

  // A registry of its own: skopeo's blob-info cache would otherwise offer the zstd layer pushed above
  // for the same diff_id, which a Docker manifest cannot reference, and fail.
  const reg2 = await startRegistry(t);
  const gz = await writeOciLayout(join(top, 'gz'), testImageSpec('v1', ['gzip', 'gzip', 'none']));
  await convertImage(`oci:${top}/gz:v1`, `docker://${reg2.host}/test/img:v2s2`, ['--format', 'v2s2']);
  const v2 = await checkSource(t, `docker://${reg2.host}/test/img:v2s2`, gz, { plainHttp: true });
  t.equal(v2.manifest.mediaType, MEDIA_TYPES.dockerManifest, 'a Docker schema 2 manifest');

  const multi = await writeOciLayout(join(top, 'multi'), {
    ...testImageSpec('m'),
    decoyPlatforms: [
      { os: 'linux', architecture: 'arm64', variant: 'v8' },
      { os: 'linux', architecture: 'ppc64le' },
    ],
  });
  await convertImage(`oci:${top}/multi:m`, `docker://${reg.host}/test/multi:m`, ['--all']);
  const m = await checkSource(t, `docker://${reg.host}/test/multi:m`, multi, { plainHttp: true });
  t.equal(m.config.digest, multi.configDigest, 'linux/amd64 picked from the index');

  const missing = await openImageSource(`docker://${reg.host}/test/img:nope`, { plainHttp: true });
  await t.rejects(missing.resolve(), { code: 'E_NOT_FOUND' });
  await missing.close();

  // Corrupt a layer blob in the registry's storage (same size): the stream fails its digest check.
  const hex = built.layers[0].digest.slice(7);
  const data = join(reg.dir, 'storage/docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data');
  const bytes = await readFile(data);
  bytes[bytes.length >> 1] ^= 0x55;
  await writeFile(data, bytes);
  const src = await openImageSource(`docker://${reg.host}/test/img:v1`, { plainHttp: true });
  const layer = (await src.resolve()).layers[0];
  await t.rejects(
    (async () => {
      for await (const c of await src.openBlob(layer)) void c;
    })(),
    { code: 'E_HASH_MISMATCH', message: new RegExp(built.layers[0].digest) },
  );
  await t.rejects(unpackLayer(await src.openBlob(layer), join(top, 'bad')), { code: /^E_(HASH_MISMATCH|FORMAT)$/ });
  await src.close();
});

async function pushFrom(source: ImageSource, target: string) {
  const img = await source.resolve();
  return pushImage(
    target,
    {
      manifestBytes: img.manifestBytes,
      configBytes: img.config.bytes,
      blobs: img.layers.map((l) => ({ digest: l.digest, size: l.size, open: () => source.openBlob(l) })),
    },
    { plainHttp: true, credentials: CREDS },
  );
}

t.test('token auth: pull, push round trip, refusals', { skip }, async (t) => {
  const reg = await startRegistry(t, { auth: 'token' });
  const top = await tempDir(t, 'cvmfs-ts-regtok-');
  const built = await writeOciLayout(join(top, 'oci'), testImageSpec('v1'));
  await convertImage(`oci:${top}/oci:v1`, `docker://${reg.host}/test/img:v1`, reg.skopeoCreds('dest'));
  reg.tokenRequests.length = 0;
  await checkSource(t, `docker://${reg.host}/test/img:v1`, built, { plainHttp: true, credentials: CREDS });
  t.ok(reg.tokenRequests.length >= 1, 'a token was fetched');
  t.ok(reg.tokenRequests.length <= 2, `and then reused (${reg.tokenRequests.length} requests)`);
  t.same(reg.tokenRequests[0].scopes, ['repository:test/img:pull']);
  t.equal(reg.tokenRequests[0].service, 'cvmfs-ts-test-registry');
  t.equal(reg.tokenRequests[0].user, USER);

  const anonymous = await openImageSource(`docker://${reg.host}/test/img:v1`, { plainHttp: true });
  await t.rejects(anonymous.resolve(), { code: 'E_NETWORK', status: 401, message: /token request refused/ });
  await anonymous.close();
  const wrong = await openImageSource(`docker://${reg.host}/test/img:v1`, { plainHttp: true, credentials: { username: USER, password: 'wrong' } });
  await t.rejects(wrong.resolve(), { code: 'E_NETWORK', status: 401 });
  await wrong.close();

  // Push our layout's image under a new name; every blob is new there… and present the second time.
  const layout = await openImageSource(`oci:${top}/oci:v1`);
  t.teardown(() => layout.close());
  const first = await pushFrom(layout, `docker://${reg.host}/test/copy:v1`);
  t.equal(first.manifestDigest, built.manifestDigest);
  t.equal(first.uploaded.length + first.present.length, 4, 'three layers and the config');
  const second = await pushFrom(layout, `${reg.host}/test/copy:v2`);
  t.same(second.uploaded, [], 'nothing uploaded twice');
  t.equal(second.present.length, 4);
  t.ok(reg.tokenRequests.some((r) => r.scopes.includes('repository:test/copy:pull,push')), 'a push token was asked for');
  await checkSource(t, `docker://${reg.host}/test/copy:v1`, built, { plainHttp: true, credentials: CREDS });
  const inspected = JSON.parse(
    await run('skopeo', ['inspect', '--tls-verify=false', '--creds', `${USER}:${PASSWORD}`, `docker://${reg.host}/test/copy:v2`]),
  ) as { Digest: string; Layers: string[] };
  t.equal(inspected.Digest, built.manifestDigest, 'skopeo sees the pushed image');
  t.same(inspected.Layers, built.layers.map((l) => l.digest));

  // A fresh repository: blobs cross repositories only by upload, and a layer we do not give is an error.
  const img = await layout.resolve();
  await t.rejects(
    pushImage(
      `${reg.host}/test/partial:v1`,
      { manifestBytes: img.manifestBytes, configBytes: img.config.bytes, blobs: [] },
      { plainHttp: true, credentials: CREDS },
    ),
    { code: 'E_NOT_FOUND', message: /neither given nor in the target repository/ },
  );
  await t.rejects(
    pushImage(`${reg.host}/test/partial:v1`, { manifestBytes: img.manifestBytes, configBytes: Buffer.from('{}'), blobs: [] }, { plainHttp: true }),
    { code: 'E_FORMAT', message: /config hashes to/ },
  );
});

t.test('basic auth', { skip }, async (t) => {
  const reg = await startRegistry(t, { auth: 'basic' });
  const top = await tempDir(t, 'cvmfs-ts-regbasic-');
  const built = await writeOciLayout(join(top, 'oci'), testImageSpec('v1'));
  await convertImage(`oci:${top}/oci:v1`, `docker://${reg.host}/test/img:v1`, reg.skopeoCreds('dest'));
  await checkSource(t, `docker://${reg.host}/test/img:v1`, built, { plainHttp: true, credentials: CREDS });
  const anonymous = await openImageSource(`docker://${reg.host}/test/img:v1`, { plainHttp: true });
  await t.rejects(anonymous.resolve(), { code: 'E_NETWORK', status: 401, message: /wants credentials/ });
  await anonymous.close();
  const layout = await openImageSource(`oci:${top}/oci:v1`);
  t.teardown(() => layout.close());
  const pushed = await pushFrom(layout, `${reg.host}/test/copy:v1`);
  t.equal(pushed.uploaded.length, 4);
  await checkSource(t, `docker://${reg.host}/test/copy:v1`, built, { plainHttp: true, credentials: CREDS });
});

/** A node:http server on 127.0.0.1 that forwards to `host` (host:port), minus what `intercept` answers. */
async function frontServer(
  t: Test,
  host: string,
  intercept: (req: http.IncomingMessage, res: http.ServerResponse) => boolean,
): Promise<string> {
  const server = http.createServer((req, res) => {
    if (intercept(req, res)) return;
    const [hostname, port] = host.split(':');
    const headers = { ...req.headers, host };
    delete headers.authorization;
    const up = http.request({ hostname, port: Number(port), method: req.method, path: req.url, headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `127.0.0.1:${(server.address() as AddressInfo).port}`;
}

t.test('blob redirects are followed; Authorization stays with the registry origin', { skip }, async (t) => {
  const reg = await startRegistry(t);
  const top = await tempDir(t, 'cvmfs-ts-regredir-');
  const built = await writeOciLayout(join(top, 'oci'), testImageSpec('v1'));
  await convertImage(`oci:${top}/oci:v1`, `docker://${reg.host}/test/img:v1`);
  // The "object store": another origin that records what it was sent.
  const seen: Array<string | undefined> = [];
  const store = await frontServer(t, reg.host, (req) => {
    seen.push(req.headers.authorization);
    return false;
  });
  // The registry front: Basic auth, and blob GETs redirected (twice: 302 to itself, then 307 to the store).
  const expected = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
  const front = await frontServer(t, reg.host, (req, res) => {
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="front"' }).end();
      return true;
    }
    const blob = /^\/v2\/.+\/blobs\/sha256:[0-9a-f]{64}$/.test(req.url ?? '');
    if (blob && req.method === 'GET') {
      res.writeHead(302, { location: `${req.url}?hop=1` }).end();
      return true;
    }
    if (req.method === 'GET' && req.url?.endsWith('?hop=1')) {
      res.writeHead(307, { location: `http://${store}${req.url.replace('?hop=1', '')}` }).end();
      return true;
    }
    return false;
  });
  await checkSource(t, `docker://${front}/test/img:v1`, built, { plainHttp: true, credentials: CREDS });
  t.ok(seen.length >= 4, `the store served the blobs (${seen.length} requests)`);
  t.same(new Set(seen), new Set([undefined]), 'no Authorization sent to the other origin');
});

t.test('HTTPS: a self-signed registry needs tlsVerify: false', { skip }, async (t) => {
  const reg = await startRegistry(t, { tls: true });
  const top = await tempDir(t, 'cvmfs-ts-regtls-');
  const built = await writeOciLayout(join(top, 'oci'), testImageSpec('v1'));
  await convertImage(`oci:${top}/oci:v1`, `docker://${reg.host}/test/img:v1`);
  await checkSource(t, `docker://${reg.host}/test/img:v1`, built, { tlsVerify: false });
  const strict = await openImageSource(`docker://${reg.host}/test/img:v1`);
  await t.rejects(strict.resolve(), { code: 'E_NETWORK', message: /certificate/i });
  await strict.close();
});
