import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { resolveRequestPath, startStaticServer, type RunningServer } from '../../src/serve/static-server';
import { checkLifetime, makeServedRepo, MANIFEST, OBJECT, OBJECT_BYTES, raw } from '../helpers/http';

/** The served repository, plus an empty object, symlinks in and out of the root and a FIFO. */
function makeRepo(t: Tap): string {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'cvmfs-serve-'));
  t.teardown(() => fs.rmSync(top, { recursive: true, force: true }));
  const repo = makeServedRepo(top);
  fs.writeFileSync(path.join(repo, 'data', 'ab', 'empty'), '');
  fs.symlinkSync('../outside/secret.txt', path.join(repo, 'escape'));
  fs.symlinkSync(path.join(top, 'outside'), path.join(repo, 'data', 'out'));
  fs.symlinkSync(`data/${OBJECT}`, path.join(repo, '.cvmfsalt-abcdef')); // a bootstrapping shortcut (§1.8)
  fs.symlinkSync('data/txn/partial', path.join(repo, 'staged'));
  execFileSync('mkfifo', [path.join(repo, 'data', 'ab', 'fifo')]);
  return repo;
}
type Tap = Test;

async function start(
  t: Tap,
  opts: { urlPrefix?: string; log?: (l: string) => void } = {},
): Promise<{ srv: RunningServer; repo: string }> {
  const repo = makeRepo(t);
  const srv = await startStaticServer({ root: repo, port: 0, ...opts });
  t.teardown(() => srv.close());
  return { srv, repo };
}

t.test('root files, objects and json carry the CVMFS cache headers', async (t) => {
  const lines: string[] = [];
  const { srv } = await start(t, { log: (l) => lines.push(l) });
  t.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+$/, 'listens on loopback by default');
  t.equal(srv.url, `http://127.0.0.1:${srv.port}`);

  const m = await fetch(`${srv.url}/.cvmfspublished`);
  t.equal(m.status, 200);
  t.equal(m.headers.get('content-type'), 'application/x-cvmfs');
  t.equal(await m.text(), MANIFEST);

  const r = await raw(srv.url, 'GET', '/.cvmfspublished');
  t.equal(r.headers['content-length'], String(MANIFEST.length));
  checkLifetime(t, r, 61);
  t.equal(r.headers.connection, 'keep-alive');

  const w = await raw(srv.url, 'GET', '/.cvmfswhitelist');
  t.equal(w.headers['content-type'], 'application/x-cvmfs');
  checkLifetime(t, w, 61);

  const j = await raw(srv.url, 'GET', '/meta.json');
  t.equal(j.headers['content-type'], 'application/json');
  checkLifetime(t, j, 61);

  const o = await raw(srv.url, 'GET', `/data/${OBJECT}`);
  t.equal(o.status, 200);
  t.equal(o.headers['content-type'], 'application/octet-stream');
  t.equal(o.headers['accept-ranges'], 'bytes');
  t.same(o.body, OBJECT_BYTES);
  checkLifetime(t, o, 259200);

  const alt = await raw(srv.url, 'GET', '/.cvmfsalt-abcdef');
  t.equal(alt.status, 200, 'symlink inside the root is followed');
  t.equal(alt.headers['content-type'], 'application/x-cvmfs', 'type follows the requested name');
  t.same(alt.body, OBJECT_BYTES);

  const e = await raw(srv.url, 'GET', '/data/ab/empty');
  t.equal(e.status, 200);
  t.equal(e.headers['content-length'], '0');

  await new Promise((r) => setImmediate(r));
  t.equal(lines.length, 7, 'one log line per request');
  const clf = /^127\.0\.0\.1 - - \[\d\d\/\w{3}\/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET \/\.cvmfspublished HTTP\/1\.1" 200 (\d+)$/;
  t.equal(clf.exec(lines[0])?.[1], String(MANIFEST.length), 'common log format with the body size');
});

t.test('HEAD, ranges and conditional headers', async (t) => {
  const { srv } = await start(t);
  const h = await raw(srv.url, 'HEAD', `/data/${OBJECT}`);
  t.equal(h.status, 200);
  t.equal(h.headers['content-length'], '1000');
  t.equal(h.body.length, 0);
  checkLifetime(t, h, 259200);

  const p = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'bytes=10-19' });
  t.equal(p.status, 206);
  t.equal(p.headers['content-range'], 'bytes 10-19/1000');
  t.equal(p.headers['content-length'], '10');
  t.same(p.body, OBJECT_BYTES.subarray(10, 20));
  checkLifetime(t, p, 259200);

  const tail = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'bytes=-5' });
  t.equal(tail.status, 206);
  t.same(tail.body, OBJECT_BYTES.subarray(995));

  const bad = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'bytes=5000-6000' });
  t.equal(bad.status, 416);
  t.equal(bad.headers['content-range'], 'bytes */1000');

  const multi = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'bytes=0-1,10-11' });
  t.equal(multi.status, 200, 'several ranges: the whole file');
  t.same(multi.body, OBJECT_BYTES);

  const junk = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'lines=1-2' });
  t.equal(junk.status, 200, 'unknown range unit is ignored');

  const ifRange = await raw(srv.url, 'GET', `/data/${OBJECT}`, { range: 'bytes=0-1', 'if-range': '"x"' });
  t.equal(ifRange.status, 200, 'If-Range never matches: no validators');

  const ims = await raw(srv.url, 'GET', '/.cvmfspublished', { 'if-modified-since': new Date().toUTCString() });
  t.equal(ims.status, 200, 'If-Modified-Since is ignored');
});

