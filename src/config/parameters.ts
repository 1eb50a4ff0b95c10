/**
 * From loaded CVMFS_* parameters to typed ClientSettings (§5.9–5.14), with the defaults of the
 * real client's mount/default.conf for whatever is unset. An empty value counts as unset.
 * Wrong values are CvmfsError E_USAGE (one sentence naming the parameter, its value and where it
 * was set); missing or unusable keys are E_KEY; unreadable id map files are E_IO.
 * Unknown parameters are ignored (they are still passed on in `parameters`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CvmfsError, describeError } from '../errors';
import { ContentHash } from '../format/hash';
import { COMMAND_LINE_SOURCE, DEFAULT_CONFIG_ROOT, type ConfigValue, type LoadedConfig } from './bash-config';
import type { ClientSettings, ProxyGroup } from './settings';
import { LISTEN_ADDRESS_FORMS, parseListenAddress, type ListenAddress } from '../metrics/listen-address';
import type { SyslogLevel } from '../client/log';

/** mount/default.conf values (and built-in defaults) used when a parameter is unset. */
export const DEFAULTS = {
  CVMFS_CACHE_BASE: '/var/lib/cvmfs',
  CVMFS_QUOTA_LIMIT: 4000,
  CVMFS_TIMEOUT: 5,
  CVMFS_TIMEOUT_DIRECT: 10,
  CVMFS_SHARED_CACHE: true,
  CVMFS_CHECK_PERMISSIONS: true,
  CVMFS_CLAIM_OWNERSHIP: true,
  CVMFS_KEYS_DIR: '/etc/cvmfs/keys',
  CVMFS_MAX_RETRIES: 1,
  CVMFS_BACKOFF_INIT: 2,
  CVMFS_BACKOFF_MAX: 10,
  CVMFS_LOW_SPEED_LIMIT: 1024,
  CVMFS_PROXY_RESET_AFTER: 300,
  CVMFS_HOST_RESET_AFTER: 1800,
  CVMFS_KCACHE_TIMEOUT: 60,
  CVMFS_AUTO_UPDATE: true,
  CVMFS_MAGIC_XATTRS_VISIBILITY: 'rootonly',
  CVMFS_FOLLOW_REDIRECTS: false,
  CVMFS_MAX_TTL: 0,
  CVMFS_TS_PARALLEL_DOWNLOADS: 16,
  CVMFS_TS_READAHEAD_CHUNKS: 2,
  CVMFS_TS_PREFETCH: true,
  CVMFS_TS_CATALOG_PREFETCH: true,
} as const;

/** The parameters parseSettings reads (showconfig lists them even when unset). */
export const KNOWN_PARAMETERS: readonly string[] = [
  'CVMFS_AUTO_UPDATE',
  'CVMFS_BACKOFF_INIT',
  'CVMFS_BACKOFF_MAX',
  'CVMFS_CACHE_BASE',
  'CVMFS_CACHE_DIR',
  'CVMFS_CHECK_PERMISSIONS',
  'CVMFS_CLAIM_OWNERSHIP',
  'CVMFS_DEBUGLOG',
  'CVMFS_EXTERNAL_FALLBACK_PROXY',
  'CVMFS_EXTERNAL_HTTP_PROXY',
  'CVMFS_EXTERNAL_TIMEOUT',
  'CVMFS_EXTERNAL_TIMEOUT_DIRECT',
  'CVMFS_EXTERNAL_URL',
  'CVMFS_FALLBACK_PROXY',
  'CVMFS_FOLLOW_REDIRECTS',
  'CVMFS_GID_MAP',
  'CVMFS_HIDE_MAGIC_XATTRS',
  'CVMFS_HOST_RESET_AFTER',
  'CVMFS_HTTP_PROXY',
  'CVMFS_KCACHE_TIMEOUT',
  'CVMFS_KEYS_DIR',
  'CVMFS_LOW_SPEED_LIMIT',
  'CVMFS_MAGIC_XATTRS_VISIBILITY',
  'CVMFS_MAX_RETRIES',
  'CVMFS_MAX_TTL',
  'CVMFS_PROXY_RESET_AFTER',
  'CVMFS_PUBLIC_KEY',
  'CVMFS_QUOTA_LIMIT',
  'CVMFS_ROOT_HASH',
  'CVMFS_SERVER_URL',
  'CVMFS_SHARED_CACHE',
  'CVMFS_SYSLOG_LEVEL',
  'CVMFS_TIMEOUT',
  'CVMFS_TIMEOUT_DIRECT',
  'CVMFS_TS_CATALOG_PREFETCH',
  'CVMFS_TS_METRICS_LISTEN',
  'CVMFS_TS_PARALLEL_DOWNLOADS',
  'CVMFS_TS_PREFETCH',
  'CVMFS_TS_READAHEAD_CHUNKS',
  'CVMFS_UID_MAP',
];

