/**
 * docs/nginx-cvmfs.conf against a real nginx: the same headers as `cvmfs-ts serve`.
 * nginx runs in the foreground, single process (master_process off: no worker switching to a user
 * that could not read our mode-700 temp directory), with every path it writes under a temp dir.
 */
import t, { type Test } from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { checkLifetime, freePort, makeServedRepo, MANIFEST, OBJECT, OBJECT_BYTES, raw } from '../helpers/http';

const NGINX = '/usr/sbin/nginx';
const FQRN = 'example.org';
const CONF_TEMPLATE = path.join(__dirname, '..', '..', 'docs', 'nginx-cvmfs.conf');

/** Temp-path directives, minus those of modules this nginx was built without (they would not parse). */
function tempPaths(dir: string): string {
  const built = spawnSync(NGINX, ['-V'], { encoding: 'utf8' }).stderr;
  return ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']
    .filter((m) => m === 'client_body' || !built.includes(`--without-http_${m}_module`))
    .map((m) => `  ${m}_temp_path ${path.join(dir, 'tmp', m)};`)
    .join('\n');
}

/** Starts nginx on a free port and returns its base URL, `http://127.0.0.1:port`. */
async function startNginx(t: Test): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cvmfs-nginx-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const repo = makeServedRepo(dir);
  fs.mkdirSync(path.join(dir, 'tmp'));
  fs.mkdirSync(path.join(dir, 'logs')); // nginx -p expects it even with error_log on stderr
  const port = await freePort();
  const server = fs
    .readFileSync(CONF_TEMPLATE, 'utf8')
    .replaceAll('@REPO_DIR@', repo)
    .replaceAll('@FQRN@', FQRN)
    .replaceAll('@PORT@', String(port));
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    [
      'worker_processes 1;',
      'master_process off;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      'error_log stderr;',
      'events { worker_connections 64; }',
      'http {',
      '  access_log off;',
      tempPaths(dir),
      server,
      '}',
      '',
    ].join('\n'),
  );

  // `-e stderr` keeps nginx from opening its compiled-in error log before reading the config.
  const child: ChildProcess = spawn(NGINX, ['-p', dir + '/', '-c', conf, '-e', 'stderr', '-g', 'daemon off;'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      process.kill(child.pid, 'SIGTERM');
    }
    await exited;
  });

  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}`);
    try {
      await raw(url, 'HEAD', '/');
      return url;
    } catch {
      if (Date.now() > deadline) throw new Error(`nginx did not answer on port ${port}: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

const skip = fs.existsSync(NGINX) ? false : `${NGINX} not installed (apt-get install nginx-light)`;

t.test('docs/nginx-cvmfs.conf on a real nginx', { skip }, async (t) => {
  const url = await startNginx(t);
  const base = `/cvmfs/${FQRN}`;

  const m = await raw(url, 'GET', `${base}/.cvmfspublished`);
  t.equal(m.status, 200);
  t.equal(m.headers['content-type'], 'application/x-cvmfs');
  t.equal(m.body.toString(), MANIFEST);
  t.equal(m.headers.connection, 'keep-alive');
  checkLifetime(t, m, 61);

  const w = await raw(url, 'GET', `${base}/.cvmfswhitelist`);
  t.equal(w.headers['content-type'], 'application/x-cvmfs');
  checkLifetime(t, w, 61);

  const j = await raw(url, 'GET', `${base}/meta.json`);
  t.equal(j.headers['content-type'], 'application/json');
  checkLifetime(t, j, 61);

  const o = await raw(url, 'GET', `${base}/data/${OBJECT}`);
  t.equal(o.status, 200);
  t.equal(o.headers['content-type'], 'application/octet-stream');
  t.same(o.body, OBJECT_BYTES);
  checkLifetime(t, o, 259200);

  const h = await raw(url, 'HEAD', `${base}/data/${OBJECT}`);
  t.equal(h.status, 200);
  t.equal(h.headers['content-length'], '1000');
  t.equal(h.body.length, 0);

  const p = await raw(url, 'GET', `${base}/data/${OBJECT}`, { range: 'bytes=10-19' });
  t.equal(p.status, 206);
  t.equal(p.headers['content-range'], 'bytes 10-19/1000');
  t.same(p.body, OBJECT_BYTES.subarray(10, 20));
  checkLifetime(t, p, 259200);

  const bad = await raw(url, 'GET', `${base}/data/${OBJECT}`, { range: 'bytes=5000-6000' });
  t.equal(bad.status, 416);
  t.equal(bad.headers['content-range'], 'bytes */1000');

  const later = new Date(Date.now() + 3600_000).toUTCString();
  const ims = await raw(url, 'GET', `${base}/.cvmfspublished`, { 'if-modified-since': later });
  t.equal(ims.status, 200, 'If-Modified-Since is ignored');

  t.equal((await raw(url, 'POST', `${base}/.cvmfspublished`)).status, 405);

  for (const d of ['/', '/data', '/data/', '/data/ab', '/data/ab/', '/missing', '/data/txn/partial']) {
    t.equal((await raw(url, 'GET', base + d)).status, 404, `${d} → 404`);
  }

  const attacks = [
    `${base}/../../outside/secret.txt`,
    `${base}/%2e%2e/%2e%2e/%2e%2e/outside/secret.txt`,
    `${base}/..%2f..%2foutside%2fsecret.txt`,
  ];
  for (const a of attacks) {
    const r = await raw(url, 'GET', a);
    t.ok(r.status === 400 || r.status === 404, `${a} → ${r.status}`);
    t.notMatch(r.body.toString(), /secret/);
  }

  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  await raw(url, 'GET', `${base}/.cvmfspublished`, {}, agent);
  t.ok((await raw(url, 'GET', `${base}/data/${OBJECT}`, {}, agent)).reusedSocket, 'keep-alive');
});
