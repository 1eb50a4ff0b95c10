/**
 * Where a metrics endpoint listens: `HOST:PORT` (`[IPv6]:PORT`) for TCP, or an absolute path for a
 * unix socket. Shared by CVMFS_TS_METRICS_LISTEN (mount) and `snapshotter --metrics-listen`.
 * Port 0 picks a free port; the server reports the one it got.
 */
import { isAbsolute, normalize } from 'node:path';

export type ListenAddress =
  | { readonly kind: 'tcp'; readonly host: string; readonly port: number }
  | { readonly kind: 'unix'; readonly path: string };

/** What a valid address looks like, for error messages. */
export const LISTEN_ADDRESS_FORMS = 'HOST:PORT, [IPv6]:PORT or an absolute unix socket path';

/** Parses an address; undefined when `text` is none of the accepted forms. */
export function parseListenAddress(text: string): ListenAddress | undefined {
  const s = text.trim();
  if (s.startsWith('/')) return isAbsolute(s) ? { kind: 'unix', path: normalize(s) } : undefined;
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { kind: 'tcp', host: m[1] ?? m[2], port };
}

/** `http://HOST:PORT` or `unix:PATH`, for log lines. */
export function formatListenAddress(a: ListenAddress): string {
  if (a.kind === 'unix') return `unix:${a.path}`;
  return `http://${a.host.includes(':') ? `[${a.host}]` : a.host}:${a.port}`;
}