/** "in <file>" or "on the command line". */
export function describeSource(source: string): string {
  return source === COMMAND_LINE_SOURCE ? 'on the command line' : `in ${source}`;
}

function bad(name: string, v: ConfigValue, expected: string): CvmfsError {
  return new CvmfsError('E_USAGE', `${name}='${v.value}' ${describeSource(v.source)} is invalid: ${expected}`);
}

/** The value of `name`, or undefined when unset or empty (white space only). */
function lookup(config: LoadedConfig, name: string): ConfigValue | undefined {
  const v = config.values.get(name);
  return v === undefined || v.value.trim() === '' ? undefined : v;
}

const TRUE = new Set(['yes', 'on', '1', 'true']);
const FALSE = new Set(['no', 'off', '0', 'false']);

/** yes/on/1/true or no/off/0/false, any case; undefined when unset. */
export function parseBoolean(config: LoadedConfig, name: string): boolean | undefined {
  const v = lookup(config, name);
  if (v === undefined) return undefined;
  const s = v.value.trim().toLowerCase();
  if (TRUE.has(s)) return true;
  if (FALSE.has(s)) return false;
  throw bad(name, v, 'expected yes/on/1/true or no/off/0/false');
}

function bool(config: LoadedConfig, name: keyof typeof DEFAULTS): boolean {
  return parseBoolean(config, name) ?? (DEFAULTS[name] as boolean);
}

/** A decimal integer (negative only when `signed`); undefined when unset. */
export function parseInteger(config: LoadedConfig, name: string, signed = false): number | undefined {
  const v = lookup(config, name);
  if (v === undefined) return undefined;
  const s = v.value.trim();
  const n = Number(s);
  if (!(signed ? /^-?\d+$/ : /^\d+$/).test(s) || !Number.isSafeInteger(n)) {
    throw bad(name, v, signed ? 'expected an integer' : 'expected a non-negative integer');
  }
  return n;
}

function int(config: LoadedConfig, name: keyof typeof DEFAULTS, signed = false): number {
  return parseInteger(config, name, signed) ?? (DEFAULTS[name] as number);
}

function absolutePath(config: LoadedConfig, name: string): string | undefined {
  const v = lookup(config, name);
  if (v === undefined) return undefined;
  const p = v.value.trim();
  if (!path.isAbsolute(p)) throw bad(name, v, 'expected an absolute path');
  const normal = path.normalize(p);
  return normal.length > 1 ? normal.replace(/\/+$/, '') : normal;
}

/** `;`-separated URLs, trimmed, empty entries dropped, no trailing slash. */
function urlList(config: LoadedConfig, name: string): string[] {
  const v = lookup(config, name);
  if (v === undefined) return [];
  const urls = v.value
    .split(';')
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter((u) => u !== '');
  for (const u of urls) {
    if (!URL.canParse(u)) throw bad(name, v, `'${u}' is not a URL`);
  }
  return urls;
}

