/**
 * Access profiles (src/format/access-profile.ts): serialize → parse gives the same profile back; a
 * broken profile is a FormatError (E_FORMAT) whose message names what is wrong.
 */
import t, { type Test } from 'tap';
import {
  ACCESS_PROFILE_KIND,
  ACCESS_PROFILE_VERSION,
  parseAccessProfile,
  serializeAccessProfile,
  type AccessProfile,
} from '../../src/format/access-profile';
import { ContentHash, HashAlgorithm } from '../../src/format/hash';
import { CvmfsError, FormatError } from '../../src/errors';

const sha1 = ContentHash.compute(HashAlgorithm.Sha1, 'a');
const rmd = ContentHash.compute(HashAlgorithm.Rmd160, 'b');
const shake = ContentHash.compute(HashAlgorithm.Shake128, 'c');

const PROFILE: AccessProfile = {
  created: '2026-01-02T03:04:05.000Z',
  seconds: 30,
  command: ['python3', '-c', 'import numpy; print("hi")'],
  layers: ['a'.repeat(64), 'b'.repeat(64)],
  objects: [
    { hash: sha1, suffix: '', compressed: true, size: 1234, path: '.layers/aa/usr/bin/python3' },
    { hash: rmd, suffix: 'P', compressed: false, size: 0, path: '.layers/aa/usr/lib/big.so' },
    { hash: shake, suffix: 'P', compressed: true, size: 4 << 20, path: '.layers/bb/ü n i c o d e' },
  ],
};

/** A valid profile document as a plain object, to break one field of. */
function doc(): Record<string, unknown> {
  return JSON.parse(serializeAccessProfile(PROFILE)) as Record<string, unknown>;
}

function withObject(change: (o: Record<string, unknown>) => void, index = 1): string {
  const d = doc();
  const objects = d.objects as Record<string, unknown>[];
  change(objects[index]!);
  return JSON.stringify(d);
}

function rejects(t: Test, text: string, pattern: RegExp, what: string): void {
  try {
    parseAccessProfile(text);
    t.fail(`${what}: accepted`);
  } catch (e) {
    t.ok(e instanceof FormatError && CvmfsError.is(e, 'E_FORMAT'), `${what}: FormatError (E_FORMAT)`);
    t.match((e as Error).message, pattern, `${what}: message names the problem`);
  }
}

t.test('round trip', async (t) => {
  const text = serializeAccessProfile(PROFILE);
  t.ok(text.endsWith('}\n'), 'one JSON document and a newline');
  const d = JSON.parse(text) as Record<string, unknown>;
  t.equal(d.kind, ACCESS_PROFILE_KIND);
  t.equal(d.version, ACCESS_PROFILE_VERSION);
  t.equal((d.objects as { hash: string }[])[1]!.hash, rmd.toString(), 'hashes as text with their algorithm id');
  t.match(rmd.toString(), /-rmd160$/);
  const back = parseAccessProfile(text);
  t.equal(back.created, PROFILE.created);
  t.equal(back.seconds, PROFILE.seconds);
  t.same(back.command, PROFILE.command);
  t.same(back.layers, PROFILE.layers);
  t.equal(back.objects.length, 3);
  for (const [i, o] of PROFILE.objects.entries()) {
    const b = back.objects[i]!;
    t.ok(b.hash instanceof ContentHash && b.hash.equals(o.hash), `object ${i}: same hash (${o.hash.toString()})`);
    t.same({ suffix: b.suffix, compressed: b.compressed, size: b.size, path: b.path }, { suffix: o.suffix, compressed: o.compressed, size: o.size, path: o.path }, `object ${i}: same fields`);
  }
  t.equal(serializeAccessProfile(back), text, 'serializing the parsed profile gives the same text');

  const empty = parseAccessProfile(serializeAccessProfile({ ...PROFILE, objects: [] }));
  t.same(empty.objects, [], 'an empty profile is fine');
  const bare = parseAccessProfile(JSON.stringify({ version: 1, kind: ACCESS_PROFILE_KIND, objects: [] }));
  t.same({ created: bare.created, seconds: bare.seconds, command: bare.command, layers: bare.layers }, { created: '', seconds: 0, command: [], layers: [] }, 'optional fields default');
});

