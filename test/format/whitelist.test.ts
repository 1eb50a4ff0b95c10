import t from 'tap';
import { readFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import forge from 'node-forge';
import {
  createWhitelist,
  formatTimestamp,
  isExpired,
  parseWhitelist,
  serializeWhitelistBody,
  signWhitelist,
  verifyWhitelist,
  WhitelistError,
  type Whitelist,
} from '../../src/format/whitelist';
import { parseCertificate, type Certificate } from '../../src/format/certificate';
import { signWithRawRsa, splitLetter } from '../../src/format/signed-letter';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { CvmfsError } from '../../src/errors';
import { throwsCode } from '../helpers/asserts';

const FIXTURE = '/work/shared/fixtures/real-small';
const FIXTURE_CERT = parseCertificate(readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.crt`));
const FIXTURE_MASTER = readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.pub`);
const FIXTURE_WHITELIST = readFileSync(`${FIXTURE}/repo/.cvmfswhitelist`);
const FIXTURE_FP = '1D:93:F1:2D:34:0A:B5:59:34:75:75:C1:64:64:58:BB:10:60:FD:1B';

const FQRN = 'test.cvmfs.io';
const NOW = new Date('2030-01-01T12:00:00Z');
const master = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherMaster = generateKeyPairSync('rsa', { modulusLength: 2048 });
const smallMaster = generateKeyPairSync('rsa', { modulusLength: 1024 });

/** A self-signed certificate for a fresh RSA key, made with node-forge (node:crypto cannot issue one). */
function selfSigned(cn: string): Certificate {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  cert.serialNumber = '02';
  cert.validity.notBefore = new Date('2020-01-01T00:00:00Z');
  cert.validity.notAfter = new Date('2021-01-01T00:00:00Z');
  const name = [{ name: 'commonName', value: cn }];
  cert.setSubject(name);
  cert.setIssuer(name);
  cert.sign(forge.pki.privateKeyFromPem(privateKey.export({ type: 'pkcs1', format: 'pem' }).toString()), forge.md.sha256.create());
  return parseCertificate(forge.pki.certificateToPem(cert));
}
const OTHER_CERT = selfSigned('other.cvmfs.io CernVM-FS Release Managers');

function baseWhitelist(over: Partial<Whitelist> = {}): Whitelist {
  return { ...createWhitelist({ fqrn: FQRN, certificate: FIXTURE_CERT, now: NOW }), ...over };
}

/** Signs an arbitrary body text with the test master key. */
function signBody(lines: string[], key = master.privateKey): Buffer {
  return signWithRawRsa(Buffer.from(lines.map((l) => l + '\n').join('')), HashAlgorithm.Sha1, key);
}

const verifyOpts = { fqrn: FQRN, masterKeys: [master.publicKey], certificate: FIXTURE_CERT, now: NOW };

t.test('formatTimestamp is YYYYMMDDHHMMSS in UTC', async (t) => {
  t.equal(formatTimestamp(new Date('2036-11-24T20:10:52.999Z')), '20361124201052');
  t.equal(formatTimestamp(new Date('2001-02-03T04:05:06Z')), '20010203040506');
});

t.test('createWhitelist defaults', async (t) => {
  const w = createWhitelist({ fqrn: FQRN, certificate: FIXTURE_CERT, now: NOW });
  t.equal(w.created.toISOString(), NOW.toISOString());
  t.equal(w.expires.toISOString(), '2030-01-31T12:00:00.000Z', '30 days');
  t.equal(w.fqrn, FQRN);
  t.equal(w.pkcs7, false);
  t.equal(w.caChain, false);
  t.same(w.fingerprints.map((f) => f.toFingerprint()), [FIXTURE_FP]);
  const seven = createWhitelist({ fqrn: FQRN, certificate: FIXTURE_CERT, now: NOW, validDays: 7, algorithm: HashAlgorithm.Rmd160 });
  t.equal(seven.expires.toISOString(), '2030-01-08T12:00:00.000Z');
  t.match(seven.fingerprints[0]!.toFingerprint(), /-RMD160$/);
});

t.test('create → sign → verify round trip', async (t) => {
  const w = baseWhitelist();
  const data = signWhitelist(w, master.privateKey);
  t.equal(
    splitLetter(data, 'whitelist').body.toString(),
    `20300101120000\nE20300131120000\nN${FQRN}\n${FIXTURE_FP}\n`,
  );
  t.equal(splitLetter(data, 'whitelist').signature.length, 256);
  t.same(verifyWhitelist(data, verifyOpts), w);
  t.same(parseWhitelist(data), w);
  // Other hash algorithms for the signature hash line.
  for (const [algorithm, id] of [
    [HashAlgorithm.Rmd160, '-rmd160'],
    [HashAlgorithm.Shake128, '-shake128'],
  ] as const) {
    const d = signWhitelist(w, master.privateKey, algorithm);
    t.ok(splitLetter(d, 'whitelist').hashText.endsWith(id));
    t.same(verifyWhitelist(d, verifyOpts), w, `${id} signature`);
  }
  // RMD160 fingerprints match the certificate hashed with RMD160.
  const rw = createWhitelist({ fqrn: FQRN, certificate: FIXTURE_CERT, now: NOW, algorithm: HashAlgorithm.Rmd160 });
  t.same(verifyWhitelist(signWhitelist(rw, master.privateKey, HashAlgorithm.Rmd160), verifyOpts), rw);
  // Optional lines round trip.
  const flagged = baseWhitelist({ caChain: true, fingerprints: [OTHER_CERT.fingerprint(), FIXTURE_CERT.fingerprint()] });
  const fd = signWhitelist(flagged, master.privateKey);
  t.match(splitLetter(fd, 'whitelist').body.toString(), /\nN[^\n]+\nWcachain\n/);
  t.same(parseWhitelist(fd), flagged);
});

t.test('expiry: valid until the expiry hour, minutes ignored', async (t) => {
  const w = baseWhitelist({ expires: new Date('2030-05-10T12:34:56Z') });
  t.equal(isExpired(w, new Date('2030-05-10T12:00:00Z')), true, 'at the start of the expiry hour');
  t.equal(isExpired(w, new Date('2030-05-10T12:34:55Z')), true, 'before the expiry minute, same hour');
  t.equal(isExpired(w, new Date('2030-05-10T12:59:59Z')), true);
  t.equal(isExpired(w, new Date('2030-05-10T11:59:59.999Z')), false, 'one hour earlier');
  t.equal(isExpired(w, new Date('2030-05-10T11:00:00Z')), false);
  t.equal(isExpired(w, new Date('2030-05-11T00:00:00Z')), true, 'after');
  t.equal(isExpired(w, new Date('2020-01-01T00:00:00Z')), false, 'long before');
  const onTheHour = baseWhitelist({ expires: new Date('2030-05-10T12:00:00Z') });
  t.equal(isExpired(onTheHour, new Date('2030-05-10T11:59:59Z')), false);
  t.equal(isExpired(onTheHour, new Date('2030-05-10T12:00:00Z')), true);

  const data = signWhitelist(w, master.privateKey);
  t.ok(verifyWhitelist(data, { ...verifyOpts, now: new Date('2030-05-10T11:59:59Z') }));
  t.ok(verifyWhitelist(data, { ...verifyOpts, now: new Date('2030-05-10T11:00:00Z') }));
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, now: new Date('2030-05-10T12:00:00Z') }), 'E_WHITELIST', 'at the expiry hour');
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, now: new Date('2030-05-10T12:10:00Z') }), 'E_WHITELIST', 'before the minute');
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, now: new Date('2031-01-01T00:00:00Z') }), 'E_WHITELIST', 'a year later');
  t.throws(() => verifyWhitelist(data, { ...verifyOpts, now: new Date('2031-01-01T00:00:00Z') }), { message: /expired/ });
  // The creation time is not checked: a whitelist "from the future" is fine.
  const future = signWhitelist(baseWhitelist({ created: new Date('2035-01-01T00:00:00Z') }), master.privateKey);
  t.ok(verifyWhitelist(future, verifyOpts));
});