/** Groups by ';', members by '|'; empty members and groups dropped; `http://` added when no scheme. */
export function parseProxyList(text: string, describe?: () => CvmfsError): ProxyGroup[] {
  const groups: string[][] = [];
  for (const g of text.split(';')) {
    const members: string[] = [];
    for (const raw of g.split('|')) {
      const m = raw.trim();
      if (m === '') continue;
      if (m.toLowerCase() === 'auto') {
        throw describe?.() ?? new CvmfsError('E_USAGE', `proxy 'auto' (WPAD/PAC discovery) is not supported`);
      }
      members.push(m === 'DIRECT' || /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(m) ? m : `http://${m}`);
    }
    if (members.length > 0) groups.push(members);
  }
  return groups;
}

function withoutDirect(groups: ProxyGroup[]): ProxyGroup[] {
  return groups.map((g) => g.filter((m) => m !== 'DIRECT')).filter((g) => g.length > 0);
}

/**
 * CVMFS_HTTP_PROXY (required) followed by CVMFS_FALLBACK_PROXY; when fallback proxies remain after
 * removing DIRECT from them, DIRECT is removed from the regular groups as well (§5.12). The external
 * data download manager has its own pair, CVMFS_EXTERNAL_HTTP_PROXY (default DIRECT) and
 * CVMFS_EXTERNAL_FALLBACK_PROXY.
 */
function proxyGroups(config: LoadedConfig, external = false): ProxyGroup[] {
  const name = external ? 'CVMFS_EXTERNAL_HTTP_PROXY' : 'CVMFS_HTTP_PROXY';
  const fallbackName = external ? 'CVMFS_EXTERNAL_FALLBACK_PROXY' : 'CVMFS_FALLBACK_PROXY';
  const missing = (): CvmfsError =>
    new CvmfsError('E_USAGE', `${name} is not set; use DIRECT for no proxy`);
  const p = lookup(config, name);
  if (p === undefined && !external) throw missing();
  const noAuto = (n: string, v: ConfigValue) => (): CvmfsError =>
    bad(n, v, "automatic proxy discovery ('auto', WPAD/PAC) is not supported; list the proxies or use DIRECT");
  let regular = p === undefined ? [['DIRECT']] : parseProxyList(p.value, noAuto(name, p));
  const f = lookup(config, fallbackName);
  const fallback = f === undefined ? [] : withoutDirect(parseProxyList(f.value, noAuto(fallbackName, f)));
  if (fallback.length > 0) regular = withoutDirect(regular);
  const all = [...regular, ...fallback];
  if (all.length === 0) throw missing();
  return all;
}

