/**
 * Fuzzing `.cvmfspublished` (§1.3): mutated manifests through parseManifest and verifyManifest give a
 * manifest or a CvmfsError, never another exception. verifyManifest accepts a mutant only when its
 * signed body, hash line and signature are the original's; a body re-signed with the trusted key may be
 * accepted only with the right name and root path hash, and with sane numbers.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import {
  parseManifest,
  signManifest,
  verifyManifest,
  ROOT_PATH_MD5,
  type Manifest,
} from '../../src/format/manifest';
import { signWithRsaSha1, splitLetter, type SignedLetter } from '../../src/format/signed-letter';
import { parseCertificate } from '../../src/format/certificate';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { check, fuzzConfig, fuzzLoop, mutate, mutateLines, show, typed, Tally, type Rng } from '../helpers/fuzz';

const FIXTURE = resolve(__dirname, '../../../shared/fixtures/real-small');
const cfg = fuzzConfig(60); // generous: CI runs two test files at once on two cores

interface Source {
  readonly name: string;
  readonly data: Buffer;
  readonly letter: SignedLetter;
  readonly fqrn: string;
  readonly publicKey: KeyObject;
  /** Present when we hold the signing key: mutated bodies can be re-signed. */
  readonly privateKey?: KeyObject;
}

function source(name: string, data: Buffer, fqrn: string, publicKey: KeyObject, privateKey?: KeyObject): Source {
  return { name, data, letter: splitLetter(data, 'manifest'), fqrn, publicKey, privateKey };
}

const fixture = source(
  'fixture',
  readFileSync(`${FIXTURE}/repo/.cvmfspublished`),
  'fixture.cvmfs.io',
  parseCertificate(readFileSync(`${FIXTURE}/keys/fixture.cvmfs.io.crt`)).publicKey,
);

const key = generateKeyPairSync('rsa', { modulusLength: 2048 });
const hash = (alg: HashAlgorithm, s: string) => ContentHash.compute(alg, s);
const full: Manifest = {
  rootCatalog: hash(HashAlgorithm.Rmd160, 'root'),
  rootCatalogSize: 114688,
  rootPathHash: ROOT_PATH_MD5,
  ttl: 240,
  revision: 17,
  garbageCollectable: true,
  alternativePath: false,
  fqrn: 'fuzz.cvmfs.io',
  certificate: hash(HashAlgorithm.Rmd160, 'cert'),
  history: hash(HashAlgorithm.Rmd160, 'history'),
  publishTimestamp: 1700000000,
  metainfo: hash(HashAlgorithm.Rmd160, 'meta'),
  reflog: hash(HashAlgorithm.Rmd160, 'reflog'),
  microCatalog: hash(HashAlgorithm.Rmd160, 'micro'),
};
const generated = source('generated', signManifest(full, key.privateKey), 'fuzz.cvmfs.io', key.publicKey, key.privateKey);
const minimal = source(
  'minimal',
  signManifest(
    { rootCatalog: hash(HashAlgorithm.Shake128, 'r'), rootPathHash: ROOT_PATH_MD5, ttl: 0, revision: 0, garbageCollectable: false, alternativePath: false, fqrn: 'fuzz.cvmfs.io' },
    key.privateKey,
  ),
  'fuzz.cvmfs.io',
  key.publicKey,
  key.privateKey,
);
const SOURCES = [fixture, generated, minimal];
const ALL = SOURCES.map((s) => s.data);

t.ok(verifyManifest(fixture.data, fixture.fqrn, fixture.publicKey), 'the fixture manifest verifies');
t.ok(verifyManifest(generated.data, generated.fqrn, generated.publicKey), 'the generated manifest verifies');
t.ok(verifyManifest(minimal.data, minimal.fqrn, minimal.publicKey), 'the minimal manifest verifies');

const same = (a: SignedLetter, b: SignedLetter) =>
  a.body.equals(b.body) && a.hashText === b.hashText && a.signature.equals(b.signature);

function saneManifest(m: Manifest, what: string): void {
  for (const [k, v] of Object.entries({ ttl: m.ttl, revision: m.revision, size: m.rootCatalogSize, ts: m.publishTimestamp })) {
    check(v === undefined || Number.isSafeInteger(v), `${what}: ${k} ${v} is not a safe integer`);
  }
  check(m.rootCatalog instanceof ContentHash, `${what}: no root catalog hash`);
}

/** A mutant, and whether it is signed by the trusted key (so verification may accept it). */
function mutant(rng: Rng, s: Source): { data: Buffer; resigned: boolean } {
  const { body, hashText } = s.letter;
  const hashStart = body.length + 3;
  const sigStart = hashStart + hashText.length + 1;
  switch (rng.int(s.privateKey ? 7 : 5)) {
    case 0: // anywhere
      return { data: mutate(rng, s.data, { others: ALL }), resigned: false };
    case 1:
      return { data: mutate(rng, s.data, { region: [0, body.length] }), resigned: false };
    case 2:
      return { data: mutate(rng, s.data, { region: [hashStart, sigStart - 1] }), resigned: false };
    case 3:
      return { data: mutate(rng, s.data, { region: [sigStart, s.data.length] }), resigned: false };
    case 4: // line edits of the body, old hash and signature kept
      return {
        data: Buffer.concat([Buffer.from(mutateLines(rng, body.toString('latin1')), 'latin1'), s.data.subarray(body.length)]),
        resigned: false,
      };
    default: {
      // a new body signed with the trusted key: the parser and the field checks must hold on their own
      const text = rng.bool(0.7) ? mutateLines(rng, body.toString('latin1')) : mutate(rng, body).toString('latin1');
      let newBody = Buffer.from(text, 'latin1');
      if (!newBody.toString('latin1').endsWith('\n')) newBody = Buffer.concat([newBody, Buffer.from('\n')]);
      const alg = rng.pick([HashAlgorithm.Sha1, HashAlgorithm.Rmd160, HashAlgorithm.Shake128]);
      return { data: signWithRsaSha1(newBody, alg, s.privateKey!), resigned: true };
    }
  }
}

for (const s of SOURCES) {
  const tally = new Tally();
  fuzzLoop(t, cfg, `manifest/${s.name}`, (rng) => {
    const { data, resigned } = mutant(rng, s);
    const what = `${s.name} mutant (${show(data)})`;
    const parsed = typed(`parseManifest on ${what}`, () => parseManifest(data));
    if (parsed.ok) saneManifest(parsed.value, `parseManifest on ${what}`);
    tally.outcome('parse', parsed);
    const verified = typed(`verifyManifest on ${what}`, () => verifyManifest(data, s.fqrn, s.publicKey));
    tally.outcome(resigned ? 'verify-resigned' : 'verify', verified);
    if (!verified.ok) return;
    check(parsed.ok, `verifyManifest accepted what parseManifest refused: ${what}`);
    const m = verified.value;
    check(m.fqrn === s.fqrn && m.rootPathHash === ROOT_PATH_MD5, `verifyManifest accepted a wrong name or root: ${what}`);
    saneManifest(m, `verifyManifest on ${what}`);
    if (!resigned) {
      check(same(splitLetter(data, 'manifest'), s.letter), `verifyManifest accepted changed signed content: ${what}`);
    }
  });
  t.comment(`${s.name} outcomes: ${tally}`);
}
