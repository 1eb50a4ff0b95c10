/**
 * HTTP downloads the way the CVMFS download manager does them (facts sheet §1.1, §5.12):
 *
 * - a ring of server URLs (the "host chain") and groups of proxies (`DIRECT` = no proxy);
 * - requests through a proxy are plain `GET http://server/cvmfs/repo/data/..` with the absolute URI as the
 *   request target and the server's Host header, sent on a keep-alive pool connected to the proxy itself.
 *   (undici's ProxyAgent would tunnel with CONNECT, which an HTTP cache such as squid cannot cache.)
 * - bodies stream into a caller's sink chunk by chunk; nothing is buffered whole;
 * - per request: transfer errors (connection, timeout, too slow, short body, HTTP 429) are retried on the
 *   same path up to `maxRetries` times with a random backoff; then a failing proxy is replaced by the next
 *   one of its group, then by the next group; host errors (HTTP 5xx/400/404, any non-2xx when DIRECT, name
 *   resolution or connection failures when DIRECT) move to the next host. When every proxy failed for a
 *   host, that becomes a host failure. We give up when every host has failed.
 * - a failed attempt that already delivered bytes calls `onRestart` before the next attempt: the caller
 *   resets its hash and temporary file and the next attempt starts again from byte 0 (no byte-range resume).
 * - bad data: when the caller passes `verify` and it rejects a complete body, the same path is tried once
 *   more with no-cache headers; if that body is rejected too, it is a host error (next host).
 * - reset timers: `proxyResetAfterS` after the first switch to a backup proxy group, requests start at
 *   group 0 again (and the members of a load-balanced group that failed are forgiven after the same
 *   time); `hostResetAfterS` after the first switch away from the first host, requests start at host 0
 *   again. 0 turns a timer off. Checked at the start of each request, as in cvmfs.
 *
 * Not done: proxy sharding, Geo-API ordering, WPAD. The global "current" host and proxy only move when the
 * failing request used them, as in cvmfs.
 *
 * Errors: `DownloadError` (code E_NETWORK, or E_NOT_FOUND when every host answered 404) names the URL and
 * the last cause. An error thrown by the sink is not a network failure: it ends the download at once and
 * propagates unchanged. An aborted `signal` ends it with `signal.reason`.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { CvmfsError, describeError } from '../errors';
import type { ClientSettings } from '../config/settings';
import { VERSION } from '../version';

/** The network settings of a mount (documented on ClientSettings), plus how we introduce ourselves. */
export type DownloaderOptions = Pick<
  ClientSettings,
  | 'serverUrls'
  | 'proxyGroups'
  | 'timeoutS'
  | 'timeoutDirectS'
  | 'maxRetries'
  | 'backoffInitS'
  | 'backoffMaxS'
  | 'lowSpeedLimit'
  | 'followRedirects'
  | 'proxyResetAfterS'
  | 'hostResetAfterS'
> & {
  readonly userAgent?: string;
  readonly observer?: DownloadObserver;
  /** Kept-alive connections per server or proxy (default 16): as many as downloads may run at once. */
  readonly connections?: number;
};

/** How one HTTP attempt ended: `ok`, or the kind of failure (§5.12 decides what each one means). */
export type AttemptOutcome = 'ok' | 'not_found' | 'http_error' | 'host_error' | 'proxy_error' | 'transfer_error' | 'bad_data' | 'aborted';

export interface AttemptReport {
  /** The base URL (host) and the proxy (or DIRECT) of the attempt. */
  readonly host: string;
  readonly proxy: string;
  /** The path below the base URL. */
  readonly path: string;
  readonly outcome: AttemptOutcome;
  /** Body bytes handed to the sink by this attempt. */
  readonly bytes: number;
  /** Request to last byte. */
  readonly seconds: number;
  /** Why it failed. */
  readonly detail?: string;
}

/**
 * Told about every attempt and every failover as it happens, for metrics and logs (the composition
 * root wires it); called synchronously, so it must be cheap and must not throw.
 */
export interface DownloadObserver {
  attempt(r: AttemptReport): void;
  /** A request moves on from `from` to `to` (another host, or another proxy for the same host). */
  failover(kind: 'host' | 'proxy', from: string, to: string, reason: string): void;
}

