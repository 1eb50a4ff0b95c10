/** The repository certificate (§1.6): a PEM X.509 envelope for the public key; only its DER hash matters. */
import { X509Certificate, type KeyObject } from 'node:crypto';
import { ContentHash, HashAlgorithm } from './hash';
import { CvmfsError } from '../errors';

export interface Certificate {
  readonly pem: Buffer;
  readonly publicKey: KeyObject;
  readonly der: Buffer;
  /** Fingerprint of the DER encoding with the given algorithm (SHA-1 in whitelists by default). */
  fingerprint(algorithm?: HashAlgorithm): ContentHash;
}

export function parseCertificate(pem: Buffer | string): Certificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(pem);
  } catch (e) {
    throw new CvmfsError('E_KEY', 'certificate is not a PEM X.509 certificate', { cause: e });
  }
  const der = x509.raw;
  return {
    pem: Buffer.from(pem),
    publicKey: x509.publicKey,
    der,
    fingerprint: (algorithm = HashAlgorithm.Sha1) => ContentHash.compute(algorithm, der),
  };
}
