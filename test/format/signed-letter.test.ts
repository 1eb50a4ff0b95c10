import t from 'tap';
import { constants, generateKeyPairSync, publicDecrypt, sign, verify } from 'node:crypto';
import {
  splitLetter,
  checkLetterHash,
  signWithRsaSha1,
  verifyRsaSha1,
  signWithRawRsa,
  verifyRawRsa,
} from '../../src/format/signed-letter';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';

const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
const BODY = Buffer.from('first line\nsecond line\n');

t.test('framing: body + "--\\n" + hash line + signature to EOF', async (t) => {
  const data = signWithRsaSha1(BODY, HashAlgorithm.Sha1, keys.privateKey);
  const hex = ContentHash.compute(HashAlgorithm.Sha1, BODY).toString();
  t.ok(data.subarray(0, BODY.length).equals(BODY));
  t.equal(data.subarray(BODY.length, BODY.length + 3 + 41).toString(), `--\n${hex}\n`);
  const signature = data.subarray(BODY.length + 44);
  t.equal(signature.length, 256, 'no trailing newline after the signature');
  // RSA-PKCS1-v1.5/SHA-1 over the ASCII hex, not over the digest.
  t.ok(verify('sha1', Buffer.from(hex), keys.publicKey, signature));
  t.ok(signature.equals(sign('sha1', Buffer.from(hex), keys.privateKey)), 'PKCS#1 v1.5 is deterministic');

  const letter = splitLetter(data, 'test');
  t.ok(letter.body.equals(BODY), 'body includes the newline of the last line');
  t.equal(letter.hashText, hex);
  t.ok(letter.signature.equals(signature));
  t.ok(checkLetterHash(letter, 'test').equals(ContentHash.compute(HashAlgorithm.Sha1, BODY)));
});

t.test('raw RSA letters recover the ASCII hex by public decrypt', async (t) => {
  for (const algorithm of [HashAlgorithm.Sha1, HashAlgorithm.Rmd160, HashAlgorithm.Shake128]) {
    const data = signWithRawRsa(BODY, algorithm, keys.privateKey);
    const letter = splitLetter(data, 'test');
    const hex = ContentHash.compute(algorithm, BODY).toString();
    t.equal(letter.hashText, hex);
    const recovered = publicDecrypt({ key: keys.publicKey, padding: constants.RSA_PKCS1_PADDING }, letter.signature);
    t.equal(recovered.toString(), hex, 'no DigestInfo, no extra hashing');
    t.doesNotThrow(() => verifyRawRsa(letter, [keys.publicKey], 'test'));
  }
});

t.test('splitLetter uses the first "\\n--\\n"', async (t) => {
  const data = Buffer.concat([Buffer.from('a\n--\nhash\n'), Buffer.from('sig\n--\nmore')]);
  const letter = splitLetter(data, 'x');
  t.equal(letter.body.toString(), 'a\n');
  t.equal(letter.hashText, 'hash');
  t.equal(letter.signature.toString(), 'sig\n--\nmore');
  // Empty signature is still split (and then fails to verify).
  t.equal(splitLetter(Buffer.from('a\n--\nh\n'), 'x').signature.length, 0);
});

t.test('malformed framing', async (t) => {
  t.throws(() => splitLetter(Buffer.from('a\nb\n'), 'thing'), { code: 'E_FORMAT', message: /^thing has no signature separator/ });
  t.throws(() => splitLetter(Buffer.from('--\nabc\nsig'), 'x'), { code: 'E_FORMAT' }, 'separator must follow a newline');
  t.throws(() => splitLetter(Buffer.from('a\n--\nabc'), 'thing'), { code: 'E_FORMAT', message: /no signature hash line/ });
  // A hash line of no hash length.
  t.throws(() => checkLetterHash(splitLetter(Buffer.from('a\n--\nabc\nsig'), 'x'), 'x'), { code: 'E_SIGNATURE' });
  // A hash line of the right length that does not match the body.
  const wrong = ContentHash.compute(HashAlgorithm.Sha1, 'b\n').toString();
  t.throws(() => checkLetterHash(splitLetter(Buffer.from(`a\n--\n${wrong}\nsig`), 'x'), 'x'), {
    code: 'E_SIGNATURE',
    message: /signature check failed, the content does not match its signed hash/,
  });
  // Upper-case hex is not what the signer prints.
  const upper = ContentHash.compute(HashAlgorithm.Sha1, 'a\n').toString().toUpperCase();
  t.throws(() => checkLetterHash(splitLetter(Buffer.from(`a\n--\n${upper}\nsig`), 'x'), 'x'), { code: 'E_SIGNATURE' });
});

t.test('key inputs: KeyObject, PEM string, PEM Buffer, private key', async (t) => {
  const pubPem = keys.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const privPem = keys.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  const manifestLike = signWithRsaSha1(BODY, HashAlgorithm.Sha1, privPem);
  const whitelistLike = signWithRawRsa(BODY, HashAlgorithm.Sha1, Buffer.from(privPem));
  for (const [name, key] of [
    ['public KeyObject', keys.publicKey],
    ['public PEM string', pubPem],
    ['public PEM Buffer', Buffer.from(pubPem)],
    ['private KeyObject', keys.privateKey],
    ['private PEM string', privPem],
  ] as const) {
    t.doesNotThrow(() => verifyRsaSha1(splitLetter(manifestLike, 'm'), key, 'm'), `RSA/SHA-1 with ${name}`);
    t.doesNotThrow(() => verifyRawRsa(splitLetter(whitelistLike, 'w'), [key], 'w'), `raw RSA with ${name}`);
  }
});

t.test('wrong keys', async (t) => {
  const m = splitLetter(signWithRsaSha1(BODY, HashAlgorithm.Sha1, keys.privateKey), 'm');
  t.throws(() => verifyRsaSha1(m, other.publicKey, 'm'), { code: 'E_SIGNATURE' });
  t.throws(() => verifyRsaSha1(m, small.publicKey, 'm'), { code: 'E_SIGNATURE' });
  t.throws(() => verifyRsaSha1(m, 'not a key', 'm'), { code: 'E_SIGNATURE', message: /cannot be checked/ });

  const w = splitLetter(signWithRawRsa(BODY, HashAlgorithm.Sha1, keys.privateKey), 'w');
  t.throws(() => verifyRawRsa(w, [], 'w'), { code: 'E_SIGNATURE', message: /any of the 0 master key/ });
  t.throws(() => verifyRawRsa(w, [other.publicKey], 'w'), { code: 'E_SIGNATURE' });
  // Unusable keys (wrong size, garbage) are skipped; any matching key is enough.
  t.doesNotThrow(() => verifyRawRsa(w, [small.publicKey, 'garbage', other.publicKey, keys.publicKey], 'w'));
  t.doesNotThrow(() => verifyRawRsa(w, [keys.publicKey, other.publicKey], 'w'));
  // A manifest-style signature is not a raw RSA signature and vice versa.
  const mAsW = splitLetter(signWithRsaSha1(BODY, HashAlgorithm.Sha1, keys.privateKey), 'x');
  t.throws(() => verifyRawRsa(mAsW, [keys.publicKey], 'x'), { code: 'E_SIGNATURE' });
  t.throws(() => verifyRsaSha1(w, keys.publicKey, 'x'), { code: 'E_SIGNATURE' });
});
