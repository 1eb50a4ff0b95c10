import t from 'tap';
import { readFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import {
  parseManifest,
  parseKeyLines,
  serializeManifestBody,
  signManifest,
  verifyManifest,
  checkManifestFields,
  ManifestError,
  ROOT_PATH_MD5,
  type Manifest,
} from '../../src/format/manifest';
import { splitLetter } from '../../src/format/signed-letter';
import { parseCertificate } from '../../src/format/certificate';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { CvmfsError } from '../../src/errors';
import { throwsCode } from '../helpers/asserts';

const FIXTURE = '/work/shared/fixtures/real-small';
const FQRN = 'example.cern.ch';

// §1.3 example, body only.
const EXAMPLE = [
  'C64551dccfbe0a48de7618dd7deb290200b474759',
  'B1442336',
  'Rd41d8cd98f00b204e9800998ecf8427e',
  'D900',
  'S42',
  'Nexample.cern.ch',
  'X731cca9476eb882f5a3f24aaa38001105a0e35eb',
  'T1390301299',
]
  .map((l) => l + '\n')
  .join('');

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const otherKeys = generateKeyPairSync('rsa', { modulusLength: 2048 });

const h = (algorithm: HashAlgorithm, seed: string) => ContentHash.compute(algorithm, seed);

function fullManifest(algorithm = HashAlgorithm.Sha1): Manifest {
  return {
    rootCatalog: h(algorithm, 'root'),
    rootCatalogSize: 114688,
    rootPathHash: ROOT_PATH_MD5,
    ttl: 240,
    revision: 7,
    garbageCollectable: true,
    alternativePath: false,
    fqrn: FQRN,
    certificate: h(algorithm, 'cert'),
    history: h(algorithm, 'history'),
    publishTimestamp: 1700000000,
    metainfo: h(algorithm, 'meta'),
    reflog: h(algorithm, 'reflog'),
    microCatalog: h(algorithm, 'micro'),
    channelTips: undefined,
  };
}

t.test('parse the §1.3 example', async (t) => {
  const m = parseManifest(Buffer.from(EXAMPLE));
  t.equal(m.rootCatalog.toString(), '64551dccfbe0a48de7618dd7deb290200b474759');
  t.equal(m.rootCatalog.algorithm, HashAlgorithm.Sha1);
  t.equal(m.rootCatalogSize, 1442336);
  t.equal(m.rootPathHash, ROOT_PATH_MD5);
  t.equal(m.ttl, 900);
  t.equal(m.revision, 42);
  t.equal(m.fqrn, 'example.cern.ch');
  t.equal(m.certificate!.toString(), '731cca9476eb882f5a3f24aaa38001105a0e35eb');
  t.equal(m.publishTimestamp, 1390301299);
  t.equal(m.garbageCollectable, false);
  t.equal(m.alternativePath, false);
  t.equal(m.history, undefined);
  t.equal(m.metainfo, undefined);
  t.equal(m.reflog, undefined);
  t.equal(m.microCatalog, undefined);
  t.equal(m.channelTips, undefined);
  t.doesNotThrow(() => checkManifestFields(m, 'example.cern.ch'));
  // Written back, the example gains the always-written G and A lines.
  t.equal(
    serializeManifestBody(m).toString(),
    EXAMPLE.replace('S42\n', 'S42\nGno\nAno\n'),
  );
});

t.test('ROOT_PATH_MD5 is MD5("")', async (t) => {
  t.equal(ROOT_PATH_MD5, ContentHash.compute(HashAlgorithm.Md5, '').toString());
});

t.test('serialize order C B R D S G A L N X H T M Y', async (t) => {
  const body = serializeManifestBody(fullManifest()).toString();
  t.ok(body.endsWith('\n'));
  const lines = body.slice(0, -1).split('\n');
  t.equal(lines.map((l) => l[0]).join(''), 'CBRDSGALNXHTMY');
  t.same(lines.slice(0, 7), [
    `C${h(HashAlgorithm.Sha1, 'root')}`,
    'B114688',
    `R${ROOT_PATH_MD5}`,
    'D240',
    'S7',
    'Gyes',
    'Ano',
  ]);
  t.equal(lines[12], `M${h(HashAlgorithm.Sha1, 'meta')}`);
  // Optional lines are left out when unset; B defaults to 0, T is only written when > 0.
  const minimal: Manifest = {
    rootCatalog: h(HashAlgorithm.Sha1, 'root'),
    rootPathHash: ROOT_PATH_MD5,
    ttl: 240,
    revision: 1,
    garbageCollectable: false,
    alternativePath: true,
    publishTimestamp: 0,
  };
  t.equal(
    serializeManifestBody(minimal).toString(),
    `C${h(HashAlgorithm.Sha1, 'root')}\nB0\nR${ROOT_PATH_MD5}\nD240\nS1\nGno\nAyes\n`,
  );
  // Hashes keep their algorithm id.
  const r = serializeManifestBody(fullManifest(HashAlgorithm.Rmd160)).toString();
  t.match(r, /^C[0-9a-f]{40}-rmd160\n/);
  t.match(r, /\nX[0-9a-f]{40}-rmd160\n/);
});

t.test('serialize/parse round trip', async (t) => {
  for (const algorithm of [HashAlgorithm.Sha1, HashAlgorithm.Rmd160, HashAlgorithm.Shake128]) {
    const m = fullManifest(algorithm);
    const back = parseManifest(serializeManifestBody(m));
    t.same(back, m, `algorithm ${algorithm}`);
    t.ok(back.rootCatalog.equals(m.rootCatalog));
    t.ok(back.history!.equals(m.history!));
  }
});

t.test('the fixture body is reproduced byte for byte', async (t) => {
  const data = readFileSync(`${FIXTURE}/repo/.cvmfspublished`);
  const body = splitLetter(data, 'manifest').body;
  t.equal(serializeManifestBody(parseManifest(data)).toString('latin1'), body.toString('latin1'));
});

t.test('parser rules (§1.3)', async (t) => {
  const base = `C${h(HashAlgorithm.Sha1, 'r')}\nR${ROOT_PATH_MD5}\nD240\nS5\n`;
  // Unknown keys are ignored.
  const unknown = parseManifest(Buffer.from(`V2.12.0\nQwhatever\n${base}Kx\n`));
  t.equal(unknown.revision, 5);
  t.equal(parseKeyLines(Buffer.from(`V2.12.0\n${base}`)).get('V'), '2.12.0');
  // A last line without \n does not count.
  t.equal(parseManifest(Buffer.from(`${base}T123`)).publishTimestamp, undefined);
  t.equal(parseManifest(Buffer.from(`${base}T123\n`)).publishTimestamp, 123);
  t.throws(() => parseManifest(Buffer.from(base.slice(0, -1))), { code: 'E_FORMAT', message: /'S'/ });
  // Later duplicates win.
  t.equal(parseManifest(Buffer.from(`${base}S6\nS7\n`)).revision, 7);
  // Empty lines are skipped.
  t.equal(parseManifest(Buffer.from(`\n\n${base.replace('\n', '\n\n')}\n`)).revision, 5);
  // Parsing stops at "--".
  t.equal(parseManifest(Buffer.from(`${base}--\nS99\nT1\n`)).revision, 5);
  t.equal(parseManifest(Buffer.from(`${base}--\nS99\nT1\n`)).publishTimestamp, undefined);
  // Z values are joined with '|'; other keys are not.
  t.equal(parseManifest(Buffer.from(`Za\n${base}Zb\nZ\nZc\n`)).channelTips, 'a|b||c');
  t.equal(parseManifest(Buffer.from(`${base}Zonly\n`)).channelTips, 'only');
  // Empty values parse; G/A are booleans "yes"/other.
  t.same(parseKeyLines(Buffer.from('N\nGyes\n')), new Map([['N', ''], ['G', 'yes']]));
  t.equal(parseManifest(Buffer.from(`${base}Gyes\nAyes\n`)).garbageCollectable, true);
  t.equal(parseManifest(Buffer.from(`${base}Gyes\nAyes\n`)).alternativePath, true);
  t.equal(parseManifest(Buffer.from(`${base}GYES\n`)).garbageCollectable, false);
  // Optional empty hash lines read as absent.
  t.equal(parseManifest(Buffer.from(`${base}X\nH\n`)).certificate, undefined);
});

t.test('missing or malformed required values are FormatErrors', async (t) => {
  const lines = [`C${h(HashAlgorithm.Sha1, 'r')}`, `R${ROOT_PATH_MD5}`, 'D240', 'S5'];
  for (let i = 0; i < lines.length; i++) {
    const without = lines.filter((_, j) => j !== i).map((l) => l + '\n').join('');
    t.throws(() => parseManifest(Buffer.from(without)), { code: 'E_FORMAT', name: 'FormatError' }, `without ${lines[i]![0]}`);
  }
  const body = (c: string, d = '240', s = '5', extra = '') => Buffer.from(`C${c}\nR${ROOT_PATH_MD5}\nD${d}\nS${s}\n${extra}`);
  const c = h(HashAlgorithm.Sha1, 'r').toString();
  t.throws(() => parseManifest(body('')), { code: 'E_FORMAT' }, 'empty C');
  t.throws(() => parseManifest(body('xyz')), { code: 'E_FORMAT' }, 'C not a hash');
  t.throws(() => parseManifest(body(c + 'C')), { code: 'E_FORMAT' }, 'C with a suffix letter');
  t.throws(() => parseManifest(body(c.toUpperCase())), { code: 'E_FORMAT' }, 'upper-case C');
  t.throws(() => parseManifest(body(c, 'abc')), { code: 'E_FORMAT' }, 'D not a number');
  t.throws(() => parseManifest(body(c, '', '5')), { code: 'E_FORMAT' }, 'empty D');
  t.throws(() => parseManifest(body(c, '240', '-1')), { code: 'E_FORMAT' }, 'negative S');
  t.throws(() => parseManifest(body(c, '240', '5', 'B12x\n')), { code: 'E_FORMAT' }, 'B not a number');
  t.throws(() => parseManifest(body(c, '240', '5', 'Xnothex\n')), { code: 'E_FORMAT' }, 'X not a hash');
  t.throws(() => parseManifest(Buffer.alloc(0)), { code: 'E_FORMAT' }, 'empty file');
});

t.test('sign with a fresh RSA-2048 key and verify', async (t) => {
  const m = fullManifest();
  const data = signManifest(m, keys.privateKey);
  const body = serializeManifestBody(m);
  t.ok(data.subarray(0, body.length).equals(body));
  const letter = splitLetter(data, 'manifest');
  t.equal(letter.hashText, ContentHash.compute(HashAlgorithm.Sha1, body).toString());
  t.equal(letter.signature.length, 256);
  t.same(verifyManifest(data, FQRN, keys.publicKey), m);
  // Any key input form works.
  t.same(verifyManifest(data, FQRN, keys.publicKey.export({ type: 'spki', format: 'pem' })), m);
  t.same(verifyManifest(data, FQRN, keys.publicKey.export({ type: 'pkcs1', format: 'pem' }).toString()), m);
  t.same(verifyManifest(data, FQRN, keys.privateKey), m);
  // Signing with a PEM string gives the same bytes (PKCS#1 v1.5 is deterministic).
  t.ok(signManifest(m, keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()).equals(data));
  throwsCode(t, () => verifyManifest(data, FQRN, otherKeys.publicKey), 'E_SIGNATURE', 'wrong key');
});

t.test('rmd160 / shake128 manifests sign the hash line with the root catalog algorithm', async (t) => {
  for (const [algorithm, id] of [
    [HashAlgorithm.Rmd160, '-rmd160'],
    [HashAlgorithm.Shake128, '-shake128'],
  ] as const) {
    const m = fullManifest(algorithm);
    const data = signManifest(m, keys.privateKey);
    const letter = splitLetter(data, 'manifest');
    t.equal(letter.hashText.length, 40 + id.length);
    t.ok(letter.hashText.endsWith(id));
    t.equal(letter.hashText, ContentHash.compute(algorithm, serializeManifestBody(m)).toString());
    t.same(verifyManifest(data, FQRN, keys.publicKey), m, `${id} verifies`);
    throwsCode(t, () => verifyManifest(data, FQRN, otherKeys.publicKey), 'E_SIGNATURE', `${id} wrong key`);
    const tampered = Buffer.from(data);
    const pos = tampered.indexOf('\nS7\n') + 2;
    tampered[pos] = 0x38; // S7 → S8
    throwsCode(t, () => verifyManifest(tampered, FQRN, keys.publicKey), 'E_SIGNATURE', `${id} tampered`);
  }
});

t.test('tampering', async (t) => {
  const m = fullManifest();
  const data = signManifest(m, keys.privateKey);
  const letter = splitLetter(data, 'manifest');
  const bodyLength = letter.body.length;
  const hashStart = bodyLength + 3;
  const sigStart = hashStart + letter.hashText.length + 1;
  const HEX = '0123456789abcdef';

  // Body bytes that change a value but keep it well-formed: every hex/decimal digit of every value
  // except R (checked before the signature). Exactly E_SIGNATURE.
  let valueBytes = 0;
  let lineStart = 0;
  for (const line of letter.body.toString('latin1').split('\n').slice(0, -1)) {
    if ('CBDSTXHMYL'.includes(line[0]!)) {
      for (let i = 1; i < line.length; i++) {
        const pos = lineStart + i;
        const c = String.fromCharCode(data[pos]!);
        if (!HEX.includes(c)) continue;
        const copy = Buffer.from(data);
        copy[pos] = HEX.charCodeAt((HEX.indexOf(c) + 1) % (line[0] === 'C' || 'XHMYL'.includes(line[0]!) ? 16 : 10));
        try {
          verifyManifest(copy, FQRN, keys.publicKey);
          t.fail(`body byte ${pos} (${line[0]}) accepted`);
        } catch (e) {
          if (!CvmfsError.is(e, 'E_SIGNATURE')) t.fail(`body byte ${pos} (${line[0]}): ${String(e)}`);
        }
        valueBytes++;
      }
    }
    lineStart += line.length + 1;
  }
  t.ok(valueBytes > 200, `${valueBytes} value bytes flipped`);

  // Every body byte flipped in any way is rejected (some flips break the syntax or the N/R lines first).
  const seen = new Set<string>();
  for (let pos = 0; pos < bodyLength; pos++) {
    for (const mask of [0x01, 0x20, 0x80]) {
      const copy = Buffer.from(data);
      copy[pos] ^= mask;
      try {
        verifyManifest(copy, FQRN, keys.publicKey);
        t.fail(`body byte ${pos} ^ ${mask} accepted`);
      } catch (e) {
        if (!CvmfsError.is(e)) t.fail(`body byte ${pos}: not a CvmfsError: ${String(e)}`);
        else seen.add(e.code);
      }
    }
  }
  t.ok(seen.has('E_SIGNATURE'));
  t.same([...seen].filter((c) => !['E_SIGNATURE', 'E_FORMAT', 'E_MANIFEST'].includes(c)), []);

  // Every hash-line character → E_SIGNATURE.
  for (let pos = hashStart; pos < sigStart - 1; pos++) {
    const copy = Buffer.from(data);
    copy[pos] = HEX.charCodeAt((HEX.indexOf(String.fromCharCode(copy[pos]!)) + 1) % 16);
    throwsCode(t, () => verifyManifest(copy, FQRN, keys.publicKey), 'E_SIGNATURE', `hash line byte ${pos - hashStart}`);
  }

  // Every signature byte → E_SIGNATURE.
  let sigFailures = 0;
  for (let pos = sigStart; pos < data.length; pos++) {
    const copy = Buffer.from(data);
    copy[pos] ^= 0x01;
    try {
      verifyManifest(copy, FQRN, keys.publicKey);
      sigFailures++;
    } catch (e) {
      if (!CvmfsError.is(e, 'E_SIGNATURE')) sigFailures++;
    }
  }
  t.equal(sigFailures, 0, `all ${data.length - sigStart} signature bytes`);
  throwsCode(t, () => verifyManifest(data.subarray(0, data.length - 1), FQRN, keys.publicKey), 'E_SIGNATURE', 'truncated signature');
  throwsCode(t, () => verifyManifest(Buffer.concat([data, Buffer.from('\n')]), FQRN, keys.publicKey), 'E_SIGNATURE', 'trailing newline');
  throwsCode(t, () => verifyManifest(data.subarray(0, sigStart), FQRN, keys.publicKey), 'E_SIGNATURE', 'no signature');
  throwsCode(t, () => verifyManifest(letter.body, FQRN, keys.publicKey), 'E_FORMAT', 'unsigned body');
  // A hash line of another algorithm (not the one signed) does not match the body.
  const rehashed = Buffer.concat([
    letter.body,
    Buffer.from(`--\n${ContentHash.compute(HashAlgorithm.Rmd160, letter.body)}\n`),
    letter.signature,
  ]);
  throwsCode(t, () => verifyManifest(rehashed, FQRN, keys.publicKey), 'E_SIGNATURE', 'hash line re-computed with another algorithm');
  t.same(verifyManifest(data, FQRN, keys.publicKey), m, 'the original still verifies');
});

t.test('manifest field checks (E_MANIFEST)', async (t) => {
  const data = signManifest(fullManifest(), keys.privateKey);
  throwsCode(t, () => verifyManifest(data, 'other.cern.ch', keys.publicKey), 'E_MANIFEST', 'wrong fqrn');
  try {
    verifyManifest(data, 'other.cern.ch', keys.publicKey);
  } catch (e) {
    t.ok(e instanceof ManifestError);
    t.match((e as Error).message, /example\.cern\.ch/);
  }
  const badRoot = signManifest({ ...fullManifest(), rootPathHash: ContentHash.compute(HashAlgorithm.Md5, '/').toString() }, keys.privateKey);
  throwsCode(t, () => verifyManifest(badRoot, FQRN, keys.publicKey), 'E_MANIFEST', 'R not MD5("")');
  t.throws(() => checkManifestFields({ ...fullManifest(), rootPathHash: 'x' }, FQRN), { code: 'E_MANIFEST', message: /root mismatch/ });
  t.throws(() => checkManifestFields(fullManifest(), 'example.cern.c'), { code: 'E_MANIFEST' });
});

t.test('the real fixture manifest', async (t) => {
  const data = readFileSync(`${FIXTURE}/repo/.cvmfspublished`);
  const cert = parseCertificate(readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.crt`));
  const m = verifyManifest(data, 'fixture.cvmfs.io', cert.publicKey);
  t.equal(m.revision, 4);
  t.equal(m.rootCatalog.toString(), 'bad51bea98c35d872b30432b459e7aa1c8a42f5e');
  t.equal(m.rootCatalogSize, 114688);
  t.equal(m.ttl, 240);
  t.equal(m.fqrn, 'fixture.cvmfs.io');
  t.equal(m.garbageCollectable, false);
  t.equal(m.alternativePath, false);
  t.equal(m.certificate!.toString(), '81ef9bca4770fea8c65e361effcbfb2c4de2e3cb');
  t.equal(m.history!.toString(), '47fdefa659fbe485e8420007c0d46f0cc57e48ff');
  t.equal(m.metainfo!.toString(), '85e4f386da0d5d77c7f66cf2f58e10951f24b653');
  t.equal(m.reflog!.toString(), 'f9615894a9ae3cb77c4602a249b9ae287bffcd66');
  t.equal(m.publishTimestamp, 1795810252);
  t.equal(splitLetter(data, 'manifest').hashText, '4c6836f0e398a7d0622269e54f95a2551875bc8c');
  // The PEM itself is an acceptable key input too.
  t.same(verifyManifest(data, 'fixture.cvmfs.io', cert.pem), m);
  throwsCode(t, () => verifyManifest(data, 'other.cvmfs.io', cert.publicKey), 'E_MANIFEST', 'fixture, wrong name');
  throwsCode(t, () => verifyManifest(data, 'fixture.cvmfs.io', keys.publicKey), 'E_SIGNATURE', 'fixture, wrong key');
  // The master key is not the repository key.
  const master = readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.pub`);
  throwsCode(t, () => verifyManifest(data, 'fixture.cvmfs.io', master), 'E_SIGNATURE', 'fixture, master key');
  const tampered = Buffer.from(data);
  tampered[tampered.indexOf('\nS4\n') + 2] = 0x35; // S4 → S5
  throwsCode(t, () => verifyManifest(tampered, 'fixture.cvmfs.io', cert.publicKey), 'E_SIGNATURE', 'fixture, tampered revision');
});