t.test('rejections (E_WHITELIST)', async (t) => {
  const data = signWhitelist(baseWhitelist(), master.privateKey);
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, fqrn: 'other.cvmfs.io' }), 'E_WHITELIST', 'wrong fqrn');
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, certificate: OTHER_CERT }), 'E_WHITELIST', 'certificate not listed');
  t.throws(() => verifyWhitelist(data, { ...verifyOpts, certificate: OTHER_CERT }), { message: /not on the whitelist/ });
  try {
    verifyWhitelist(data, { ...verifyOpts, fqrn: 'other.cvmfs.io' });
  } catch (e) {
    t.ok(e instanceof WhitelistError);
  }

  // Blacklist wins over the whitelist, in any algorithm.
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, blacklist: [FIXTURE_CERT.fingerprint()] }), 'E_WHITELIST', 'blacklisted (SHA-1)');
  throwsCode(
    t,
    () => verifyWhitelist(data, { ...verifyOpts, blacklist: [OTHER_CERT.fingerprint(), FIXTURE_CERT.fingerprint(HashAlgorithm.Rmd160)] }),
    'E_WHITELIST',
    'blacklisted (RMD160)',
  );
  t.throws(() => verifyWhitelist(data, { ...verifyOpts, blacklist: [FIXTURE_CERT.fingerprint()] }), { message: /blacklisted/ });
  t.ok(verifyWhitelist(data, { ...verifyOpts, blacklist: [OTHER_CERT.fingerprint()] }), 'other certificates blacklisted');
  t.ok(verifyWhitelist(data, { ...verifyOpts, blacklist: [] }));

  // PKCS#7 whitelists are not supported.
  const pkcs7 = signWhitelist(baseWhitelist({ pkcs7: true }), master.privateKey);
  t.equal(parseWhitelist(pkcs7).pkcs7, true);
  throwsCode(t, () => verifyWhitelist(pkcs7, verifyOpts), 'E_WHITELIST', 'Vpkcs7');

  // No fingerprints at all.
  const empty = signWhitelist(baseWhitelist({ fingerprints: [] }), master.privateKey);
  throwsCode(t, () => verifyWhitelist(empty, verifyOpts), 'E_WHITELIST', 'no fingerprints');
});

