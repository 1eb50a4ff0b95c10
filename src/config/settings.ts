/**
 * The typed client settings a mount runs with, parsed from CVMFS_* parameters (§5.9–5.14).
 * Produced by config/parameters.ts; consumed by the mount's composition root.
 */
import type { ListenAddress } from '../metrics/listen-address';
import type { SyslogLevel } from '../client/log';

/** One proxy group of CVMFS_HTTP_PROXY: its members are load-balanced; "DIRECT" means no proxy. */
export type ProxyGroup = readonly string[];

export interface ClientSettings {
  readonly fqrn: string;
  /** CVMFS_SERVER_URL split on ';', @fqrn@/@org@ substituted, no trailing slash. */
  readonly serverUrls: readonly string[];
  /** CVMFS_HTTP_PROXY (+ CVMFS_FALLBACK_PROXY): groups separated by ';', members by '|'. */
  readonly proxyGroups: readonly ProxyGroup[];
  /** CVMFS_PUBLIC_KEY (':'-separated files) or every *.pub of CVMFS_KEYS_DIR. */
  readonly publicKeyFiles: readonly string[];
  /** CVMFS_CACHE_BASE (default /var/lib/cvmfs). */
  readonly cacheBase: string;
  /** CVMFS_SHARED_CACHE (default yes). */
  readonly sharedCache: boolean;
  /** The cache directory: CVMFS_CACHE_DIR, else <base>/shared or <base>/<fqrn>. */
  readonly cacheDir: string;
  /** CVMFS_QUOTA_LIMIT in MB; <= 0 unmanaged (default 4000). */
  readonly quotaLimitMb: number;
  /** CVMFS_TIMEOUT (with a proxy, default 5) and CVMFS_TIMEOUT_DIRECT (default 10), seconds. */
  readonly timeoutS: number;
  readonly timeoutDirectS: number;
  /** CVMFS_MAX_RETRIES (default 1), CVMFS_BACKOFF_INIT (2) / CVMFS_BACKOFF_MAX (10) seconds. */
  readonly maxRetries: number;
  readonly backoffInitS: number;
  readonly backoffMaxS: number;
  /** CVMFS_LOW_SPEED_LIMIT bytes/s (default 1024). */
  readonly lowSpeedLimit: number;
  /**
   * CVMFS_PROXY_RESET_AFTER (default 300) / CVMFS_HOST_RESET_AFTER (default 1800) seconds: how long after
   * leaving the first proxy group / the first host the downloader goes back to it; 0 = never.
   */
  readonly proxyResetAfterS: number;
  readonly hostResetAfterS: number;
  /** CVMFS_KCACHE_TIMEOUT seconds (default 60): kernel entry/attr timeouts. */
  readonly kcacheTimeoutS: number;
  /** CVMFS_CLAIM_OWNERSHIP (default yes): show the mounting user as owner of everything. */
  readonly claimOwnership: boolean;
  /** CVMFS_UID_MAP / CVMFS_GID_MAP files parsed: catalog id → shown id; '*' key = default. */
  readonly uidMap: ReadonlyMap<number | '*', number> | undefined;
  readonly gidMap: ReadonlyMap<number | '*', number> | undefined;
  /** CVMFS_ROOT_HASH: mount this root catalog, never update. */
  readonly rootHash: string | undefined;
  /** CVMFS_AUTO_UPDATE (default yes). */
  readonly autoUpdate: boolean;
  /** CVMFS_EXTERNAL_URL split on ';' (external files, §7.1). */
  readonly externalUrls: readonly string[];
  /**
   * Proxies for external data (§5.12): CVMFS_EXTERNAL_HTTP_PROXY (default DIRECT) followed by
   * CVMFS_EXTERNAL_FALLBACK_PROXY, independent of CVMFS_HTTP_PROXY.
   */
  readonly externalProxyGroups: readonly ProxyGroup[];
  /** CVMFS_EXTERNAL_TIMEOUT / CVMFS_EXTERNAL_TIMEOUT_DIRECT seconds (default: timeoutS / timeoutDirectS). */
  readonly externalTimeoutS: number;
  readonly externalTimeoutDirectS: number;
  /** CVMFS_MAGIC_XATTRS_VISIBILITY (rootonly by default; CVMFS_HIDE_MAGIC_XATTRS=yes → never). */
  readonly magicXattrsVisibility: 'always' | 'rootonly' | 'never';
  /** CVMFS_CHECK_PERMISSIONS (default yes): mount with default_permissions. */
  readonly checkPermissions: boolean;
  /** CVMFS_MAX_TTL in minutes (0 = none). */
  readonly maxTtlMinutes: number;
  /** CVMFS_FOLLOW_REDIRECTS (default no). */
  readonly followRedirects: boolean;
  /**
   * CVMFS_SYSLOG_LEVEL: the syslog priority of ordinary log messages, 1 debug, 2 info, 3 notice
   * (default; other values too, as cvmfs). Warnings and errors keep theirs (client/log.ts).
   */
  readonly syslogLevel: SyslogLevel;
  /** CVMFS_DEBUGLOG: absolute path of a file that receives every log event, debug ones included. */
  readonly debugLog: string | undefined;
  /** CVMFS_TS_METRICS_LISTEN: where the daemon serves Prometheus metrics (/metrics); unset = none. */
  readonly metricsListen: ListenAddress | undefined;
  /**
   * CVMFS_TS_PARALLEL_DOWNLOADS (default 16, at least 1): downloads running at once, over as many
   * kept-alive connections per server or proxy. 1 fetches one object at a time.
   */
  readonly parallelDownloads: number;
  /** CVMFS_TS_READAHEAD_CHUNKS (default 2, 0 = off): chunks fetched ahead of a sequential reader. */
  readonly readaheadChunks: number;
  /** CVMFS_TS_PREFETCH (default yes): `prefetch profile` (access profiles of thin images) fetches in the background. */
  readonly prefetch: boolean;
  /** CVMFS_TS_CATALOG_PREFETCH (default yes): `prefetch catalogs` attaches the named nested catalogs in parallel. */
  readonly catalogPrefetch: boolean;
  /** Every parameter after parsing: exported to the process environment for variant symlinks (§5.5). */
  readonly parameters: ReadonlyMap<string, string>;
}