t.test('refusals: methods, directories, missing files, traversal', async (t) => {
  const { srv } = await start(t);
  const post = await raw(srv.url, 'POST', '/.cvmfspublished');
  t.equal(post.status, 405);
  t.equal(post.headers.allow, 'GET, HEAD');
  t.equal((await raw(srv.url, 'PUT', '/x')).status, 405);

  const missing = ['/', '/data', '/data/', '/data/ab', '/data/ab/', '/missing', '/data/ab/nope'];
  // staging files, also through a symlink; a FIFO must not hang the open
  for (const p of [...missing, '/data/txn/partial', '/staged', '/data/ab/fifo']) {
    const r = await raw(srv.url, 'GET', p);
    t.equal(r.status, 404, `${p} → 404`);
    t.equal(r.headers['cache-control'], 'no-store', 'misses are not cached');
  }

  const attacks = [
    '/../outside/secret.txt',
    '/data/../../outside/secret.txt',
    '/%2e%2e/outside/secret.txt',
    '/%2E%2E/outside/secret.txt',
    '/data/%2e%2e/%2e%2e/outside/secret.txt',
    '/..%2foutside%2fsecret.txt',
    '/escape',
    '/data/out/secret.txt',
    '/%00',
    '/.cvmfspublished%00.json',
    '/%zz',
  ];
  for (const p of attacks) {
    const r = await raw(srv.url, 'GET', p);
    t.ok(r.status === 404 || r.status === 400, `${p} → ${r.status}`);
    t.notMatch(r.body.toString(), /secret/);
  }
  t.equal((await raw(srv.url, 'GET', '/%00')).status, 400);
  t.equal((await raw(srv.url, 'GET', '/%zz')).status, 400);

  // Harmless forms still work.
  const inside = await raw(srv.url, 'GET', '/./data//ab/../ab/x');
  t.equal(inside.status, 404, '.. is refused even when it would stay inside');
  t.equal((await raw(srv.url, 'GET', `/data//./${OBJECT}?x=1`)).status, 200);
  t.equal((await raw(srv.url, 'GET', `/data/%61b/${OBJECT.slice(3)}`)).status, 200, 'percent-decoding');
});

t.test('URL prefix', async (t) => {
  const { srv } = await start(t, { urlPrefix: '/cvmfs/example.org/' });
  t.match(srv.url, /^http:\/\/127\.0\.0\.1:\d+\/cvmfs\/example\.org$/);
  t.equal((await fetch(`${srv.url}/.cvmfspublished`)).status, 200);
  t.equal((await raw(srv.url, 'GET', '/.cvmfspublished')).status, 404);
  t.equal((await raw(srv.url, 'GET', '/cvmfs/example.orgX/.cvmfspublished')).status, 404);
  t.equal((await raw(srv.url, 'GET', '/cvmfs/example.org/../example.org/.cvmfspublished')).status, 404);
  const abs = await raw(srv.url, 'GET', `http://stratum0.example/cvmfs/example.org/data/${OBJECT}`);
  t.equal(abs.status, 200, 'absolute-form request target');

  const prefix = ['cvmfs', 'example.org'];
  t.same(resolveRequestPath('/cvmfs/example.org/data/ab/x', prefix), { segments: ['data', 'ab', 'x'] });
  t.same(resolveRequestPath('/cvmfs/example.org', prefix), { status: 404 });
  t.same(resolveRequestPath('*', []), { status: 400 });
});

t.test('keep-alive and close', async (t) => {
  const repo = makeRepo(t);
  const srv = await startStaticServer({ root: repo });
  t.teardown(() => srv.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const a = await raw(srv.url, 'GET', '/.cvmfspublished', {}, agent);
  const b = await raw(srv.url, 'GET', `/data/${OBJECT}`, {}, agent);
  t.equal(a.status, 200);
  t.equal(b.status, 200);
  t.ok(b.reusedSocket, 'second request reuses the connection');

  const started = Date.now();
  await srv.close(); // the agent still holds an idle keep-alive socket
  t.ok(Date.now() - started < 1500, 'close does not wait for idle keep-alive connections');
  await srv.close(); // idempotent
  await t.rejects(fetch(`${srv.url}/.cvmfspublished`), 'nothing listens any more');
});

t.test('startup errors', async (t) => {
  await t.rejects(startStaticServer({ root: '/nonexistent/repo' }), { code: 'E_NOT_FOUND' });
  const repo = makeRepo(t);
  await t.rejects(startStaticServer({ root: path.join(repo, '.cvmfspublished') }), { code: 'E_USAGE' });
  await t.rejects(startStaticServer({ root: repo, port: 70000 }), { code: 'E_USAGE' });
  await t.rejects(startStaticServer({ root: repo, urlPrefix: '/a/../b' }), { code: 'E_USAGE' });
  const first = await startStaticServer({ root: repo });
  t.teardown(() => first.close());
  await t.rejects(startStaticServer({ root: repo, port: first.port }), { code: 'E_NETWORK' });
});