t.test('master keys', async (t) => {
  const data = signWhitelist(baseWhitelist(), master.privateKey);
  t.ok(verifyWhitelist(data, { ...verifyOpts, masterKeys: [otherMaster.publicKey, master.publicKey] }), 'second of two keys');
  t.ok(verifyWhitelist(data, { ...verifyOpts, masterKeys: [master.publicKey, otherMaster.publicKey] }), 'first of two keys');
  t.ok(verifyWhitelist(data, { ...verifyOpts, masterKeys: [smallMaster.publicKey, otherMaster.publicKey, master.publicKey] }), 'with a 1024-bit key');
  t.ok(
    verifyWhitelist(data, { ...verifyOpts, masterKeys: [master.publicKey.export({ type: 'spki', format: 'pem' }).toString()] }),
    'PEM string',
  );
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, masterKeys: [otherMaster.publicKey] }), 'E_SIGNATURE', 'only a wrong key');
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, masterKeys: [otherMaster.publicKey, smallMaster.publicKey] }), 'E_SIGNATURE', 'two wrong keys');
  throwsCode(t, () => verifyWhitelist(data, { ...verifyOpts, masterKeys: [] }), 'E_SIGNATURE', 'no keys');
  // Signed with the 1024-bit key, verified among 2048-bit keys.
  const small = signWhitelist(baseWhitelist(), smallMaster.privateKey);
  t.ok(verifyWhitelist(small, { ...verifyOpts, masterKeys: [master.publicKey, smallMaster.publicKey] }));
});

