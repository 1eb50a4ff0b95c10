import t from 'tap';
import { encodeFlags, decodeFlags, Flag, Compression, type FlagFields } from '../../src/format/flags';
import { HashAlgorithm } from '../../src/format/hash';

// Typical values of §3.4 / §9, with the fields that the writer composes them from.
const TYPICAL: [string, number, FlagFields][] = [
  ['plain directory', 1, { kind: 'directory' }],
  ['nested mountpoint (in parent)', 3, { kind: 'directory', nestedMountpoint: true }],
  ['nested root (in child)', 33, { kind: 'directory', nestedRoot: true }],
  ['regular SHA-1 zlib file', 4, { kind: 'regular', algorithm: HashAlgorithm.Sha1 }],
  ['symlink', 12, { kind: 'symlink' }],
  ['special file', 20, { kind: 'special' }],
  ['chunked file', 68, { kind: 'regular', chunked: true, algorithm: HashAlgorithm.Sha1 }],
  ['external file', 132, { kind: 'regular', external: true, algorithm: HashAlgorithm.Sha1 }],
  ['RIPEMD-160 file', 260, { kind: 'regular', algorithm: HashAlgorithm.Rmd160 }],
  ['SHAKE-128 file', 516, { kind: 'regular', algorithm: HashAlgorithm.Shake128 }],
  ['uncompressed file', 2052, { kind: 'regular', algorithm: HashAlgorithm.Sha1, compression: Compression.None }],
  ['/.cvmfs in parent', 32771, { kind: 'directory', nestedMountpoint: true, hidden: true }],
  ['/.cvmfs in its own catalog', 32801, { kind: 'directory', nestedRoot: true, hidden: true }],
  ['bind mountpoint', 16385, { kind: 'directory', bindMountpoint: true }],
  ['direct I/O file', 0x10004, { kind: 'regular', directIo: true }],
  [
    'chunked RMD160 uncompressed external',
    4 | 64 | 128 | 256 | 2048,
    { kind: 'regular', chunked: true, external: true, algorithm: HashAlgorithm.Rmd160, compression: Compression.None },
  ],
];

t.test('bit constants (§3.4)', async (t) => {
  // Each constant is a bit of its own ...
  for (const [name, bit] of Object.entries(Flag)) t.ok(bit > 0 && (bit & (bit - 1)) === 0, `${name} is a single bit`);
  t.equal(new Set(Object.values(Flag)).size, Object.keys(Flag).length, 'no two constants share a bit');
  // ... which, with Dir or File, gives a typical value: that pins every one of them.
  t.equal(Flag.Dir, 1);
  t.equal(Flag.Dir | Flag.DirNestedMountpoint, 3);
  t.equal(Flag.Dir | Flag.DirNestedRoot, 33);
  t.equal(Flag.Dir | Flag.DirBindMountpoint, 16385);
  t.equal(Flag.Dir | Flag.DirNestedMountpoint | Flag.Hidden, 32771);
  t.equal(Flag.File, 4);
  t.equal(Flag.File | Flag.Link, 12);
  t.equal(Flag.File | Flag.FileSpecial, 20);
  t.equal(Flag.File | Flag.FileChunk, 68);
  t.equal(Flag.File | Flag.FileExternal, 132);
  t.equal(Flag.File | Flag.DirectIo, 0x10004);
});

t.test('encodeFlags gives the typical values', async (t) => {
  for (const [name, value, fields] of TYPICAL) t.equal(encodeFlags(fields), value, name);
  // Without an algorithm the bits stay 0, which reads as SHA-1.
  t.equal(encodeFlags({ kind: 'regular' }), 4);
  t.equal(encodeFlags({ kind: 'regular', compression: Compression.Zlib }), 4);
});

t.test('encodeFlags ignores regular-file options on other kinds', async (t) => {
  t.equal(encodeFlags({ kind: 'directory', compression: Compression.None, chunked: true, external: true, directIo: true }), 1);
  t.equal(encodeFlags({ kind: 'symlink', compression: Compression.None }), 12);
  t.equal(encodeFlags({ kind: 'special', chunked: true }), 20);
});

