/**
 * The whitelist `.cvmfswhitelist` (§1.5): which repository certificates the master key vouches
 * for, until when. Expiry is compared on year, month, day and hour only, as the C++ client does.
 */
import { ContentHash, HashAlgorithm, parseFingerprint } from './hash';
import { splitLetter, signWithRawRsa, verifyRawRsa, type KeyInput } from './signed-letter';
import type { Certificate } from './certificate';
import { CvmfsError, FormatError } from '../errors';

export interface Whitelist {
  created: Date;
  expires: Date;
  fqrn: string;
  pkcs7: boolean;
  caChain: boolean;
  fingerprints: ContentHash[];
}

export class WhitelistError extends CvmfsError {
  constructor(message: string) {
    super('E_WHITELIST', message);
  }
}

/** YYYYMMDDHHMMSS in UTC. */
export function formatTimestamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').slice(0, 14);
}

function parseTimestamp(text: string, what: string): Date {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(text);
  if (!m) throw new FormatError(`whitelist ${what} '${text}' is not YYYYMMDDHHMMSS`);
  const [, y, mo, d, h, mi, s] = m.map(Number) as number[];
  return new Date(Date.UTC(y!, mo! - 1, d!, h!, mi!, s!));
}

export function parseWhitelist(data: Buffer): Whitelist {
  const { body } = splitLetter(data, 'whitelist');
  const lines = body.toString('utf8').split('\n');
  lines.pop(); // body ends with \n
  if (lines.length < 3) throw new FormatError('whitelist has fewer than three lines');
  const [created, expiry, name] = lines as [string, string, string];
  if (created.length !== 14) throw new FormatError(`whitelist line 1 '${created}' is not a 14-character timestamp`);
  if (expiry.length !== 15) throw new FormatError(`whitelist line 2 '${expiry}' is not E + 14-character timestamp`);
  if (!name.startsWith('N')) throw new FormatError(`whitelist line 3 '${name}' does not name the repository`);
  let rest = lines.slice(3);
  const pkcs7 = rest[0] === 'Vpkcs7';
  if (pkcs7) rest = rest.slice(1);
  const caChain = rest[0] === 'Wcachain';
  if (caChain) rest = rest.slice(1);
  return {
    created: parseTimestamp(created, 'creation time'),
    expires: parseTimestamp(expiry.slice(1), 'expiry'),
    fqrn: name.slice(1),
    pkcs7,
    caChain,
    fingerprints: rest.map(parseFingerprint).filter((f): f is ContentHash => f !== undefined),
  };
}

export function serializeWhitelistBody(w: Whitelist): Buffer {
  const lines = [formatTimestamp(w.created), `E${formatTimestamp(w.expires)}`, `N${w.fqrn}`];
  if (w.pkcs7) lines.push('Vpkcs7');
  if (w.caChain) lines.push('Wcachain');
  for (const fp of w.fingerprints) lines.push(fp.toFingerprint());
  return Buffer.from(lines.map((l) => l + '\n').join(''));
}

export interface CreateWhitelistOptions {
  fqrn: string;
  certificate: Certificate;
  now?: Date;
  validDays?: number; // 30 by default, like cvmfs_server
  algorithm?: HashAlgorithm;
}

export function createWhitelist(o: CreateWhitelistOptions): Whitelist {
  const now = o.now ?? new Date();
  const algorithm = o.algorithm ?? HashAlgorithm.Sha1;
  return {
    created: now,
    expires: new Date(now.getTime() + (o.validDays ?? 30) * 86400_000),
    fqrn: o.fqrn,
    pkcs7: false,
    caChain: false,
    fingerprints: [o.certificate.fingerprint(algorithm)],
  };
}

export function signWhitelist(w: Whitelist, masterKey: KeyInput, algorithm = HashAlgorithm.Sha1): Buffer {
  return signWithRawRsa(serializeWhitelistBody(w), algorithm, masterKey);
}

/** Valid while `now` is before the expiry hour (minutes and seconds do not count). */
export function isExpired(w: Whitelist, now: Date): boolean {
  const hour = (d: Date) => Math.floor(d.getTime() / 3600_000);
  return hour(now) >= hour(w.expires);
}

export interface VerifyWhitelistOptions {
  fqrn: string;
  masterKeys: readonly KeyInput[];
  certificate: Certificate;
  now?: Date;
  /** Blacklisted certificate fingerprints (§1.5.3 step 7). */
  blacklist?: readonly ContentHash[];
}

/** Signature, name, expiry and certificate fingerprint checks of §1.5.3. */
export function verifyWhitelist(data: Buffer, o: VerifyWhitelistOptions): Whitelist {
  const whitelist = parseWhitelist(data);
  verifyRawRsa(splitLetter(data, 'whitelist'), o.masterKeys, 'whitelist');
  if (whitelist.fqrn !== o.fqrn) {
    throw new WhitelistError(`whitelist is for repository '${whitelist.fqrn}', not '${o.fqrn}'`);
  }
  if (whitelist.pkcs7) throw new WhitelistError('PKCS#7 whitelists (Vpkcs7) are not supported');
  const now = o.now ?? new Date();
  if (isExpired(whitelist, now)) {
    throw new WhitelistError(`whitelist expired on ${whitelist.expires.toISOString()}`);
  }
  const certHash = (alg: HashAlgorithm) => o.certificate.fingerprint(alg);
  for (const bad of o.blacklist ?? []) {
    if (certHash(bad.algorithm).equals(bad)) throw new WhitelistError(`certificate ${bad.toFingerprint()} is blacklisted`);
  }
  if (!whitelist.fingerprints.some((fp) => certHash(fp.algorithm).equals(fp))) {
    throw new WhitelistError(`certificate ${certHash(HashAlgorithm.Sha1).toFingerprint()} is not on the whitelist`);
  }
  return whitelist;
}