t.test('fingerprint lines: comments, case, junk', async (t) => {
  const fp = FIXTURE_CERT.fingerprint().toFingerprint();
  const head = ['20300101120000', 'E20300131120000', `N${FQRN}`];
  const cases: [string, string[]][] = [
    ['trailing comment', [`${fp} # repository key 2030`]],
    ['comment without space', [`${fp}#comment`]],
    ['tab comment', [`${fp}\tcomment`]],
    ['lower case', [fp.toLowerCase()]],
    ['junk lines around', ['not a fingerprint', '# a comment line', '', `${OTHER_CERT.fingerprint().toFingerprint()}`, fp, 'AB:CD']],
    ['RMD160 fingerprint', [`${FIXTURE_CERT.fingerprint(HashAlgorithm.Rmd160).toFingerprint()} # rmd`]],
    ['after Wcachain', ['Wcachain', fp]],
  ];
  for (const [name, lines] of cases) {
    const data = signBody([...head, ...lines]);
    t.ok(verifyWhitelist(data, verifyOpts), name);
  }
  const parsed = parseWhitelist(signBody([...head, `${fp} # c`, 'junk', OTHER_CERT.fingerprint().toFingerprint()]));
  t.same(parsed.fingerprints.map((f) => f.toFingerprint()), [fp, OTHER_CERT.fingerprint().toFingerprint()]);
  // A commented-out fingerprint does not count.
  throwsCode(t, () => verifyWhitelist(signBody([...head, `# ${fp}`]), verifyOpts), 'E_WHITELIST', 'commented-out fingerprint');
  // MD5-length lines are not fingerprints.
  t.same(parseWhitelist(signBody([...head, 'D4:1D:8C:D9:8F:00:B2:04:E9:80:09:98:EC:F8:42:7E'])).fingerprints, []);
});

t.test('malformed whitelists (E_FORMAT)', async (t) => {
  const cases: [string, string[]][] = [
    ['two lines', ['20300101120000', 'E20300131120000']],
    ['line 1 too short', ['2030010112000', 'E20300131120000', `N${FQRN}`]],
    ['line 1 too long', ['203001011200000', 'E20300131120000', `N${FQRN}`]],
    ['line 2 too short', ['20300101120000', 'E2030013112000', `N${FQRN}`]],
    ['line 2 without letter', ['20300101120000', '20300131120000', `N${FQRN}`]],
    ['line 3 not N', ['20300101120000', 'E20300131120000', FQRN]],
    ['expiry not digits', ['20300101120000', 'E2030013112000x', `N${FQRN}`]],
    ['creation not digits', ['2030-01-01 12Z', 'E20300131120000', `N${FQRN}`]],
  ];
  for (const [name, lines] of cases) {
    throwsCode(t, () => verifyWhitelist(signBody(lines), verifyOpts), 'E_FORMAT', name);
  }
  throwsCode(t, () => parseWhitelist(Buffer.from('20300101120000\nE20300131120000\nNx\n')), 'E_FORMAT', 'unsigned');
  // The expiry letter itself is not checked (§1.5.3 step 2).
  t.equal(parseWhitelist(signBody(['20300101120000', 'X20300131120000', `N${FQRN}`])).expires.toISOString(), '2030-01-31T12:00:00.000Z');
});

