/**
 * The repository manifest `.cvmfspublished` (§1.3): `<letter><value>\n` lines, then the signature
 * framing of signed-letter.ts. Unknown keys are kept on parse and ignored, as a robust client should.
 */
import { ContentHash } from './hash';
import { splitLetter, signWithRsaSha1, verifyRsaSha1, type KeyInput } from './signed-letter';
import { FormatError, CvmfsError } from '../errors';

export const ROOT_PATH_MD5 = 'd41d8cd98f00b204e9800998ecf8427e';

export interface Manifest {
  rootCatalog: ContentHash; // C
  rootCatalogSize?: number; // B, uncompressed bytes
  rootPathHash: string; // R
  ttl: number; // D, seconds
  revision: number; // S
  garbageCollectable: boolean; // G
  alternativePath: boolean; // A
  fqrn?: string; // N
  certificate?: ContentHash; // X
  history?: ContentHash; // H
  publishTimestamp?: number; // T, Unix seconds
  metainfo?: ContentHash; // M
  reflog?: ContentHash; // Y
  microCatalog?: ContentHash; // L
  channelTips?: string; // Z, values joined by '|'
}

/** Parses the key lines in front of "--" (§1.3 parser rules). */
export function parseKeyLines(data: Buffer): Map<string, string> {
  const values = new Map<string, string>();
  let pos = 0;
  for (;;) {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) break; // only \n-terminated lines count
    const line = data.subarray(pos, end).toString('utf8');
    pos = end + 1;
    if (line === '--') break;
    if (line === '') continue;
    const key = line[0]!;
    const value = line.slice(1);
    values.set(key, key === 'Z' && values.has('Z') ? `${values.get('Z')}|${value}` : value);
  }
  return values;
}

function requireKey(values: Map<string, string>, key: string): string {
  const value = values.get(key);
  if (value === undefined) throw new FormatError(`manifest lacks the required '${key}' line`);
  return value;
}

function decimal(values: Map<string, string>, key: string): number | undefined {
  const text = values.get(key);
  if (text === undefined) return undefined;
  const n = Number(text);
  // Beyond 2^53 a JS number is no longer exact (and 309 digits are Infinity): refuse rather than round.
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new FormatError(`manifest line '${key}${text}' is not a number`);
  return n;
}

function hashValue(values: Map<string, string>, key: string): ContentHash | undefined {
  const text = values.get(key);
  if (text === undefined || text === '') return undefined;
  try {
    return ContentHash.parse(text);
  } catch (e) {
    throw new FormatError(`manifest line '${key}${text}' is not a content hash`, { cause: e });
  }
}

export function parseManifest(data: Buffer): Manifest {
  const v = parseKeyLines(data);
  requireKey(v, 'C');
  requireKey(v, 'R');
  requireKey(v, 'D');
  requireKey(v, 'S');
  const rootCatalog = hashValue(v, 'C');
  if (!rootCatalog) throw new FormatError("manifest 'C' line has no root catalog hash");
  return {
    rootCatalog,
    rootCatalogSize: decimal(v, 'B'),
    rootPathHash: v.get('R')!,
    ttl: decimal(v, 'D')!,
    revision: decimal(v, 'S')!,
    garbageCollectable: v.get('G') === 'yes',
    alternativePath: v.get('A') === 'yes',
    fqrn: v.get('N'),
    certificate: hashValue(v, 'X'),
    history: hashValue(v, 'H'),
    publishTimestamp: decimal(v, 'T'),
    metainfo: hashValue(v, 'M'),
    reflog: hashValue(v, 'Y'),
    microCatalog: hashValue(v, 'L'),
    channelTips: v.get('Z'),
  };
}

/** Writer order of `Manifest::ExportString`: C B R D S G A, then L N X H T M Y when set. */
export function serializeManifestBody(m: Manifest): Buffer {
  const lines = [
    `C${m.rootCatalog}`,
    `B${m.rootCatalogSize ?? 0}`,
    `R${m.rootPathHash}`,
    `D${m.ttl}`,
    `S${m.revision}`,
    `G${m.garbageCollectable ? 'yes' : 'no'}`,
    `A${m.alternativePath ? 'yes' : 'no'}`,
  ];
  if (m.microCatalog) lines.push(`L${m.microCatalog}`);
  if (m.fqrn !== undefined) lines.push(`N${m.fqrn}`);
  if (m.certificate) lines.push(`X${m.certificate}`);
  if (m.history) lines.push(`H${m.history}`);
  if (m.publishTimestamp) lines.push(`T${m.publishTimestamp}`);
  if (m.metainfo) lines.push(`M${m.metainfo}`);
  if (m.reflog) lines.push(`Y${m.reflog}`);
  return Buffer.from(lines.map((l) => l + '\n').join(''));
}

/** The signed `.cvmfspublished` bytes; the signature hash uses the root catalog's algorithm. */
export function signManifest(m: Manifest, repositoryKey: KeyInput): Buffer {
  return signWithRsaSha1(serializeManifestBody(m), m.rootCatalog.algorithm, repositoryKey);
}

export class ManifestError extends CvmfsError {
  constructor(message: string) {
    super('E_MANIFEST', message);
  }
}

/**
 * Parses and checks a downloaded manifest against the certificate's public key and the expected
 * repository name (§1.3 acceptance checks 1–3 and 6; the whitelist is checked separately).
 */
export function verifyManifest(data: Buffer, fqrn: string, certificatePublicKey: KeyInput): Manifest {
  const manifest = parseManifest(data);
  checkManifestFields(manifest, fqrn);
  verifyRsaSha1(splitLetter(data, 'manifest'), certificatePublicKey, 'manifest');
  return manifest;
}

export function checkManifestFields(manifest: Manifest, fqrn: string): void {
  // A missing N counts as a different name, as in the C++ client.
  if (manifest.fqrn !== fqrn) {
    throw new ManifestError(`manifest is for repository '${manifest.fqrn ?? ''}', not '${fqrn}'`);
  }
  if (manifest.rootPathHash !== ROOT_PATH_MD5) {
    throw new ManifestError(`manifest root path hash ${manifest.rootPathHash} is not MD5("") (root mismatch)`);
  }
}

