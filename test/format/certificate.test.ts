import t from 'tap';
import { readFileSync } from 'node:fs';
import { createHash, generateKeyPairSync, X509Certificate } from 'node:crypto';
import forge from 'node-forge';
import { parseCertificate } from '../../src/format/certificate';
import { ContentHash, HashAlgorithm, parseFingerprint } from '../../src/format/hash';
import { objectPath } from '../../src/format/object-name';
import { zlibDecompress } from '../../src/format/compression';
import { parseManifest } from '../../src/format/manifest';
import { CvmfsError } from '../../src/errors';

const FIXTURE = '/work/shared/fixtures/real-small';
const CERT_PEM = readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.crt`);
const FIXTURE_FINGERPRINT = '1D:93:F1:2D:34:0A:B5:59:34:75:75:C1:64:64:58:BB:10:60:FD:1B';

/** A self-signed certificate for a fresh RSA key, made with node-forge (node:crypto cannot issue one). */
function selfSigned(cn: string) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = '01';
  cert.validity.notBefore = new Date('2020-01-01T00:00:00Z');
  cert.validity.notAfter = new Date('2021-01-01T00:00:00Z'); // long expired: the client does not care
  const name = [{ name: 'commonName', value: cn }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.sign(forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()), forge.md.sha256.create());
  return { pem: forge.pki.certificateToPem(cert), privateKey, publicKey };
}

t.test('fixture certificate fingerprint', async (t) => {
  const cert = parseCertificate(CERT_PEM);
  t.equal(cert.fingerprint().toFingerprint(), FIXTURE_FINGERPRINT);
  t.equal(cert.fingerprint(HashAlgorithm.Sha1).toFingerprint(), FIXTURE_FINGERPRINT);
  t.equal(cert.fingerprint().algorithm, HashAlgorithm.Sha1);
  // The DER bytes are what is hashed (OpenSSL i2d_X509), not the PEM text.
  t.ok(cert.der.equals(new X509Certificate(CERT_PEM).raw));
  t.equal(createHash('sha1').update(cert.der).digest('hex'), FIXTURE_FINGERPRINT.replaceAll(':', '').toLowerCase());
  t.not(createHash('sha1').update(CERT_PEM).digest('hex'), cert.fingerprint().toString());
  t.ok(cert.pem.equals(CERT_PEM));
  t.equal(cert.publicKey.type, 'public');
  t.equal(cert.publicKey.asymmetricKeyType, 'rsa');
  t.equal(cert.publicKey.asymmetricKeyDetails?.modulusLength, 2048);
  // It is the fingerprint line of the fixture whitelist.
  const whitelist = readFileSync(`${FIXTURE}/repo/.cvmfswhitelist`, 'latin1');
  t.ok(whitelist.split('\n').includes(FIXTURE_FINGERPRINT));
  t.ok(parseFingerprint(FIXTURE_FINGERPRINT)!.equals(cert.fingerprint()));
});

t.test('other fingerprint algorithms', async (t) => {
  const cert = parseCertificate(CERT_PEM);
  const r = cert.fingerprint(HashAlgorithm.Rmd160);
  t.equal(r.algorithm, HashAlgorithm.Rmd160);
  t.ok(r.equals(ContentHash.compute(HashAlgorithm.Rmd160, cert.der)));
  t.match(r.toFingerprint(), /^([0-9A-F]{2}:){19}[0-9A-F]{2}-RMD160$/);
  const s = cert.fingerprint(HashAlgorithm.Shake128);
  t.match(s.toFingerprint(), /^([0-9A-F]{2}:){19}[0-9A-F]{2}-SHAKE128$/);
  t.ok(parseFingerprint(s.toFingerprint())!.equals(s));
});

t.test('string and Buffer input agree', async (t) => {
  const a = parseCertificate(CERT_PEM);
  const b = parseCertificate(CERT_PEM.toString('latin1'));
  t.ok(a.der.equals(b.der));
  t.ok(a.pem.equals(b.pem));
  t.ok(a.publicKey.equals(b.publicKey));
});

t.test('the manifest X object is this certificate, zlib-compressed', async (t) => {
  const manifest = parseManifest(readFileSync(`${FIXTURE}/repo/.cvmfspublished`));
  const x = manifest.certificate!;
  t.equal(x.toString(), '81ef9bca4770fea8c65e361effcbfb2c4de2e3cb');
  const stored = readFileSync(`${FIXTURE}/repo/${objectPath(x, 'X')}`);
  t.ok(ContentHash.compute(HashAlgorithm.Sha1, stored).equals(x), 'object named by hash of compressed bytes');
  const pem = zlibDecompress(stored, 'certificate');
  t.equal(parseCertificate(pem).fingerprint().toFingerprint(), FIXTURE_FINGERPRINT);
});

t.test('self-signed certificate from a fresh key', async (t) => {
  const made = selfSigned('test.cvmfs.io CernVM-FS Release Managers');
  const cert = parseCertificate(made.pem);
  t.ok(cert.publicKey.equals(made.publicKey));
  t.equal(cert.fingerprint().toString(), createHash('sha1').update(cert.der).digest('hex'));
  t.not(cert.fingerprint().toFingerprint(), FIXTURE_FINGERPRINT);
});

t.test('unreadable certificates are E_KEY', async (t) => {
  const cases: [string, string | Buffer][] = [
    ['garbage', 'this is not a certificate'],
    ['empty', ''],
    ['empty Buffer', Buffer.alloc(0)],
    ['a public key', readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.pub`)],
    ['truncated PEM', CERT_PEM.subarray(0, 300)],
    ['PEM with broken base64 body', CERT_PEM.toString().replace(/^MII.*$/m, 'MII!!!!not-base64!!!!')],
    ['random bytes', Buffer.from(Array.from({ length: 512 }, (_, i) => (i * 37) & 255))],
  ];
  for (const [name, input] of cases) {
    try {
      parseCertificate(input);
      t.fail(`${name}: should throw`);
    } catch (e) {
      t.ok(CvmfsError.is(e, 'E_KEY'), `${name}: E_KEY`);
      t.ok((e as Error).cause !== undefined, `${name}: cause kept`);
    }
  }
});
