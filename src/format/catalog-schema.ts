/**
 * File catalog schema 2.5 revision 7 (§3): the interchange format between publisher and client.
 * The DDL matches what the real server writes, so our catalogs look like theirs to any reader.
 */
export const SCHEMA_VERSION = '2.5';
export const SCHEMA_REVISION = 7;
export const DEFAULT_TTL_SECONDS = 240;

export const CATALOG_DDL: readonly string[] = [
  'CREATE TABLE properties (key TEXT, value TEXT, CONSTRAINT pk_properties PRIMARY KEY (key))',
  'CREATE TABLE catalog (md5path_1 INTEGER, md5path_2 INTEGER, parent_1 INTEGER, parent_2 INTEGER,' +
    ' hardlinks INTEGER, hash BLOB, size INTEGER, mode INTEGER, mtime INTEGER, mtimens INTEGER,' +
    ' flags INTEGER, name TEXT, symlink TEXT, uid INTEGER, gid INTEGER, xattr BLOB,' +
    ' CONSTRAINT pk_catalog PRIMARY KEY (md5path_1, md5path_2))',
  'CREATE INDEX idx_catalog_parent ON catalog (parent_1, parent_2)',
  'CREATE TABLE chunks (md5path_1 INTEGER, md5path_2 INTEGER, offset INTEGER, size INTEGER, hash BLOB,' +
    ' CONSTRAINT pk_chunks PRIMARY KEY (md5path_1, md5path_2, offset, size),' +
    ' FOREIGN KEY (md5path_1, md5path_2) REFERENCES catalog(md5path_1, md5path_2))',
  'CREATE TABLE nested_catalogs (path TEXT, sha1 TEXT, size INTEGER, CONSTRAINT pk_nested_catalogs PRIMARY KEY (path))',
  'CREATE TABLE bind_mountpoints (path TEXT, sha1 TEXT, size INTEGER, CONSTRAINT pk_bind_mountpoints PRIMARY KEY (path))',
  'CREATE TABLE statistics (counter TEXT, value INTEGER, CONSTRAINT pk_statistics PRIMARY KEY (counter))',
];

/** Statistics counters (§3.11); each exists as `self_<name>` and `subtree_<name>`. */
export const COUNTER_NAMES = [
  'regular',
  'symlink',
  'special',
  'dir',
  'nested',
  'chunked',
  'chunks',
  'file_size',
  'chunked_size',
  'xattr',
  'external',
  'external_file_size',
] as const;
export type CounterName = (typeof COUNTER_NAMES)[number];
export type Counters = Record<CounterName, number>;

export function zeroCounters(): Counters {
  return Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0])) as Counters;
}

export function addCounters(into: Counters, add: Counters): void {
  for (const n of COUNTER_NAMES) into[n] += add[n];
}

/** `hardlinks` column: (group << 32) | link count (§3.12). */
export function packHardlinks(group: number, linkCount: number): bigint {
  return (BigInt(group) << 32n) | BigInt(linkCount);
}

export function unpackHardlinks(value: bigint): { group: number; linkCount: number } {
  return { group: Number(value >> 32n), linkCount: Number(value & 0xffffffffn) };
}
