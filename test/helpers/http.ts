/**
 * Shared by the serve tests (`cvmfs-ts serve` and docs/nginx-cvmfs.conf on nginx): the small
 * repository they serve, raw HTTP requests and the CVMFS cache-header checks.
 */
import type { Test } from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';

export const OBJECT = 'ab/cdef0123456789abcdef0123456789abcdef'; // 40 hex digits split like data/XX/...
export const OBJECT_BYTES = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
export const MANIFEST = 'Cabc\nD240\nS7\nNexample.org\n--\nsignature\n';

/**
 * top/{repo,outside}: a fake repository (manifest, whitelist, meta.json, one object, a staging file)
 * and a secret beside it that must stay unreachable. Returns the repository directory.
 */
export function makeServedRepo(top: string): string {
  const repo = path.join(top, 'repo');
  fs.mkdirSync(path.join(repo, 'data', 'ab'), { recursive: true });
  fs.mkdirSync(path.join(repo, 'data', 'txn'));
  fs.mkdirSync(path.join(top, 'outside'));
  fs.writeFileSync(path.join(top, 'outside', 'secret.txt'), 'secret\n');
  fs.writeFileSync(path.join(repo, '.cvmfspublished'), MANIFEST);
  fs.writeFileSync(path.join(repo, '.cvmfswhitelist'), 'whitelist\n');
  fs.writeFileSync(path.join(repo, 'meta.json'), '{"a":1}\n');
  fs.writeFileSync(path.join(repo, 'data', OBJECT), OBJECT_BYTES);
  fs.writeFileSync(path.join(repo, 'data', 'txn', 'partial'), 'half');
  return repo;
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  reusedSocket: boolean;
}

/**
 * A raw request to the host and port of `base` (`http://host:port`, any path in it is ignored):
 * node:http sends `rawPath` untouched (fetch would normalise `..`).
 */
export function raw(
  base: string,
  method: string,
  rawPath: string,
  headers: Record<string, string> = {},
  agent?: http.Agent,
): Promise<Reply> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: rawPath, headers, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, reusedSocket: req.reusedSocket });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Lifetime as announced by Cache-Control and as implied by Expires - Date; no validators. */
export function checkLifetime(t: Test, r: Reply, seconds: number): void {
  t.equal(r.headers['cache-control'], `max-age=${seconds}`);
  const expires = Date.parse(String(r.headers.expires));
  const date = Date.parse(String(r.headers.date));
  t.ok(Number.isFinite(expires) && Number.isFinite(date), 'Expires and Date parse');
  t.ok(Math.abs((expires - date) / 1000 - seconds) <= 1, `Expires is Date + ${seconds} s`);
  t.notOk('etag' in r.headers, 'no ETag');
  t.notOk('last-modified' in r.headers, 'no Last-Modified');
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}
