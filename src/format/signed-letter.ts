/**
 * The framing shared by `.cvmfspublished` and `.cvmfswhitelist` (§1.4, §1.5.2):
 *   body (lines ending in \n) + "--\n" + hex hash of body + "\n" + binary signature to EOF.
 * The manifest's signature is RSA-PKCS#1 v1.5 with SHA-1 over the ASCII hex; the whitelist's is a
 * raw RSA type-1 "private encrypt" of the ASCII hex (no DigestInfo), checked by public decrypt.
 */
import { constants, createPrivateKey, createPublicKey, privateEncrypt, publicDecrypt, sign, verify, type KeyObject } from 'node:crypto';
import { ContentHash, HashAlgorithm, algorithmOfHexLength } from './hash';
import { FormatError, SignatureError } from '../errors';

export interface SignedLetter {
  /** Everything before "--\n", including the last line's newline. */
  readonly body: Buffer;
  /** The hash line as text (hex + algorithm id). */
  readonly hashText: string;
  readonly signature: Buffer;
}

const SEPARATOR = Buffer.from('\n--\n');

export function splitLetter(data: Buffer, what: string): SignedLetter {
  const sep = data.indexOf(SEPARATOR);
  if (sep < 0) throw new FormatError(`${what} has no signature separator`);
  const body = data.subarray(0, sep + 1);
  const hashStart = sep + SEPARATOR.length;
  const hashEnd = data.indexOf(0x0a, hashStart);
  if (hashEnd < 0) throw new FormatError(`${what} has no signature hash line`);
  return {
    body,
    hashText: data.subarray(hashStart, hashEnd).toString('latin1'),
    signature: data.subarray(hashEnd + 1),
  };
}

/** Checks that the hash line is the hash of the body (algorithm from the line's length). */
export function checkLetterHash(letter: SignedLetter, what: string): ContentHash {
  let algorithm: HashAlgorithm;
  try {
    algorithm = algorithmOfHexLength(letter.hashText);
  } catch {
    throw new SignatureError(`${what}: signature hash line '${letter.hashText}' is not a hash`);
  }
  const actual = ContentHash.compute(algorithm, letter.body);
  if (actual.toString() !== letter.hashText) {
    throw new SignatureError(`${what}: signature check failed, the content does not match its signed hash`);
  }
  return actual;
}

export type KeyInput = string | Buffer | KeyObject;

function privateKeyOf(key: KeyInput): KeyObject {
  return typeof key === 'string' || Buffer.isBuffer(key) ? createPrivateKey(key) : key;
}

/** Accepts a public key, a certificate's key object, or a private key (whose public half is used). */
function publicKeyOf(key: KeyInput): KeyObject {
  if (typeof key !== 'string' && !Buffer.isBuffer(key) && key.type === 'public') return key;
  return createPublicKey(key);
}

function assemble(body: Buffer, hashText: string, signature: Buffer): Buffer {
  return Buffer.concat([body, Buffer.from(`--\n${hashText}\n`), signature]);
}

/** Signs a manifest body with the repository private key. */
export function signWithRsaSha1(body: Buffer, algorithm: HashAlgorithm, privateKey: KeyInput): Buffer {
  const hashText = ContentHash.compute(algorithm, body).toString();
  const signature = sign('sha1', Buffer.from(hashText), privateKeyOf(privateKey));
  return assemble(body, hashText, signature);
}

/** Verifies a manifest letter against the certificate's (or any) public key. */
export function verifyRsaSha1(letter: SignedLetter, publicKey: KeyInput, what: string): void {
  checkLetterHash(letter, what);
  let ok = false;
  try {
    ok = verify('sha1', Buffer.from(letter.hashText), publicKeyOf(publicKey), letter.signature);
  } catch (e) {
    throw new SignatureError(`${what}: signature cannot be checked`, { cause: e });
  }
  if (!ok) throw new SignatureError(`${what}: signature does not verify with the repository certificate`);
}

/** Signs a whitelist body with the master key: raw PKCS#1 type-1 padding of the ASCII hex. */
export function signWithRawRsa(body: Buffer, algorithm: HashAlgorithm, privateKey: KeyInput): Buffer {
  const hashText = ContentHash.compute(algorithm, body).toString();
  const signature = privateEncrypt(
    { key: privateKeyOf(privateKey), padding: constants.RSA_PKCS1_PADDING },
    Buffer.from(hashText),
  );
  return assemble(body, hashText, signature);
}

/** True when any of the master keys recovers exactly the ASCII hex from the signature. */
export function verifyRawRsa(letter: SignedLetter, publicKeys: readonly KeyInput[], what: string): void {
  checkLetterHash(letter, what);
  const expected = Buffer.from(letter.hashText);
  for (const key of publicKeys) {
    try {
      const recovered = publicDecrypt({ key: publicKeyOf(key), padding: constants.RSA_PKCS1_PADDING }, letter.signature);
      if (recovered.equals(expected)) return;
    } catch {
      // wrong key size or padding: try the next key
    }
  }
  throw new SignatureError(`${what}: signature does not verify with any of the ${publicKeys.length} master key(s)`);
}