function isReadableFile(file: string): boolean {
  try {
    if (!fs.statSync(file).isFile()) return false;
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** CVMFS_PUBLIC_KEY (':'-separated files) wins over CVMFS_KEYS_DIR (every *.pub there, sorted). */
function publicKeyFiles(config: LoadedConfig): string[] {
  const pk = lookup(config, 'CVMFS_PUBLIC_KEY');
  if (pk !== undefined) {
    const files = pk.value
      .split(':')
      .map((s) => s.trim())
      .filter((s) => s !== '');
    for (const file of files) {
      if (!isReadableFile(file)) {
        throw new CvmfsError(
          'E_KEY',
          `public key ${file} (CVMFS_PUBLIC_KEY ${describeSource(pk.source)}) is not a readable file`,
        );
      }
    }
    if (files.length > 0) return files;
  }
  const kd = lookup(config, 'CVMFS_KEYS_DIR');
  const dir = kd?.value.trim() ?? defaultKeysDir(config);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (e) {
    throw new CvmfsError(
      'E_KEY',
      `no public key: CVMFS_PUBLIC_KEY is not set and the keys directory ${dir} cannot be read (${describeError(e)})`,
      { cause: e },
    );
  }
  const files = names
    .filter((n) => n.endsWith('.pub'))
    .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    .map((n) => path.join(dir, n))
    .filter(isReadableFile);
  if (files.length === 0) {
    throw new CvmfsError('E_KEY', `no public key: CVMFS_PUBLIC_KEY is not set and ${dir} holds no readable *.pub file`);
  }
  return files;
}

/**
 * /etc/cvmfs/keys for the standard configuration root; for another root, <root>/keys (so that a
 * self-contained configuration tree finds its own keys).
 */
function defaultKeysDir(config: LoadedConfig): string {
  return config.root === DEFAULT_CONFIG_ROOT ? DEFAULTS.CVMFS_KEYS_DIR : path.join(config.root, 'keys');
}

const MAX_ID = 0xffffffff;

/** Parses an id map (`<from> <to>` lines, `* <to>` default, `#` comment lines). `file` names it in errors. */
export function parseIdMap(text: string, file: string): Map<number | '*', number> {
  const map = new Map<number | '*', number>();
  const lines = text.split(/\r?\n/);
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const parts = line.split(/\s+/);
    const isId = (s: string): boolean => /^\d+$/.test(s) && Number(s) <= MAX_ID;
    if (parts.length !== 2 || !isId(parts[1]) || (parts[0] !== '*' && !isId(parts[0]))) {
      throw new CvmfsError(
        'E_USAGE',
        `line ${i + 1} of id map ${file} is not '<id> <id>' or '* <id>': ${line}`,
      );
    }
    map.set(parts[0] === '*' ? '*' : Number(parts[0]), Number(parts[1]));
  }
  return map;
}

function idMap(config: LoadedConfig, name: string): Map<number | '*', number> | undefined {
  const v = lookup(config, name);
  if (v === undefined) return undefined;
  const file = v.value.trim();
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CvmfsError(
      'E_IO',
      `cannot read ${name} file ${file} (set ${describeSource(v.source)}): ${describeError(e)}`,
      { cause: e },
    );
  }
  return parseIdMap(text, file);
}

/**
 * CVMFS_MAGIC_XATTRS_VISIBILITY wins; else CVMFS_HIDE_MAGIC_XATTRS=yes → never and =no → always
 * (as `MountPoint` in the real client does); else rootonly.
 */
function magicXattrsVisibility(config: LoadedConfig): 'always' | 'rootonly' | 'never' {
  const v = lookup(config, 'CVMFS_MAGIC_XATTRS_VISIBILITY');
  if (v !== undefined) {
    const s = v.value.trim().toLowerCase();
    if (s === 'always' || s === 'rootonly' || s === 'never') return s;
    throw bad('CVMFS_MAGIC_XATTRS_VISIBILITY', v, 'expected always, rootonly or never');
  }
  const hide = parseBoolean(config, 'CVMFS_HIDE_MAGIC_XATTRS');
  if (hide === undefined) return DEFAULTS.CVMFS_MAGIC_XATTRS_VISIBILITY;
  return hide ? 'never' : 'always';
}

function rootHash(config: LoadedConfig): string | undefined {
  const v = lookup(config, 'CVMFS_ROOT_HASH');
  if (v === undefined) return undefined;
  try {
    return ContentHash.parse(v.value.trim()).toString();
  } catch {
    throw bad('CVMFS_ROOT_HASH', v, 'expected a content hash (hex digest with optional -rmd160/-shake128)');
  }
}

/** CVMFS_SYSLOG_LEVEL: 1 and 2 as cvmfs; any other integer means its default, 3 (SetLogSyslogLevel). */
function syslogLevel(config: LoadedConfig): SyslogLevel {
  const n = parseInteger(config, 'CVMFS_SYSLOG_LEVEL', true);
  return n === 1 || n === 2 ? n : 3;
}

function metricsListen(config: LoadedConfig): ListenAddress | undefined {
  const v = lookup(config, 'CVMFS_TS_METRICS_LISTEN');
  if (v === undefined) return undefined;
  const a = parseListenAddress(v.value);
  if (!a) throw bad('CVMFS_TS_METRICS_LISTEN', v, `expected ${LISTEN_ADDRESS_FORMS}`);
  return a;
}

