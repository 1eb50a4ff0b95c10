/**
 * The `/metrics` endpoint of a daemon: plain HTTP on a TCP address or a unix socket, GET (and HEAD)
 * of /metrics only. A scrape runs on the daemon's JS thread, like everything else; it reads
 * counters and a few cheap gauges, nothing that blocks.
 */
import * as http from 'node:http';
import * as net from 'node:net';
import { lstat, unlink } from 'node:fs/promises';
import { CvmfsError, describeError } from '../errors';
import { formatListenAddress, type ListenAddress } from './listen-address';
import type { MetricsRegistry } from './registry';

export interface MetricsServer {
  /** Where it listens, with the port actually bound (`http://127.0.0.1:PORT` or `unix:PATH`). */
  readonly address: string;
  close(): Promise<void>;
}

/** True when something accepts connections on the unix socket `path`. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((done) => {
    const c = net.connect(path);
    c.once('connect', () => (c.destroy(), done(true)));
    c.once('error', () => done(false));
  });
}

/**
 * A socket file left behind by a daemon that was killed makes bind fail with EADDRINUSE; one that a
 * live daemon serves must stay (two mounts configured with the same path).
 */
async function removeStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new CvmfsError('E_USAGE', `metrics socket ${path} exists and is not a socket`);
  if (await socketInUse(path)) throw new CvmfsError('E_USAGE', `metrics socket ${path} is in use by another process`);
  await unlink(path).catch(() => undefined);
}

export async function startMetricsServer(address: ListenAddress, registry: MetricsRegistry): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    registry.text().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${describeError(e)}\n`),
    );
  });
  // Scrapers reconnect anyway; idle keep-alive sockets must not hold close() up.
  server.keepAliveTimeout = 5000;
  if (address.kind === 'unix') await removeStaleSocket(address.path);
  await new Promise<void>((done, fail) => {
    server.once('error', (e) =>
      fail(new CvmfsError('E_USAGE', `metrics: cannot listen on ${formatListenAddress(address)}: ${describeError(e)}`, { cause: e })),
    );
    if (address.kind === 'unix') server.listen(address.path, () => done());
    else server.listen(address.port, address.host, () => done());
  });
  const bound = server.address();
  const actual: ListenAddress =
    address.kind === 'tcp' && bound !== null && typeof bound === 'object' ? { ...address, port: bound.port } : address;
  return {
    address: formatListenAddress(actual),
    close: async () => {
      await new Promise<void>((done) => {
        server.close(() => done());
        server.closeAllConnections();
      });
      if (address.kind === 'unix') await unlink(address.path).catch(() => undefined);
    },
  };
}