t.test('decodeFlags reads the typical values', async (t) => {
  t.same(decodeFlags(1), {
    nestedMountpoint: false,
    nestedRoot: false,
    bindMountpoint: false,
    hidden: false,
    chunked: false,
    external: false,
    directIo: false,
    algorithm: HashAlgorithm.Sha1,
    compression: Compression.Zlib,
  });
  t.match(decodeFlags(3), { nestedMountpoint: true, nestedRoot: false });
  t.match(decodeFlags(33), { nestedMountpoint: false, nestedRoot: true });
  t.match(decodeFlags(68), { chunked: true, external: false });
  t.match(decodeFlags(132), { chunked: false, external: true });
  t.equal(decodeFlags(260).algorithm, HashAlgorithm.Rmd160);
  t.equal(decodeFlags(516).algorithm, HashAlgorithm.Shake128);
  t.equal(decodeFlags(4).algorithm, HashAlgorithm.Sha1);
  t.equal(decodeFlags(2052).compression, Compression.None);
  t.equal(decodeFlags(4).compression, Compression.Zlib);
  t.match(decodeFlags(32771), { hidden: true, nestedMountpoint: true, nestedRoot: false });
  t.match(decodeFlags(32801), { hidden: true, nestedMountpoint: false, nestedRoot: true });
  t.match(decodeFlags(16385), { bindMountpoint: true, hidden: false });
  t.match(decodeFlags(0x10004), { directIo: true });
});

t.test('round trips', async (t) => {
  for (const [name, value, fields] of TYPICAL) {
    const decoded = decodeFlags(value);
    t.equal(encodeFlags({ kind: fields.kind, ...decoded }), value, `${name}: decode then encode`);
    t.same(decodeFlags(encodeFlags(fields)), decoded, `${name}: encode then decode`);
  }
  // Exhaustive over all option combinations of regular files.
  let n = 0;
  for (const algorithm of [HashAlgorithm.Sha1, HashAlgorithm.Rmd160, HashAlgorithm.Shake128]) {
    for (const compression of [Compression.Zlib, Compression.None]) {
      for (let bits = 0; bits < 16; bits++) {
        const fields: FlagFields = {
          kind: 'regular',
          algorithm,
          compression,
          chunked: (bits & 1) !== 0,
          external: (bits & 2) !== 0,
          directIo: (bits & 4) !== 0,
          hidden: (bits & 8) !== 0,
        };
        const decoded = decodeFlags(encodeFlags(fields));
        if (
          decoded.algorithm !== algorithm ||
          decoded.compression !== compression ||
          decoded.chunked !== fields.chunked ||
          decoded.external !== fields.external ||
          decoded.directIo !== fields.directIo ||
          decoded.hidden !== fields.hidden
        ) {
          t.fail(`round trip of ${JSON.stringify(fields)}`);
        }
        n++;
      }
    }
  }
  t.equal(n, 96);
});

t.test('invalid values are rejected', async (t) => {
  t.throws(() => encodeFlags({ kind: 'regular', algorithm: HashAlgorithm.Md5 }), { code: 'E_FORMAT' });
  // Algorithm field (bits 8–10) 3..7 → algorithm 4..8: kAny or beyond, no content hash.
  for (let a = 3; a < 8; a++) {
    t.throws(() => decodeFlags(Flag.File | (a << 8)), { code: 'E_FORMAT', name: 'FormatError' }, `algorithm bits ${a}`);
  }
  // Compression field (bits 11–13) 2..7.
  for (let c = 2; c < 8; c++) {
    t.throws(() => decodeFlags(Flag.File | (c << 11)), { code: 'E_FORMAT' }, `compression bits ${c}`);
  }
  t.doesNotThrow(() => decodeFlags(Flag.File | (2 << 8) | (1 << 11)));
});