t.test('any flipped byte is rejected', async (t) => {
  const w = baseWhitelist({ fingerprints: [OTHER_CERT.fingerprint(), FIXTURE_CERT.fingerprint()] });
  const data = signWhitelist(w, master.privateKey);
  const letter = splitLetter(data, 'whitelist');
  const bodyText = letter.body.toString('latin1');
  // Bytes whose flip breaks the framing or the fixed lines, so that parsing fails before the signature check.
  const structural = new Set<number>();
  for (let i = 0; i < bodyText.length; i++) if (bodyText[i] === '\n') structural.add(i);
  structural.add(bodyText.indexOf('\nN') + 1); // the N of line 3
  const sep = letter.body.length;
  for (const i of [sep, sep + 1, sep + 2, sep + 3 + letter.hashText.length]) structural.add(i); // "--\n" and the hash line's \n

  let signatureErrors = 0;
  for (let pos = 0; pos < data.length; pos++) {
    const copy = Buffer.from(data);
    copy[pos] ^= 0x01;
    try {
      verifyWhitelist(copy, verifyOpts);
      t.fail(`byte ${pos} flipped: accepted`);
    } catch (e) {
      if (CvmfsError.is(e, 'E_SIGNATURE')) signatureErrors++;
      else if (!(structural.has(pos) && CvmfsError.is(e, 'E_FORMAT'))) t.fail(`byte ${pos} flipped: ${String(e)}`);
    }
  }
  t.ok(signatureErrors >= data.length - structural.size, `${signatureErrors} of ${data.length} flips are E_SIGNATURE`);
  // The content bytes (timestamps, name, fingerprints), the hash line and the signature all give E_SIGNATURE.
  for (const pos of [0, 20, bodyText.indexOf('\nN') + 2, bodyText.lastIndexOf(':') + 1, sep + 5, sep + 50, data.length - 1]) {
    const copy = Buffer.from(data);
    copy[pos] ^= 0x01;
    throwsCode(t, () => verifyWhitelist(copy, verifyOpts), 'E_SIGNATURE', `byte ${pos}`);
  }
  throwsCode(t, () => verifyWhitelist(data.subarray(0, data.length - 1), verifyOpts), 'E_SIGNATURE', 'truncated');
  t.ok(verifyWhitelist(data, verifyOpts), 'the original still verifies');
});

t.test('the real fixture whitelist', async (t) => {
  const opts = { fqrn: 'fixture.cvmfs.io', masterKeys: [FIXTURE_MASTER], certificate: FIXTURE_CERT };
  const w = verifyWhitelist(FIXTURE_WHITELIST, { ...opts, now: new Date('2030-01-01T00:00:00Z') });
  t.equal(w.fqrn, 'fixture.cvmfs.io');
  t.equal(w.created.toISOString(), '2026-11-27T20:10:52.000Z');
  t.equal(w.expires.toISOString(), '2036-11-24T20:10:52.000Z');
  t.equal(w.pkcs7, false);
  t.equal(w.caChain, false);
  t.same(w.fingerprints.map((f) => f.toFingerprint()), [FIXTURE_FP]);
  // Byte-exact writer.
  t.ok(serializeWhitelistBody(w).equals(splitLetter(FIXTURE_WHITELIST, 'whitelist').body));
  // Valid until 2036-11-24 20:00 UTC.
  t.ok(verifyWhitelist(FIXTURE_WHITELIST, { ...opts, now: new Date('2036-11-24T19:59:59Z') }));
  throwsCode(t, () => verifyWhitelist(FIXTURE_WHITELIST, { ...opts, now: new Date('2036-11-24T20:00:00Z') }), 'E_WHITELIST', 'expiry hour');
  throwsCode(t, () => verifyWhitelist(FIXTURE_WHITELIST, { ...opts, now: new Date('2037-01-01T00:00:00Z') }), 'E_WHITELIST', '2037');
  // The master key list may hold other keys too; the repository certificate's key is not the master key.
  t.ok(verifyWhitelist(FIXTURE_WHITELIST, { ...opts, masterKeys: [master.publicKey, FIXTURE_MASTER], now: NOW }));
  throwsCode(t, () => verifyWhitelist(FIXTURE_WHITELIST, { ...opts, masterKeys: [FIXTURE_CERT.publicKey], now: NOW }), 'E_SIGNATURE', 'certificate key as master key');
  throwsCode(t, () => verifyWhitelist(FIXTURE_WHITELIST, { ...opts, fqrn: 'test.cvmfs.io', now: NOW }), 'E_WHITELIST', 'wrong name');
  throwsCode(t, () => verifyWhitelist(FIXTURE_WHITELIST, { ...opts, certificate: OTHER_CERT, now: NOW }), 'E_WHITELIST', 'other certificate');
});