export interface DownloadRequestOptions {
  readonly signal?: AbortSignal;
  /** Ask caches for a fresh copy (`Pragma: no-cache`, `Cache-Control: no-cache`); no same-path retries. */
  readonly noCache?: boolean;
  /** Called before another attempt when a failed one had already delivered bytes to the sink. */
  readonly onRestart?: () => void | Promise<void>;
  /** A byte range of the remote file (chunks of external files, §7.1). */
  readonly range?: { readonly offset: number; readonly size: number };
  /** Other base URLs instead of the server ring (external data hosts, §7.1); tried in order. */
  readonly baseUrls?: readonly string[];
  /**
   * Checks a complete body (e.g. its content hash); false = bad data: the path is tried once more with
   * no-cache headers, then it is a host error. `onRestart` is called before the next attempt.
   */
  readonly verify?: () => boolean | Promise<boolean>;
}

export interface DownloadResult {
  /** The base URL that served the body. */
  readonly host: string;
  /** The proxy URL that carried it, or 'DIRECT'. */
  readonly proxy: string;
  /** Bytes handed to the sink by the successful attempt. */
  readonly bytes: number;
}

export interface DownloaderCounters {
  /** Requests that succeeded. */
  downloads: number;
  /** Body bytes delivered to sinks, failed attempts included. */
  bytes: number;
  /** Requests that gave up. */
  failures: number;
  /** Same-path retries. */
  retries: number;
  /** Wall-clock seconds spent in transfers (every attempt, request to last byte): bytes / seconds = speed. */
  seconds: number;
  /** Times a request moved on to another host / another proxy. */
  hostFailovers: number;
  proxyFailovers: number;
}

export type Sink = (chunk: Buffer) => void | Promise<void>;

export const DIRECT = 'DIRECT';
const DEFAULT_CONNECTIONS = 16;
const MAX_REDIRECTS = 4;
const REDIRECTS = new Set([301, 302, 303, 307, 308]);

/**
 * A download that failed on every host; `code` is E_NOT_FOUND when every host said 404. `badData`: some
 * host delivered a body that `verify` rejected (whatever the last failure was).
 */
export class DownloadError extends CvmfsError {
  constructor(
    readonly url: string,
    readonly attempts: number,
    readonly lastCause: string,
    notFound: boolean,
    options?: ErrorOptions,
    readonly badData = false,
  ) {
    super(
      notFound ? 'E_NOT_FOUND' : 'E_NETWORK',
      `${url}: download failed on every host (${attempts} attempt${attempts === 1 ? '' : 's'}); last: ${lastCause}`,
      options,
    );
  }
}

/** How a failed attempt counts (§5.12). */
type FailureKind = 'transfer' | 'host' | 'proxy' | 'badData';

class AttemptFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly status?: number,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

function outcomeOf(f: AttemptFailure): AttemptOutcome {
  if (f.kind === 'host') return f.status === 404 ? 'not_found' : f.status !== undefined ? 'http_error' : 'host_error';
  if (f.kind === 'badData') return 'bad_data';
  return f.kind === 'proxy' ? 'proxy_error' : 'transfer_error';
}

/** Wraps an error thrown by the caller's sink so it is told apart from transfer errors. */
class SinkFailure extends Error {
  constructor(readonly error: unknown) {
    super('sink failed');
  }
}

const ALLOWED = /^[0-9A-Za-z/:.@+\-_~[\],]$/;

