/**
 * Fuzzing `.cvmfswhitelist` (§1.5): mutated whitelists through parseWhitelist and verifyWhitelist give a
 * whitelist or a CvmfsError, never another exception. verifyWhitelist accepts a mutant only when its signed
 * body, hash line and signature are the original's; a body re-signed with the master key may be accepted
 * only for the right repository, unexpired, without PKCS#7, listing the certificate and not blacklisting it.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  createWhitelist,
  isExpired,
  parseWhitelist,
  signWhitelist,
  verifyWhitelist,
  type VerifyWhitelistOptions,
  type Whitelist,
} from '../../src/format/whitelist';
import { signWithRawRsa, splitLetter, type SignedLetter } from '../../src/format/signed-letter';
import { parseCertificate } from '../../src/format/certificate';
import { HashAlgorithm } from '../../src/format/hash';
import { check, fuzzConfig, fuzzLoop, mutate, mutateLines, show, typed, Tally, TEXT_TOKENS, type Rng } from '../helpers/fuzz';

const FIXTURE = resolve(__dirname, '../../../shared/fixtures/real-small');
const cfg = fuzzConfig(60); // generous: CI runs two test files at once on two cores
const NOW = new Date('2030-01-01T12:00:00Z');
const CERT = parseCertificate(readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.crt`));
const FP = CERT.fingerprint(HashAlgorithm.Sha1);

interface Source {
  readonly name: string;
  readonly data: Buffer;
  readonly letter: SignedLetter;
  readonly options: VerifyWhitelistOptions;
  readonly masterKey?: KeyObject;
}

function source(name: string, data: Buffer, fqrn: string, master: KeyObject, masterKey?: KeyObject): Source {
  return {
    name,
    data,
    letter: splitLetter(data, 'whitelist'),
    options: { fqrn, masterKeys: [master], certificate: CERT, now: NOW },
    masterKey,
  };
}

const fixture = source(
  'fixture',
  readFileSync(`${FIXTURE}/repo/.cvmfswhitelist`),
  'fixture.cvmfs.io',
  createPublicKey(readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.pub`)),
);
const master = generateKeyPairSync('rsa', { modulusLength: 2048 });
const base: Whitelist = createWhitelist({ fqrn: 'fuzz.cvmfs.io', certificate: CERT, now: NOW, validDays: 30 });
const generated = source(
  'generated',
  signWhitelist({ ...base, caChain: true, fingerprints: [CERT.fingerprint(HashAlgorithm.Rmd160), ...base.fingerprints] }, master.privateKey, HashAlgorithm.Shake128),
  'fuzz.cvmfs.io',
  master.publicKey,
  master.privateKey,
);
const SOURCES = [fixture, generated];
const ALL = SOURCES.map((s) => s.data);
const TOKENS = [...TEXT_TOKENS, '20300101120000', 'E20300101130000', 'E99991231235959', '00000000000000', FP.toFingerprint(), `${FP.toFingerprint()} # comment`];

for (const s of SOURCES) t.ok(verifyWhitelist(s.data, s.options), `the ${s.name} whitelist verifies`);

const same = (a: SignedLetter, b: SignedLetter) =>
  a.body.equals(b.body) && a.hashText === b.hashText && a.signature.equals(b.signature);

function mutant(rng: Rng, s: Source): { data: Buffer; resigned: boolean } {
  const { body, hashText } = s.letter;
  const hashStart = body.length + 3;
  const sigStart = hashStart + hashText.length + 1;
  switch (rng.int(s.masterKey ? 7 : 5)) {
    case 0:
      return { data: mutate(rng, s.data, { others: ALL, tokens: TOKENS }), resigned: false };
    case 1:
      return { data: mutate(rng, s.data, { region: [0, body.length], tokens: TOKENS }), resigned: false };
    case 2:
      return { data: mutate(rng, s.data, { region: [hashStart, sigStart - 1] }), resigned: false };
    case 3:
      return { data: mutate(rng, s.data, { region: [sigStart, s.data.length] }), resigned: false };
    case 4:
      return {
        data: Buffer.concat([Buffer.from(mutateLines(rng, body.toString('latin1'), TOKENS), 'latin1'), s.data.subarray(body.length)]),
        resigned: false,
      };
    default: {
      const text = rng.bool(0.7) ? mutateLines(rng, body.toString('latin1'), TOKENS) : mutate(rng, body, { tokens: TOKENS }).toString('latin1');
      let newBody = Buffer.from(text, 'latin1');
      if (!text.endsWith('\n')) newBody = Buffer.concat([newBody, Buffer.from('\n')]);
      const alg = rng.pick([HashAlgorithm.Sha1, HashAlgorithm.Rmd160, HashAlgorithm.Shake128]);
      return { data: signWithRawRsa(newBody, alg, s.masterKey!), resigned: true };
    }
  }
}

function saneWhitelist(w: Whitelist, what: string): void {
  check(!Number.isNaN(w.created.getTime()) && !Number.isNaN(w.expires.getTime()), `${what}: a date is invalid`);
  check(typeof w.fqrn === 'string' && Array.isArray(w.fingerprints), `${what}: malformed result`);
}

for (const s of SOURCES) {
  const tally = new Tally();
  fuzzLoop(t, cfg, `whitelist/${s.name}`, (rng) => {
    const { data, resigned } = mutant(rng, s);
    const blacklisted = rng.bool(0.1);
    const options = blacklisted ? { ...s.options, blacklist: [rng.bool() ? FP : CERT.fingerprint(HashAlgorithm.Rmd160)] } : s.options;
    const what = `${s.name} mutant (${show(data)})`;
    const parsed = typed(`parseWhitelist on ${what}`, () => parseWhitelist(data));
    if (parsed.ok) saneWhitelist(parsed.value, `parseWhitelist on ${what}`);
    tally.outcome('parse', parsed);
    const verified = typed(`verifyWhitelist on ${what}`, () => verifyWhitelist(data, options));
    tally.outcome(resigned ? 'verify-resigned' : 'verify', verified);
    if (!verified.ok) return;
    const w = verified.value;
    check(parsed.ok, `verifyWhitelist accepted what parseWhitelist refused: ${what}`);
    check(!blacklisted, `verifyWhitelist accepted a blacklisted certificate: ${what}`);
    check(w.fqrn === s.options.fqrn && !w.pkcs7 && !isExpired(w, NOW), `verifyWhitelist accepted a wrong name, PKCS#7 or expired list: ${what}`);
    check(
      w.fingerprints.some((fp) => CERT.fingerprint(fp.algorithm).equals(fp)),
      `verifyWhitelist accepted a list without the certificate: ${what}`,
    );
    saneWhitelist(w, `verifyWhitelist on ${what}`);
    if (!resigned) check(same(splitLetter(data, 'whitelist'), s.letter), `verifyWhitelist accepted changed signed content: ${what}`);
  });
  t.comment(`${s.name} outcomes: ${tally}`);
}
