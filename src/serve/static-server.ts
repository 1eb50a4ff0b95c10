/**
 * A static HTTP server over a repository directory (the one holding `.cvmfspublished`,
 * `.cvmfswhitelist` and `data/XX/...`), mimicking the Apache setup of `cvmfs_server` (facts sheet §1.2):
 *
 * - `.cvmfs*` files: `application/x-cvmfs`, 61 s lifetime (they change at every publish);
 * - `*.json`: `application/json`, 61 s;
 * - everything else, notably CAS objects (names without a dot): `application/octet-stream`, 3 days
 *   (Apache's `ExpiresDefault`; objects are immutable because their name is their hash);
 * - no `Last-Modified`, no `ETag`, conditional requests ignored (squid mishandles them);
 * - GET and HEAD only; no directory listings; nothing outside the root, even through symlinks.
 *
 * Ranges: one range gives 206; an unsatisfiable one 416; several ranges (rare, CVMFS clients never ask)
 * give the whole file with 200, which RFC 9110 allows. `If-Range` always fails to match because we
 * publish no validators, so it also gives the whole file.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream';
import rangeParser from 'range-parser';
import { CvmfsError, describeError } from '../errors';

export interface ServeOptions {
  /** The repository directory. */
  readonly root: string;
  /** Listen address; 127.0.0.1 unless given, so nothing is exposed by accident. */
  readonly host?: string;
  /** 0 (the default) picks a free port. */
  readonly port?: number;
  /** e.g. `/cvmfs/example.org`: only paths below it are served. */
  readonly urlPrefix?: string;
  /** Receives one common-log-format line per finished request. */
  readonly log?: (line: string) => void;
}

export interface RunningServer {
  /** Base URL including the prefix, without a trailing slash. */
  readonly url: string;
  readonly port: number;
  /** Stops listening, lets in-flight responses finish (briefly), then drops every connection. */
  close(): Promise<void>;
}

export const SHORT_LIFETIME_S = 61;
export const LONG_LIFETIME_S = 3 * 24 * 3600;

export interface ServePolicy {
  readonly contentType: string;
  readonly maxAgeSeconds: number;
}

/** Content type and cache lifetime of a served file, from its (requested) base name. */
export function servePolicy(name: string): ServePolicy {
  if (name.startsWith('.cvmfs')) return { contentType: 'application/x-cvmfs', maxAgeSeconds: SHORT_LIFETIME_S };
  if (name.endsWith('.json')) return { contentType: 'application/json', maxAgeSeconds: SHORT_LIFETIME_S };
  return { contentType: 'application/octet-stream', maxAgeSeconds: LONG_LIFETIME_S };
}

const KEEP_ALIVE_TIMEOUT_MS = 30_000; // Node's 5 s default makes proxies reconnect needlessly
const CLOSE_GRACE_MS = 2_000;