t.test('rejects wrong kind or version', async (t) => {
  rejects(t, JSON.stringify({ ...doc(), kind: 'something else' }), /not an access profile \(kind "something else"\)/, 'wrong kind');
  const noKind = doc();
  delete noKind.kind;
  rejects(t, JSON.stringify(noKind), /not an access profile \(kind undefined\)/, 'no kind');
  rejects(t, JSON.stringify({ ...doc(), version: 2 }), /access profile version 2 is not 1/, 'version 2');
  rejects(t, JSON.stringify({ ...doc(), version: '1' }), /access profile version "1" is not 1/, 'version as a string');
  const noObjects = doc();
  delete noObjects.objects;
  rejects(t, JSON.stringify(noObjects), /access profile has no objects list/, 'no objects');
  rejects(t, JSON.stringify({ ...doc(), objects: {} }), /no objects list/, 'objects not a list');
});

t.test('rejects a bad hash', async (t) => {
  rejects(t, withObject((o) => (o.hash = 'xyz')), /access profile object 1: "xyz" is not a content hash/, 'not hex');
  rejects(t, withObject((o) => (o.hash = sha1.toString().slice(0, 39))), /object 1: ".*" is not a content hash/, 'too short');
  rejects(t, withObject((o) => (o.hash = `${sha1.toString()}P`)), /object 1: ".*P" is not a content hash/, 'with a suffix letter');
  rejects(t, withObject((o) => (o.hash = sha1.toString().toUpperCase())), /is not a content hash/, 'upper case');
  rejects(t, withObject((o) => delete o.hash), /access profile object 1: hash is missing/, 'missing');
  rejects(t, withObject((o) => (o.hash = 42)), /object 1: hash is missing/, 'a number');
});

t.test('rejects a bad suffix', async (t) => {
  rejects(t, withObject((o) => (o.suffix = 'C')), /access profile object 1: suffix "C" is not "" or "P"/, 'catalog suffix');
  rejects(t, withObject((o) => (o.suffix = 'p')), /suffix "p" is not/, 'lower case p');
  rejects(t, withObject((o) => delete o.suffix), /object 1: suffix undefined is not/, 'missing');
  rejects(t, withObject((o) => (o.suffix = null)), /suffix null is not/, 'null');
});

t.test('rejects a bad size or compressed flag', async (t) => {
  rejects(t, withObject((o) => (o.size = -1)), /access profile object 1: size is not a byte count/, 'negative size');
  rejects(t, withObject((o) => (o.size = 1.5)), /object 1: size is not a byte count/, 'fractional size');
  rejects(t, withObject((o) => (o.size = '12')), /size is not a byte count/, 'size as a string');
  rejects(t, withObject((o) => (o.size = 2 ** 60)), /size is not a byte count/, 'unsafe integer');
  rejects(t, withObject((o) => delete o.size), /size is not a byte count/, 'missing size');
  rejects(t, withObject((o) => (o.compressed = 'yes')), /object 1: compressed is not a boolean/, 'compressed not boolean');
  rejects(t, withObject((o) => (o.size = -5), 0), /access profile object 0:/, 'the message counts from 0');
});

t.test('rejects what is not JSON, or not an object', async (t) => {
  rejects(t, '', /access profile is not JSON/, 'empty text');
  rejects(t, '{"version": 1,', /access profile is not JSON: /, 'cut short');
  rejects(t, 'version=1\n', /is not JSON/, 'not JSON at all');
  rejects(t, '[]', /access profile is not a JSON object/, 'an array');
  rejects(t, 'null', /not a JSON object/, 'null');
  rejects(t, '"profile"', /not a JSON object/, 'a string');
  const d = doc();
  (d.objects as unknown[])[2] = 'not an object';
  rejects(t, JSON.stringify(d), /access profile object 2 is not an object/, 'an entry that is not an object');
  (d.objects as unknown[])[2] = null;
  rejects(t, JSON.stringify(d), /access profile object 2 is not an object/, 'a null entry');
});