/** Percent-escapes every byte outside `0-9 A-Z a-z / : . @ + - _ ~ [ ] ,` with upper-case hex (§1.1). */
export function escapeUrl(url: string): string {
  let out = '';
  for (const byte of Buffer.from(url, 'utf8')) {
    const c = String.fromCharCode(byte);
    out += byte < 0x80 && ALLOWED.test(c) ? c : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** `http://` added when there is no scheme; no trailing slash; `DIRECT` kept as is. */
export function normalizeProxy(proxy: string): string {
  const p = proxy.trim();
  if (p.toUpperCase() === DIRECT) return DIRECT;
  return (/^[a-z][a-z0-9+.-]*:\/\//i.test(p) ? p : `http://${p}`).replace(/\/+$/, '');
}

/** Scheme plus authority, and the path with query, of an absolute http(s) URL. */
function splitUrl(url: string): { origin: string; authority: string; path: string } {
  const m = /^(https?):\/\/([^/?#]+)([^#]*)/i.exec(url);
  if (!m) throw new CvmfsError('E_USAGE', `'${url}' is not an http(s) URL`);
  const path = m[3] === '' ? '/' : m[3].startsWith('/') ? m[3] : '/' + m[3];
  return { origin: `${m[1].toLowerCase()}://${m[2]}`, authority: m[2], path };
}

/** Proxies normalized, empty members and groups dropped; no group at all means DIRECT. */
function normalizeGroups(groups: readonly (readonly string[])[]): string[][] {
  const out = groups.map((g) => g.map(normalizeProxy).filter((p) => p !== '')).filter((g) => g.length > 0);
  return out.length > 0 ? out : [[DIRECT]];
}

/** Network error codes that mean the name did not resolve (a host error at once, no retry). */
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA']);

function errorCode(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function headerText(v: string | string[] | undefined): string {
  return Array.isArray(v) ? v.join(', ') : (v ?? '');
}

/** Where a host ring stands, and since when (performance.now() ms) it has been away from its first host. */
interface RingState {
  index: number;
  awaySince: number | undefined;
}

/** True when a timer started at `since` has run for more than `seconds` (0 = never). */
function expired(since: number | undefined, seconds: number, now: number): boolean {
  return since !== undefined && seconds > 0 && now - since > seconds * 1000;
}

export class Downloader {
  readonly counters: DownloaderCounters = {
    downloads: 0,
    bytes: 0,
    failures: 0,
    retries: 0,
    seconds: 0,
    hostFailovers: 0,
    proxyFailovers: 0,
  };
  private hosts: readonly string[];
  private groups: readonly (readonly string[])[];
  private readonly userAgent: string;
  private hostRing: RingState = { index: 0, awaySince: undefined };
  /** Base-URL lists given per request (external hosts) remember their own current index. */
  private readonly otherRings = new Map<string, RingState>();
  private groupIndex = 0;
  /** Per group: the member in use, and the members that failed since the group became current. */
  private memberIndex: number[];
  private burned: Set<number>[];
  /** CVMFS_TIMEOUT / CVMFS_TIMEOUT_DIRECT in seconds; changeable while running (talk `timeout set`). */
  private timeoutS: number;
  private timeoutDirectS: number;
  /** Reset timers (performance.now() ms): since a backup group is current; since a member failed over. */
  private backupGroupSince: number | undefined;
  private memberFailoverSince: number | undefined;
  private readonly pools = new Map<string, Pool>();
  private closed = false;

  constructor(private readonly o: DownloaderOptions) {
    if (o.serverUrls.length === 0) throw new CvmfsError('E_USAGE', 'no server URL configured');
    this.hosts = o.serverUrls.map((u) => u.replace(/\/+$/, ''));
    this.groups = normalizeGroups(o.proxyGroups);
    this.memberIndex = this.groups.map((g) => Math.floor(Math.random() * g.length));
    this.burned = this.groups.map(() => new Set<number>());
    this.timeoutS = o.timeoutS;
    this.timeoutDirectS = o.timeoutDirectS;
    this.userAgent = o.userAgent ?? `cvmfs-ts/${VERSION}`;
  }

  // ---- run-time control (talk `host …`, `proxy …`, `timeout …`); requests under way finish as they began ----

  /** Index of currentHost() in hostList(). */
  currentHostIndex(): number {
    return this.hostRing.index;
  }

  /** Makes the next host of the chain the current one (its reset timer starts as after a failover). */
  switchHost(): void {
    const ring = this.hostRing;
    ring.index = (ring.index + 1) % this.hosts.length;
    ring.awaySince = ring.index === 0 ? undefined : (ring.awaySince ?? performance.now());
  }

  /** A new host chain, starting at its first host. A fresh ring state: requests under way move the old one. */
  setHosts(urls: readonly string[]): void {
    if (urls.length === 0) throw new CvmfsError('E_USAGE', 'no server URL given');
    this.hosts = urls.map((u) => u.replace(/\/+$/, ''));
    this.hostRing = { index: 0, awaySince: undefined };
  }

  /** Index of the current group in proxyGroupList(). */
  currentProxyGroupIndex(): number {
    return this.groupIndex;
  }

  /** New proxy groups (as CVMFS_HTTP_PROXY), starting at group 0 with random members. */
  setProxies(groups: readonly (readonly string[])[]): void {
    this.groups = normalizeGroups(groups);
    this.memberIndex = this.groups.map((g) => Math.floor(Math.random() * g.length));
    this.burned = this.groups.map(() => new Set<number>());
    this.groupIndex = 0;
    this.backupGroupSince = undefined;
    this.memberFailoverSince = undefined;
  }

  timeouts(): { proxyS: number; directS: number } {
    return { proxyS: this.timeoutS, directS: this.timeoutDirectS };
  }

  setTimeouts(proxyS: number, directS: number): void {
    this.timeoutS = proxyS;
    this.timeoutDirectS = directS;
  }

  currentHost(): string {
    return this.hosts[this.hostRing.index];
  }

  currentProxy(): string {
    return this.groups[this.groupIndex][this.memberIndex[this.groupIndex]];
  }

  hostList(): readonly string[] {
    return this.hosts;
  }

  proxyGroupList(): readonly (readonly string[])[] {
    return this.groups;
  }

  /**
   * Downloads `<base URL>/<relativePath>` into `sink`. Resolves with where the body came from once the
   * sink has accepted the last chunk. See the module comment for failover and error rules.
   */
  async fetch(relativePath: string, sink: Sink, ro: DownloadRequestOptions = {}): Promise<DownloadResult> {
    if (this.closed) throw new CvmfsError('E_NETWORK', 'downloader is closed');
    const rel = relativePath.startsWith('/') ? relativePath : '/' + relativePath;
    const ring = ro.baseUrls ? ro.baseUrls.map((u) => u.replace(/\/+$/, '')) : this.hosts;
    if (ring.length === 0) throw new CvmfsError('E_USAGE', `no host to download ${rel} from`);
    let ringState = this.hostRing;
    if (ro.baseUrls) {
      const key = ring.join(';');
      ringState = this.otherRings.get(key) ?? { index: 0, awaySince: undefined };
      this.otherRings.set(key, ringState);
    }
    this.checkResetTimers(ringState);
    const start = ringState.index;

    let attempts = 0;
    let lastError: AttemptFailure | undefined;
    let notFoundEverywhere = true;
    let dirty = false; // bytes of a failed attempt are in the sink
    let noCache = ro.noCache ?? false; // becomes true after bad data
    let badData = false;
    const state = { delivered: 0 };

    const runAttempt = async (base: string, url: string, proxy: string): Promise<DownloadResult | AttemptFailure> => {
      if (dirty) {
        if (!ro.onRestart) {
          throw new CvmfsError('E_NETWORK', `${url}: transfer failed after delivering bytes, and the sink cannot restart`, {
            cause: lastError,
          });
        }
        await ro.onRestart();
        dirty = false;
      }
      attempts++;
      state.delivered = 0;
      const started = performance.now();
      let seconds = 0;
      const report = (outcome: AttemptOutcome, detail?: string) =>
        this.o.observer?.attempt({ host: base, proxy, path: rel, outcome, bytes: state.delivered, seconds, detail });
      let bytes: number;
      try {
        bytes = await this.attempt(url, proxy, sink, { ...ro, noCache }, state);
      } catch (e) {
        seconds = (performance.now() - started) / 1000;
        if (state.delivered > 0) dirty = true;
        if (e instanceof SinkFailure || ro.signal?.aborted) {
          report('aborted', describeError(e instanceof SinkFailure ? e.error : ro.signal?.reason));
          if (e instanceof SinkFailure) throw e.error;
          throw ro.signal?.reason;
        }
        const failure = e instanceof AttemptFailure ? e : new AttemptFailure('transfer', describeError(e), undefined, { cause: e });
        report(outcomeOf(failure), failure.message);
        return failure;
      } finally {
        seconds = (performance.now() - started) / 1000;
        this.counters.seconds += seconds;
      }
      // An error thrown by verify, like one of the sink, is the caller's and ends the download.
      if (ro.verify && !(await ro.verify())) {
        dirty = true;
        badData = true;
        report('bad_data', 'the body failed verification');
        return new AttemptFailure('badData', `${url}: bad data (the body failed verification)`);
      }
      report('ok');
      return { host: '', proxy, bytes };
    };

    try {
      for (let h = 0; h < ring.length; h++) {
        const hostIdx = (start + h) % ring.length;
        const base = ring[hostIdx];
        const url = escapeUrl(base + rel);
        let hostFailed = false;
        const proxies = this.proxyOrder();
        for (let p = 0; p < proxies.length && !hostFailed; p++) {
          const { group, member, proxy } = proxies[p];
          let outcome: DownloadResult | AttemptFailure | undefined;
          for (let retry = 0; ; retry++) {
            outcome = await runAttempt(base, url, proxy);
            if (!(outcome instanceof AttemptFailure)) break;
            lastError = outcome;
            if (outcome.status !== 404) notFoundEverywhere = false;
            if (outcome.kind === 'badData' && !noCache) {
              noCache = true; // a cache on the way may hold a damaged copy: ask for a fresh one (§5.12)
              continue;
            }
            if (outcome.kind !== 'transfer' || noCache || retry >= this.o.maxRetries) break;
            this.counters.retries++;
            const ceiling = Math.min(this.o.backoffInitS * 2 ** retry, this.o.backoffMaxS) * 1000;
            await sleep(Math.random() * ceiling, undefined, { signal: ro.signal }).catch(() => {
              throw ro.signal?.reason ?? new Error('aborted');
            });
          }
          if (!(outcome instanceof AttemptFailure)) {
            this.counters.downloads++;
            return { ...outcome, host: base };
          }
          // After the retries: the path failed. A transfer error counts against the proxy, or against the
          // host when there is no proxy; bad data even without caches against the host (§5.12).
          const kind =
            outcome.kind === 'transfer' ? (proxy === DIRECT ? 'host' : 'proxy') : outcome.kind === 'badData' ? 'host' : outcome.kind;
          if (kind === 'host') {
            hostFailed = true;
          } else {
            this.proxyFailed(group, member, proxy);
            if (p + 1 < proxies.length) {
              this.counters.proxyFailovers++;
              this.o.observer?.failover('proxy', proxy, proxies[p + 1].proxy, outcome.message);
            }
          }
        }
        // Host error, or every proxy failed for this host ("trying host fail-over").
        if (!hostFailed) this.resetProxies();
        if (hostIdx === ringState.index) {
          ringState.index = (hostIdx + 1) % ring.length;
          ringState.awaySince = ringState.index === 0 ? undefined : (ringState.awaySince ?? performance.now());
        }
        if (h + 1 < ring.length) {
          this.counters.hostFailovers++;
          this.o.observer?.failover('host', base, ring[(start + h + 1) % ring.length], lastError?.message ?? '');
        }
      }
    } catch (e) {
      this.counters.failures++;
      throw e;
    }
    this.counters.failures++;
    const last = lastError ?? new AttemptFailure('host', 'no attempt made');
    throw new DownloadError(
      escapeUrl(ring[start] + rel),
      attempts,
      last.message,
      notFoundEverywhere && attempts > 0,
      { cause: last.cause ?? last },
      badData,
    );
  }

  /** Closes every keep-alive pool (in-flight requests finish first). */
  async close(): Promise<void> {
    this.closed = true;
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.close().catch(() => undefined)));
  }

  /** Every proxy once, starting with the current member of the current group, groups in ring order. */
  private proxyOrder(): { group: number; member: number; proxy: string }[] {
    const order: { group: number; member: number; proxy: string }[] = [];
    for (let i = 0; i < this.groups.length; i++) {
      const group = (this.groupIndex + i) % this.groups.length;
      const members = this.groups[group];
      for (let j = 0; j < members.length; j++) {
        const member = (this.memberIndex[group] + j) % members.length;
        order.push({ group, member, proxy: members[member] });
      }
    }
    return order;
  }

  /** Burns a failed proxy; if it was the current one, switch to another member or the next group. */
  private proxyFailed(group: number, member: number, proxy: string): void {
    // `proxy` tells whether the groups are still those the request started with (not `proxy set` since).
    if (group !== this.groupIndex || member !== this.memberIndex[group] || this.groups[group]?.[member] !== proxy) return;
    const burned = this.burned[group];
    burned.add(member);
    const left = this.groups[group].map((_, i) => i).filter((i) => !burned.has(i));
    if (left.length > 0) {
      this.memberIndex[group] = left[Math.floor(Math.random() * left.length)];
      this.memberFailoverSince ??= performance.now();
    } else {
      burned.clear();
      this.groupIndex = (group + 1) % this.groups.length;
      this.backupGroupSince = this.groupIndex === 0 ? undefined : (this.backupGroupSince ?? performance.now());
    }
  }

  private resetProxies(): void {
    this.groupIndex = 0;
    this.backupGroupSince = undefined;
    for (const b of this.burned) b.clear();
  }

  /** §5.12 reset timers, at the start of a request: back to proxy group 0, fresh members, host 0. */
  private checkResetTimers(ring: RingState): void {
    const now = performance.now();
    if (expired(this.backupGroupSince, this.o.proxyResetAfterS, now)) {
      this.resetProxies();
    }
    if (expired(this.memberFailoverSince, this.o.proxyResetAfterS, now)) {
      this.memberFailoverSince = undefined;
      for (const b of this.burned) b.clear();
      this.memberIndex.forEach((_, g) => (this.memberIndex[g] = Math.floor(Math.random() * this.groups[g].length)));
    }
    if (expired(ring.awaySince, this.o.hostResetAfterS, now)) {
      ring.index = 0;
      ring.awaySince = undefined;
    }
  }

  private pool(origin: string, timeoutMs: number): Pool {
    const key = `${origin} ${timeoutMs}`;
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(origin, { connections: this.o.connections ?? DEFAULT_CONNECTIONS, connectTimeout: timeoutMs, pipelining: 1 });
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** One request on one path, following redirects if allowed. Resolves with the bytes delivered. */
  private async attempt(
    startUrl: string,
    proxy: string,
    sink: Sink,
    ro: DownloadRequestOptions,
    state: { delivered: number },
  ): Promise<number> {
    const direct = proxy === DIRECT;
    const timeoutMs = Math.max(1, Math.round((direct ? this.timeoutDirectS : this.timeoutS) * 1000));
    let url = startUrl;
    for (let hop = 0; ; hop++) {
      const target = splitUrl(url);
      const headers: Record<string, string> = {
        'user-agent': this.userAgent,
        pragma: ro.noCache ? 'no-cache' : '',
      };
      if (ro.noCache) headers['cache-control'] = 'no-cache';
      if (ro.range) headers.range = `bytes=${ro.range.offset}-${ro.range.offset + ro.range.size - 1}`;
      let pool: Pool;
      let path: string;
      if (direct) {
        pool = this.pool(target.origin, timeoutMs);
        path = target.path;
      } else {
        pool = this.pool(splitUrl(proxy).origin, timeoutMs);
        path = url; // absolute-form request target, so the proxy can cache it
        headers.host = target.authority;
      }

      // undici's own timeouts of a second or more tick coarsely (up to a second late): connecting and
      // waiting for the response headers together get an exact deadline of their own.
      const deadline = new AbortController();
      const timer = setTimeout(
        () => deadline.abort(new AttemptFailure('transfer', `${url}: timeout (no response within ${timeoutMs / 1000} s)`)),
        timeoutMs,
      );
      let res;
      try {
        res = await pool.request({
          method: 'GET',
          path,
          headers,
          signal: ro.signal ? AbortSignal.any([ro.signal, deadline.signal]) : deadline.signal,
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
      } catch (e) {
        if (deadline.signal.aborted && !ro.signal?.aborted) throw deadline.signal.reason as AttemptFailure;
        throw this.classifyError(e, direct, url);
      } finally {
        clearTimeout(timer);
      }

      const status = res.statusCode;
      if (REDIRECTS.has(status)) {
        await res.body.dump().catch(() => undefined);
        const location = headerText(res.headers.location);
        if (!this.o.followRedirects) throw new AttemptFailure('host', `${url}: HTTP ${status} redirect (not followed)`, status);
        if (!location || hop >= MAX_REDIRECTS) throw new AttemptFailure('host', `${url}: too many or empty redirects`, status);
        url = new URL(location, url).href;
        continue;
      }
      if (status !== 200 && status !== 206) {
        await res.body.dump().catch(() => undefined);
        throw this.classifyStatus(status, res.headers, direct, url);
      }
      let skip = 0;
      let want = Infinity;
      if (ro.range) {
        want = ro.range.size;
        if (status === 200) {
          skip = ro.range.offset; // the server ignored Range: cut the range out ourselves
        } else if (!headerText(res.headers['content-range']).startsWith(`bytes ${ro.range.offset}-`)) {
          await res.body.dump().catch(() => undefined);
          throw new AttemptFailure('host', `${url}: Content-Range does not match the requested range`, status);
        }
      }
      return this.stream(res.body, sink, { url, direct, timeoutMs, skip, want, state });
    }
  }

  /** Streams a body into the sink with the low-speed watchdog; returns the bytes delivered. */
  private async stream(
    body: AsyncIterable<Buffer> & { destroy(e?: Error): unknown },
    sink: Sink,
    s: { url: string; direct: boolean; timeoutMs: number; skip: number; want: number; state: { delivered: number } },
  ): Promise<number> {
    let windowBytes = 0;
    let tooSlow: AttemptFailure | undefined;
    const minBytes = (this.o.lowSpeedLimit * s.timeoutMs) / 1000;
    const watchdog =
      this.o.lowSpeedLimit > 0
        ? setInterval(() => {
            if (windowBytes < minBytes) {
              tooSlow = new AttemptFailure(
                'transfer',
                `${s.url}: slower than ${this.o.lowSpeedLimit} B/s for ${s.timeoutMs / 1000} s`,
              );
              body.destroy(tooSlow);
            }
            windowBytes = 0;
          }, s.timeoutMs)
        : undefined;
    let skip = s.skip;
    let want = s.want;
    try {
      for await (const raw of body) {
        let chunk: Buffer = raw;
        windowBytes += chunk.length;
        this.counters.bytes += chunk.length;
        if (skip > 0) {
          const cut = Math.min(skip, chunk.length);
          skip -= cut;
          chunk = chunk.subarray(cut);
        }
        if (chunk.length > want) chunk = chunk.subarray(0, want);
        if (chunk.length === 0) {
          if (want === 0) break;
          continue;
        }
        want -= chunk.length;
        s.state.delivered += chunk.length;
        try {
          await sink(chunk);
        } catch (e) {
          throw new SinkFailure(e);
        }
      }
    } catch (e) {
      if (e instanceof SinkFailure) throw e;
      if (tooSlow) throw tooSlow;
      throw this.classifyError(e, s.direct, s.url);
    } finally {
      if (watchdog) clearInterval(watchdog);
    }
    if (tooSlow) throw tooSlow;
    if (s.want !== Infinity && want > 0) {
      throw new AttemptFailure('transfer', `${s.url}: short range (${s.want - want} of ${s.want} bytes)`);
    }
    return s.state.delivered;
  }

  private classifyError(e: unknown, direct: boolean, url: string): AttemptFailure {
    if (e instanceof AttemptFailure) return e;
    const code = errorCode(e) ?? errorCode((e as { cause?: unknown } | null)?.cause);
    const text = `${url}: ${describeError(e)}${code ? ` (${code})` : ''}`;
    // A name that does not resolve is a host error when DIRECT, a proxy error otherwise (the proxy's name).
    if (code && DNS_CODES.has(code)) return new AttemptFailure(direct ? 'host' : 'proxy', text, undefined, { cause: e });
    return new AttemptFailure('transfer', text, undefined, { cause: e });
  }

  private classifyStatus(status: number, headers: Record<string, string | string[] | undefined>, direct: boolean, url: string): AttemptFailure {
    const text = `${url}: HTTP ${status}`;
    if (status === 429) return new AttemptFailure('transfer', text, status);
    if (direct) return new AttemptFailure('host', text, status);
    const proxyStatus = headerText(headers['proxy-status']);
    if (headers['x-squid-error'] !== undefined || /(^|;)\s*error=/.test(proxyStatus)) {
      return new AttemptFailure('proxy', `${text} (proxy error)`, status);
    }
    if (status >= 500 || status === 400 || status === 404) return new AttemptFailure('host', text, status);
    return new AttemptFailure('proxy', text, status);
  }
}