export async function startStaticServer(opts: ServeOptions): Promise<RunningServer> {
  const host = opts.host ?? '127.0.0.1';
  const port = opts.port ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new CvmfsError('E_USAGE', `invalid port ${port}`);
  }
  const prefix = parsePrefix(opts.urlPrefix ?? '');
  const root = await realRoot(opts.root);

  const server = http.createServer((req, res) => {
    handle(root, prefix, req, res, opts.log).catch((e: unknown) => {
      // handle() answers every expected failure itself; this is a last resort.
      if (!res.headersSent) sendError(res, 500);
      else res.destroy(e instanceof Error ? e : undefined);
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;

  await new Promise<void>((resolve, reject) => {
    const onError = (e: Error): void => {
      reject(new CvmfsError('E_NETWORK', `cannot listen on ${host}:${port}: ${describeError(e)}`, { cause: e }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const actualPort = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host;
  let closing: Promise<void> | undefined;

  return {
    url: `http://${urlHost}:${actualPort}${prefix.length ? '/' + prefix.join('/') : ''}`,
    port: actualPort,
    close() {
      closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
        force.unref();
        server.close(() => {
          clearTimeout(force);
          resolve();
        });
        server.closeIdleConnections();
      });
      return closing;
    },
  };
}

function parsePrefix(text: string): string[] {
  const segments = text.split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..' || s.includes('\0'))) {
    throw new CvmfsError('E_USAGE', `invalid URL prefix '${text}'`);
  }
  return segments;
}

async function realRoot(dir: string): Promise<string> {
  let real: string;
  try {
    real = await fsp.realpath(dir);
  } catch (e) {
    throw new CvmfsError('E_NOT_FOUND', `repository directory ${dir} not found`, { cause: e });
  }
  if (!(await fsp.stat(real)).isDirectory()) throw new CvmfsError('E_USAGE', `${dir} is not a directory`);
  return real;
}

/** A request path turned into root-relative segments, or the status to answer with. */
type Resolved = { segments: string[] } | { status: 400 | 404 };

/**
 * Splits before decoding so that an encoded `/` can never act as a separator, and refuses `..`
 * whether literal or encoded (Node does not normalise request paths).
 */
export function resolveRequestPath(rawUrl: string, prefix: readonly string[]): Resolved {
  // Absolute-form targets (`GET http://host/path`) come from clients configured to use us as a proxy.
  let target = rawUrl.replace(/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*/i, '');
  const cut = target.search(/[?#]/);
  if (cut >= 0) target = target.slice(0, cut);
  if (!target.startsWith('/')) return { status: 400 };
  const segments: string[] = [];
  for (const raw of target.split('/')) {
    let s: string;
    try {
      s = decodeURIComponent(raw);
    } catch {
      return { status: 400 };
    }
    if (s.includes('\0')) return { status: 400 };
    if (s === '..' || s.includes('/')) return { status: 404 };
    if (s !== '' && s !== '.') segments.push(s);
  }
  if (segments.length <= prefix.length || prefix.some((p, i) => segments[i] !== p)) return { status: 404 };
  const rest = segments.slice(prefix.length);
  if (isStaging(rest)) return { status: 404 };
  return { segments: rest };
}

/** data/txn is the publisher's staging area for half-written objects, not part of the protocol (§1.2). */
function isStaging(segments: readonly string[]): boolean {
  return segments[0] === 'data' && segments[1] === 'txn';
}

async function handle(
  root: string,
  prefix: readonly string[],
  req: http.IncomingMessage,
  res: http.ServerResponse,
  log: ((line: string) => void) | undefined,
): Promise<void> {
  if (log) {
    res.once('close', () => {
      // Every response has a Content-Length; '-' marks one cut short (client gone, read error).
      const sent = req.method === 'HEAD' ? 0 : (res.getHeader('Content-Length') ?? 0);
      const size = res.writableFinished ? String(sent) : '-';
      log(logLine(req, res.statusCode, size));
    });
  }

  const method = req.method ?? '';
  if (method !== 'GET' && method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return sendError(res, 405);
  }
  const resolved = resolveRequestPath(req.url ?? '', prefix);
  if ('status' in resolved) return sendError(res, resolved.status);

  const file = await openInside(root, resolved.segments);
  if (typeof file === 'number') return sendError(res, file);

  let handed = false; // once the read stream owns the handle it closes it
  try {
    const size = (await file.stat()).size;
    const policy = servePolicy(resolved.segments[resolved.segments.length - 1]);
    const now = Date.now();
    res.setHeader('Content-Type', policy.contentType);
    res.setHeader('Cache-Control', `max-age=${policy.maxAgeSeconds}`);
    res.setHeader('Expires', new Date(now + policy.maxAgeSeconds * 1000).toUTCString());
    res.setHeader('Accept-Ranges', 'bytes');

    let start = 0;
    let end = size - 1;
    const range = req.headers.range;
    if (range !== undefined && req.headers['if-range'] === undefined) {
      const parsed = rangeParser(size, range, { combine: true });
      if (parsed === -1) {
        res.setHeader('Content-Range', `bytes */${size}`);
        return sendError(res, 416);
      }
      // -2 (malformed), other units and multiple ranges: ignore the header and send everything.
      if (parsed !== -2 && parsed.type === 'bytes' && parsed.length === 1) {
        start = parsed[0].start;
        end = parsed[0].end;
        res.statusCode = 206;
        res.setHeader('Content-Range', `bytes ${start}-${end}/${size}`);
      }
    }
    const length = end - start + 1;
    res.setHeader('Content-Length', length);
    if (method === 'HEAD' || length === 0) {
      res.end();
      return;
    }
    const stream = file.createReadStream({ start, end });
    handed = true;
    // pipeline destroys both sides on a client abort or a read error (then the client sees a short body).
    pipeline(stream, res, () => undefined);
  } finally {
    if (!handed) await file.close();
  }
}

/**
 * Opens a regular file below `root`. Symlinks are followed only if their target stays inside the root
 * (`.cvmfsalt-*` shortcuts may be symlinks into data/, §1.8). Returns an HTTP status on refusal.
 */
async function openInside(root: string, segments: readonly string[]): Promise<fsp.FileHandle | number> {
  let handle: fsp.FileHandle;
  try {
    const real = await fsp.realpath(path.join(root, ...segments));
    const rel = path.relative(root, real);
    if (rel === '' || rel === '..' || rel.startsWith('..' + path.sep) || path.isAbsolute(rel)) return 404;
    if (isStaging(rel.split(path.sep))) return 404;
    // O_NOFOLLOW: a symlink swapped in after realpath() fails instead of being followed.
    // O_NONBLOCK: opening a FIFO would otherwise hang a thread-pool thread; no effect on regular files.
    handle = await fsp.open(real, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  } catch (e) {
    return statusOfFsError(e);
  }
  try {
    if ((await handle.stat()).isFile()) return handle;
  } catch {
    // fall through: treat as missing
  }
  await handle.close();
  return 404;
}

function statusOfFsError(e: unknown): number {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return 403;
  if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG' || code === 'EISDIR') {
    return 404;
  }
  return 500;
}

function sendError(res: http.ServerResponse, status: number): void {
  const body = `${status} ${http.STATUS_CODES[status] ?? ''}\n`;
  res.statusCode = status;
  res.setHeader('Content-Type', 'text/plain; charset=utf-8');
  // Never let a proxy remember a miss: the object may be published a moment later.
  res.setHeader('Cache-Control', 'no-store');
  res.removeHeader('Expires');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** `host - - [10/Oct/2000:13:55:36 +0000] "GET /path HTTP/1.1" 200 2326` (always UTC). */
function logLine(req: http.IncomingMessage, status: number, size: string): string {
  const d = new Date();
  const p = (n: number): string => String(n).padStart(2, '0');
  const when =
    `${p(d.getUTCDate())}/${MONTHS[d.getUTCMonth()]}/${d.getUTCFullYear()}:` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
  const hex = (c: string): string => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`;
  const url = (req.url ?? '').replace(/["\\\x00-\x1f\x7f]/g, hex);
  const remote = req.socket.remoteAddress ?? '-';
  return `${remote} - - [${when}] "${req.method ?? '-'} ${url} HTTP/${req.httpVersion}" ${status} ${size}`;
}
