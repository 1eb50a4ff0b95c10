/**
 * Catalog `flags` column (§3.4). The file type itself comes from `mode`; the flags only say
 * what the mode cannot: catalog transitions, chunking, hash algorithm, compression, visibility.
 */
import { HashAlgorithm } from './hash';
import { FormatError } from '../errors';

export const Flag = {
  Dir: 1,
  DirNestedMountpoint: 2,
  File: 4,
  Link: 8,
  FileSpecial: 16,
  DirNestedRoot: 32,
  FileChunk: 64,
  FileExternal: 128,
  DirBindMountpoint: 0x4000,
  Hidden: 0x8000,
  DirectIo: 0x10000,
} as const;

const ALGORITHM_SHIFT = 8;
const COMPRESSION_SHIFT = 11;

export enum Compression {
  Zlib = 0,
  None = 1,
}

export type EntryKind = 'directory' | 'regular' | 'symlink' | 'special';

export interface FlagFields {
  kind: EntryKind;
  nestedMountpoint?: boolean;
  nestedRoot?: boolean;
  bindMountpoint?: boolean;
  hidden?: boolean;
  chunked?: boolean;
  external?: boolean;
  directIo?: boolean;
  /** Set for entries with a hash or chunks. */
  algorithm?: HashAlgorithm;
  compression?: Compression;
}

/** Composes flags the way the C++ writer does (`CreateDatabaseFlags`). */
export function encodeFlags(f: FlagFields): number {
  let flags = 0;
  if (f.nestedRoot) flags |= Flag.DirNestedRoot;
  if (f.nestedMountpoint) flags |= Flag.DirNestedMountpoint;
  if (f.bindMountpoint) flags |= Flag.DirBindMountpoint;
  switch (f.kind) {
    case 'directory':
      flags |= Flag.Dir;
      break;
    case 'symlink':
      flags |= Flag.File | Flag.Link;
      break;
    case 'special':
      flags |= Flag.File | Flag.FileSpecial;
      break;
    case 'regular':
      flags |= Flag.File | ((f.compression ?? Compression.Zlib) << COMPRESSION_SHIFT);
      if (f.chunked) flags |= Flag.FileChunk;
      if (f.external) flags |= Flag.FileExternal;
      if (f.directIo) flags |= Flag.DirectIo;
      break;
  }
  if (f.algorithm !== undefined) {
    if (f.algorithm === HashAlgorithm.Md5) throw new FormatError('MD5 is not a content hash algorithm');
    flags |= (f.algorithm - 1) << ALGORITHM_SHIFT;
  }
  if (f.hidden) flags |= Flag.Hidden;
  return flags;
}

export interface DecodedFlags {
  nestedMountpoint: boolean;
  nestedRoot: boolean;
  bindMountpoint: boolean;
  hidden: boolean;
  chunked: boolean;
  external: boolean;
  directIo: boolean;
  algorithm: HashAlgorithm;
  compression: Compression;
}

export function decodeFlags(flags: number): DecodedFlags {
  const algorithm = ((flags >> ALGORITHM_SHIFT) & 7) + 1;
  const compression = (flags >> COMPRESSION_SHIFT) & 7;
  if (algorithm > HashAlgorithm.Shake128) throw new FormatError(`flags ${flags}: unknown hash algorithm`);
  if (compression > Compression.None) throw new FormatError(`flags ${flags}: unknown compression`);
  return {
    nestedMountpoint: (flags & Flag.DirNestedMountpoint) !== 0,
    nestedRoot: (flags & Flag.DirNestedRoot) !== 0,
    bindMountpoint: (flags & Flag.DirBindMountpoint) !== 0,
    hidden: (flags & Flag.Hidden) !== 0,
    chunked: (flags & Flag.FileChunk) !== 0,
    external: (flags & Flag.FileExternal) !== 0,
    directIo: (flags & Flag.DirectIo) !== 0,
    algorithm: algorithm as HashAlgorithm,
    compression: compression as Compression,
  };
}
