/**
 * Repository keys, laid out as cvmfs_server does in /etc/cvmfs/keys (§6.1, §6.3):
 * `<fqrn>.masterkey` + `<fqrn>.pub` sign the whitelist; `<fqrn>.key` + `<fqrn>.crt` sign manifests.
 */
import { generateKeyPairSync, createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import forge from 'node-forge';
import { parseCertificate, type Certificate } from '../format/certificate';
import { CvmfsError } from '../errors';

export interface RepositoryKeys {
  readonly masterKey: KeyObject;
  readonly masterPublicKey: KeyObject;
  readonly repositoryKey: KeyObject;
  readonly certificate: Certificate;
}

export function keyFiles(fqrn: string, dir: string) {
  return {
    masterKey: join(dir, `${fqrn}.masterkey`),
    masterPublicKey: join(dir, `${fqrn}.pub`),
    repositoryKey: join(dir, `${fqrn}.key`),
    certificate: join(dir, `${fqrn}.crt`),
  };
}

/** CN as create_cert writes it: the name cut to 30 characters, then " CernVM-FS Release Managers". */
export function certificateCommonName(fqrn: string): string {
  const name = fqrn.length > 30 ? `${fqrn.slice(0, 30)}[...]` : fqrn;
  return `${name} CernVM-FS Release Managers`;
}

/** A self-signed X.509 certificate over the repository key, valid 365 days. */
export function createCertificatePem(fqrn: string, repositoryKey: KeyObject, now = new Date()): string {
  const privatePem = repositoryKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const forgeKey = forge.pki.privateKeyFromPem(privatePem);
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e);
  cert.serialNumber = '01' + randomBytes(8).toString('hex');
  cert.validity.notBefore = now;
  cert.validity.notAfter = new Date(now.getTime() + 365 * 86400_000);
  const subject = [{ name: 'commonName', value: certificateCommonName(fqrn) }];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.sign(forgeKey, forge.md.sha256.create());
  return forge.pki.certificateToPem(cert);
}

function newRsaKey(): KeyObject {
  return generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
}

/** Creates the four key files; refuses to overwrite existing keys. */
export async function createKeys(fqrn: string, dir: string): Promise<RepositoryKeys> {
  const files = keyFiles(fqrn, dir);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const master = newRsaKey();
  const repository = newRsaKey();
  const certPem = createCertificatePem(fqrn, repository);
  const write = async (file: string, data: string, mode: number) => {
    try {
      await writeFile(file, data, { mode, flag: 'wx' });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new CvmfsError('E_KEY', `${file} exists already; not overwriting repository keys`);
      }
      throw new CvmfsError('E_IO', `${file}: cannot write (${(e as Error).message})`, { cause: e });
    }
  };
  await write(files.masterKey, master.export({ type: 'pkcs1', format: 'pem' }).toString(), 0o400);
  await write(files.masterPublicKey, createPublicKey(master).export({ type: 'spki', format: 'pem' }).toString(), 0o444);
  await write(files.repositoryKey, repository.export({ type: 'pkcs1', format: 'pem' }).toString(), 0o400);
  await write(files.certificate, certPem, 0o444);
  return {
    masterKey: master,
    masterPublicKey: createPublicKey(master),
    repositoryKey: repository,
    certificate: parseCertificate(certPem),
  };
}

async function readKeyFile(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new CvmfsError('E_KEY', `${file}: cannot read the ${what} (${(e as NodeJS.ErrnoException).code ?? e})`, {
      cause: e,
    });
  }
}

function parsePrivateKey(data: Buffer, file: string): KeyObject {
  try {
    return createPrivateKey(data);
  } catch (e) {
    throw new CvmfsError('E_KEY', `${file}: not a PEM private key`, { cause: e });
  }
}

/** Loads and cross-checks the keys a publish needs. */
export async function loadKeys(fqrn: string, dir: string): Promise<RepositoryKeys> {
  const files = keyFiles(fqrn, dir);
  const masterKey = parsePrivateKey(await readKeyFile(files.masterKey, 'master key'), files.masterKey);
  const repositoryKey = parsePrivateKey(await readKeyFile(files.repositoryKey, 'repository key'), files.repositoryKey);
  const certPem = await readKeyFile(files.certificate, 'repository certificate');
  let certificate: Certificate;
  try {
    certificate = parseCertificate(certPem);
  } catch (e) {
    throw new CvmfsError('E_KEY', `${files.certificate}: not a PEM X.509 certificate`, { cause: e });
  }
  const samePublic = (a: KeyObject, b: KeyObject) =>
    a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }));
  if (!samePublic(createPublicKey(repositoryKey), certificate.publicKey)) {
    throw new CvmfsError('E_KEY', `${files.certificate}: certificate does not belong to ${files.repositoryKey}`);
  }
  return { masterKey, masterPublicKey: createPublicKey(masterKey), repositoryKey, certificate };
}

/** Public master keys for verification: a file, or every `*.pub` of a directory. */
export async function loadPublicKeys(paths: readonly string[]): Promise<KeyObject[]> {
  const keys: KeyObject[] = [];
  for (const file of paths) {
    const data = await readKeyFile(file, 'public key');
    try {
      keys.push(createPublicKey(data));
    } catch (e) {
      throw new CvmfsError('E_KEY', `${file}: not a PEM public key`, { cause: e });
    }
  }
  return keys;
}