export function parseSettings(config: LoadedConfig): ClientSettings {
  const fqrn = config.fqrn;
  const serverUrls = urlList(config, 'CVMFS_SERVER_URL');
  if (serverUrls.length === 0) {
    throw new CvmfsError('E_USAGE', `CVMFS_SERVER_URL is not set for ${fqrn}; it lists the repository's servers (';'-separated)`);
  }
  const sharedCache = bool(config, 'CVMFS_SHARED_CACHE');
  const cacheBase = absolutePath(config, 'CVMFS_CACHE_BASE') ?? DEFAULTS.CVMFS_CACHE_BASE;
  const cacheDir =
    absolutePath(config, 'CVMFS_CACHE_DIR') ?? path.join(cacheBase, sharedCache ? 'shared' : fqrn);
  const parameters = new Map<string, string>();
  for (const [name, v] of config.values) parameters.set(name, v.value);
  const timeoutS = int(config, 'CVMFS_TIMEOUT');
  const timeoutDirectS = int(config, 'CVMFS_TIMEOUT_DIRECT');

  return {
    fqrn,
    serverUrls,
    proxyGroups: proxyGroups(config),
    publicKeyFiles: publicKeyFiles(config),
    cacheBase,
    sharedCache,
    cacheDir,
    quotaLimitMb: int(config, 'CVMFS_QUOTA_LIMIT', true),
    timeoutS,
    timeoutDirectS,
    maxRetries: int(config, 'CVMFS_MAX_RETRIES'),
    backoffInitS: int(config, 'CVMFS_BACKOFF_INIT'),
    backoffMaxS: int(config, 'CVMFS_BACKOFF_MAX'),
    lowSpeedLimit: int(config, 'CVMFS_LOW_SPEED_LIMIT'),
    proxyResetAfterS: int(config, 'CVMFS_PROXY_RESET_AFTER'),
    hostResetAfterS: int(config, 'CVMFS_HOST_RESET_AFTER'),
    // The real client clamps a negative kernel cache timeout to 0.
    kcacheTimeoutS: Math.max(0, int(config, 'CVMFS_KCACHE_TIMEOUT', true)),
    claimOwnership: bool(config, 'CVMFS_CLAIM_OWNERSHIP'),
    uidMap: idMap(config, 'CVMFS_UID_MAP'),
    gidMap: idMap(config, 'CVMFS_GID_MAP'),
    rootHash: rootHash(config),
    autoUpdate: bool(config, 'CVMFS_AUTO_UPDATE'),
    externalUrls: urlList(config, 'CVMFS_EXTERNAL_URL'),
    externalProxyGroups: proxyGroups(config, true),
    externalTimeoutS: parseInteger(config, 'CVMFS_EXTERNAL_TIMEOUT') ?? timeoutS,
    externalTimeoutDirectS: parseInteger(config, 'CVMFS_EXTERNAL_TIMEOUT_DIRECT') ?? timeoutDirectS,
    magicXattrsVisibility: magicXattrsVisibility(config),
    checkPermissions: bool(config, 'CVMFS_CHECK_PERMISSIONS'),
    maxTtlMinutes: int(config, 'CVMFS_MAX_TTL'),
    followRedirects: bool(config, 'CVMFS_FOLLOW_REDIRECTS'),
    syslogLevel: syslogLevel(config),
    debugLog: absolutePath(config, 'CVMFS_DEBUGLOG'),
    metricsListen: metricsListen(config),
    parallelDownloads: Math.max(1, int(config, 'CVMFS_TS_PARALLEL_DOWNLOADS')),
    readaheadChunks: int(config, 'CVMFS_TS_READAHEAD_CHUNKS'),
    prefetch: bool(config, 'CVMFS_TS_PREFETCH'),
    catalogPrefetch: bool(config, 'CVMFS_TS_CATALOG_PREFETCH'),
    parameters,
  };
}
