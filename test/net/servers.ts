/**
 * Small real HTTP servers on 127.0.0.1 for the net/fetch tests: a scriptable fault server that records
 * what it received, and a tiny forward proxy that speaks the absolute-form GET requests CVMFS sends.
 * Everything registers its own close in t.teardown.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { freePort } from '../helpers/http';
import type { DownloaderOptions } from '../../src/net/downloader';

export interface Seen {
  readonly method: string;
  /** The request target as sent (origin-form `/x` or absolute-form `http://h/x`). */
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  /** Index of the TCP connection the request came on (keep-alive reuse). */
  readonly connection: number;
}

export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly seen: Seen[];
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

type Teardown = { teardown(fn: () => unknown): void };
export type Handler = (req: http.IncomingMessage, res: http.ServerResponse, seen: Seen) => void | Promise<void>;

/** A node:http server on 127.0.0.1 running `handler` for every request, recording each one. */
export async function startServer(t: Teardown, handler: Handler, prefix = ''): Promise<TestServer> {
  const seen: Seen[] = [];
  const sockets = new Map<Socket, number>();
  let count = 0;
  const server = http.createServer((req, res) => {
    const entry: Seen = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      connection: sockets.get(req.socket) ?? -1,
    };
    seen.push(entry);
    Promise.resolve(handler(req, res, entry)).catch((e: unknown) => res.destroy(e as Error));
  });
  server.on('connection', (s) => sockets.set(s, count++));
  server.on('connect', (req, socket) => {
    // CVMFS never tunnels plain HTTP; record and refuse so a CONNECT shows up in tests.
    seen.push({ method: 'CONNECT', url: req.url ?? '', headers: req.headers, connection: -1 });
    socket.end('HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }));
  t.teardown(close);
  return { url: `http://127.0.0.1:${port}${prefix}`, port, seen, connections: () => count, close };
}

/**
 * A forward proxy: accepts `GET http://host:port/path` (absolute form), forwards it to that origin with the
 * client's headers and streams the answer back. `hook` may answer instead (e.g. a 502 with X-Squid-Error).
 */
export function startProxy(
  t: Teardown,
  hook?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean,
): Promise<TestServer> {
  return startServer(t, (req, res) => {
    if (hook?.(req, res)) return;
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'content-length': '0' }).end(); // origin-form: not a proxy request
      return;
    }
    const upstream = http.request(
      { host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'x-squid-error': 'ERR_CONNECT_FAIL 111', 'content-length': '0' }).end();
      else res.destroy();
    });
    upstream.end();
  });
}

/** A URL on 127.0.0.1 where nothing listens (connection refused). */
export async function deadUrl(path = ''): Promise<string> {
  return `http://127.0.0.1:${await freePort()}${path}`;
}

/** Downloader options with tiny timeouts and backoffs for tests. */
export function testOptions(over: Partial<DownloaderOptions> & Pick<DownloaderOptions, 'serverUrls'>): DownloaderOptions {
  return {
    proxyGroups: [['DIRECT']],
    timeoutS: 2,
    timeoutDirectS: 2,
    maxRetries: 1,
    backoffInitS: 0.01,
    backoffMaxS: 0.02,
    lowSpeedLimit: 1024,
    followRedirects: false,
    proxyResetAfterS: 300,
    hostResetAfterS: 1800,
    ...over,
  };
}
