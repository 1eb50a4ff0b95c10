import t from 'tap';
import {
  chunkBoundaries,
  DEFAULT_CHUNK_SIZES,
  Xor32Chunker,
  xor32Threshold,
  type ChunkSizes,
} from '../../src/format/chunker';
import { Prng } from '../helpers/prng';

// Expected cut marks from upstream cvmfs test/unittests/t_chunk_detectors.cc, test Xor32ChunkDetectorSlow.
const UPSTREAM_MARKS = [
  742752, 2790752, 3521796, 4188893, 4940543, 5884591, 7131564, 8520617, 9159233, 9999783, 11202120, 11778185,
  13781177, 15331152, 16497018, 17410317, 19391774, 20086877, 20763223, 21346744, 22075173, 22705444, 23557037,
  24461261, 25118505, 25663669, 26333579, 27763062, 28369273, 29586929, 30171732, 30794768, 31811364, 32408599,
  33689064, 34678262, 36410687, 37096663, 37682005, 38269900, 39931592, 41347607, 42701845, 44350286, 44925654,
  45893350, 47770173, 48332690, 49303250, 49861260, 50727512, 51578678, 52176356, 52949949, 54228704, 54843051,
  55796214, 56694940, 58092222, 59294196, 60381155, 61509784, 62850141, 63505051, 64168046, 64925423, 66252082,
  67232078, 68005369, 68615410, 69454686, 70276575, 71308716, 73356716, 73946267, 74775664, 75509293, 77487075,
  78606807, 79732133, 80467148, 81185709, 82588680, 83547234, 84220971, 85992169, 86979928, 87845294, 88392648,
  89241756, 89980293, 91129752, 91891024, 92493793, 93792263, 94393106, 95782791, 96813116, 97723756, 98618891,
  99707336, 101755336, 103405168, 104269441,
];
const UPSTREAM_SIZES: ChunkSizes = { min: 512000, avg: 1024000, max: 2048000 };
const UPSTREAM_DATA_SIZE = 104857600; // 100 MiB

/** The §4.3 rules written out as plainly as possible, as an oracle for the optimised chunker. */
function referenceMarks(data: Uint8Array, { min, avg, max }: ChunkSizes): number[] {
  const threshold = Math.floor(0xffffffff / avg);
  const magic = 0x7fffffff;
  const marks: number[] = [];
  for (let s = 0; ; ) {
    let x = 0;
    for (let i = s + min - 32; i < s + min && i < data.length; i++) x = ((x << 1) ^ data[i]) >>> 0;
    let cut = -1;
    for (let i = s + min; i < Math.min(s + max, data.length); i++) {
      x = ((x << 1) ^ data[i]) >>> 0;
      if ((x - magic) >>> 0 < threshold || (magic - x) >>> 0 < threshold) {
        cut = i;
        break;
      }
    }
    // A hard cut exactly at the end of the data would leave an empty last chunk: the chunker never reports it.
    if (cut < 0 && s + max < data.length) cut = s + max;
    if (cut < 0) return marks;
    marks.push(cut);
    s = cut;
  }
}

/** Pushes `data` in pieces of the given sizes (cycled), collecting all marks. */
function streamMarks(data: Uint8Array, sizes: ChunkSizes, pieceSize: () => number): number[] {
  const chunker = new Xor32Chunker(sizes);
  const marks: number[] = [];
  let last = -1;
  for (let offset = 0; offset < data.length; ) {
    const piece = data.subarray(offset, offset + pieceSize());
    const found = chunker.push(piece);
    offset += piece.length;
    for (const m of found) {
      // Every mark lies inside the piece that revealed it, ascending.
      if (m <= last || m < offset - piece.length || m >= offset) throw new Error(`mark ${m} outside its piece`);
      last = m;
    }
    marks.push(...found);
  }
  if (chunker.position !== data.length) throw new Error('position does not count the pushed bytes');
  return marks;
}

function chunkSizesOf(marks: number[], length: number): number[] {
  const edges = [0, ...marks, length];
  return edges.slice(1).map((e, i) => e - edges[i]);
}

/** Random bytes with runs of zeros, so that both content-defined and hard cuts occur. */
function mixedData(length: number, seed: number): Uint8Array {
  const rng = new Prng(seed);
  const data = rng.fillBytes(new Uint8Array(length));
  for (let run = 0; run < length / 2000; run++) {
    const at = rng.next(length);
    data.fill(0, at, at + rng.next(3000));
  }
  return data;
}

t.test('thresholds and defaults', async (t) => {
  t.same(DEFAULT_CHUNK_SIZES, { min: 4194304, avg: 8388608, max: 16777216 });
  t.equal(new Xor32Chunker(DEFAULT_CHUNK_SIZES).threshold, 511);
  t.equal(xor32Threshold(8388608), 511);
  t.equal(xor32Threshold(UPSTREAM_SIZES.avg), 4194);
});

t.test('chunk sizes are validated', async (t) => {
  const bad: ChunkSizes[] = [
    { min: 31, avg: 64, max: 128 }, // below the window
    { min: 64, avg: 64, max: 128 },
    { min: 64, avg: 128, max: 128 },
    { min: 64, avg: 32, max: 128 },
    { min: 64.5, avg: 100, max: 128 },
    { min: 64, avg: NaN, max: 128 },
  ];
  for (const sizes of bad) t.throws(() => new Xor32Chunker(sizes), { code: 'E_FORMAT' }, JSON.stringify(sizes));
  t.doesNotThrow(() => new Xor32Chunker({ min: 32, avg: 33, max: 34 }));
});

t.test('test data generator matches the C++ Prng', async (t) => {
  // First bytes for seed 42, cross-checked against the C++ formula compiled with gcc.
  t.same([...new Prng(42).fillBytes(new Uint8Array(8))], [145, 57, 105, 161, 174, 6, 5, 39]);
  const slow = new Prng(42);
  const fast = new Prng(42).fillBytes(new Uint8Array(5000));
  t.same([...fast], Array.from({ length: 5000 }, () => slow.next(256)), 'limb arithmetic agrees with BigInt');

  // A state of 2^64 − 1 converts to the double 2^64, giving 256 % 256 = 0, not 255.
  const a = 6364136223846793005n;
  const c = 1442695040888963407n;
  let inverse = 1n; // a⁻¹ mod 2^64 by Newton iteration
  for (let i = 0; i < 6; i++) inverse = BigInt.asUintN(64, inverse * (2n - a * inverse));
  const seed = BigInt.asUintN(64, (2n ** 64n - 1n - c) * inverse);
  t.equal(new Prng(seed).next(256), 0);
  t.equal(new Prng(seed).fillBytes(new Uint8Array(1))[0], 0);
});

t.test('upstream test vector: 100 MiB of Prng(42) data', async (t) => {
  const data = new Prng(42).fillBytes(new Uint8Array(UPSTREAM_DATA_SIZE));

  const started = performance.now();
  const whole = chunkBoundaries(data, UPSTREAM_SIZES);
  const ms = performance.now() - started;
  t.comment(`whole buffer chunked in ${ms.toFixed(0)} ms (${((data.length / ms) * 1e-3).toFixed(0)} MB/s)`);
  t.same(whole, UPSTREAM_MARKS);

  // The buffer sizes the upstream test feeds, then uneven pieces (empty and tiny ones included).
  for (const size of [102400, 512000, 1024000, 10485760]) {
    t.same(streamMarks(data, UPSTREAM_SIZES, () => size), UPSTREAM_MARKS, `pieces of ${size} bytes`);
  }
  const rng = new Prng(7);
  const uneven = () => (rng.next(4) === 0 ? rng.next(64) : 1 + rng.next(3_000_000));
  t.same(streamMarks(data, UPSTREAM_SIZES, uneven), UPSTREAM_MARKS, 'uneven pieces');

  const sizes = chunkSizesOf(UPSTREAM_MARKS, data.length);
  t.ok(sizes.every((s) => s >= UPSTREAM_SIZES.min && s <= UPSTREAM_SIZES.max));
  t.ok(sizes.some((s) => s === UPSTREAM_SIZES.max), 'the vector contains hard cuts');
});

t.test('cut marks do not depend on how the stream is split', async (t) => {
  const data = mixedData(200_000, 1);
  const all: ChunkSizes[] = [
    { min: 32, avg: 64, max: 128 },
    { min: 64, avg: 256, max: 1024 },
    { min: 100, avg: 1000, max: 3000 },
    { min: 4000, avg: 9000, max: 20000 },
  ];
  for (const sizes of all) {
    const name = JSON.stringify(sizes);
    const expected = referenceMarks(data, sizes);
    t.ok(expected.length > 10, `${name}: enough cuts to be meaningful`);
    t.same(chunkBoundaries(data, sizes), expected, `${name}: whole buffer`);
    t.same(streamMarks(data, sizes, () => 1), expected, `${name}: 1-byte pieces`);
    const rng = new Prng(sizes.min);
    t.same(streamMarks(data, sizes, () => rng.next(80)), expected, `${name}: pieces of 0–79 bytes`);
    t.same(streamMarks(data, sizes, () => 1 + rng.next(5000)), expected, `${name}: pieces up to 5000 bytes`);
    // Pieces ending exactly on a mark, on the end of a window warm-up, and on a hard-cut limit.
    const edges = [...expected.flatMap((m) => [m, m + sizes.min - 32, m + sizes.min, m + sizes.max]), data.length];
    const ends = [...new Set(edges.filter((e) => e <= data.length))].sort((a, b) => a - b);
    let at = 0;
    let k = 0;
    const toEdge = () => {
      const size = ends[k++] - at;
      at += size;
      return size;
    };
    t.same(streamMarks(data, sizes, toEdge), expected, `${name}: pieces ending on edges`);

    const chunkSizes = chunkSizesOf(expected, data.length);
    t.ok(
      chunkSizes.slice(0, -1).every((s) => s >= sizes.min && s <= sizes.max),
      `${name}: all chunks but the last within [min, max]`,
    );
    t.ok(chunkSizes[chunkSizes.length - 1] > 0, `${name}: the last chunk is not empty`);
  }
});

t.test('data no longer than min is never cut', async (t) => {
  const sizes = { min: 1000, avg: 2000, max: 4000 };
  for (const length of [0, 1, 31, 32, 999, 1000]) {
    const data = new Prng(length).fillBytes(new Uint8Array(length));
    t.same(chunkBoundaries(data, sizes), [], `${length} bytes`);
  }
  t.same(chunkBoundaries(new Uint8Array(3 * 1024 * 1024), DEFAULT_CHUNK_SIZES), []);
});

t.test('constant data is hard-cut at max', async (t) => {
  const sizes = { min: 1000, avg: 2000, max: 4000 };
  t.same(chunkBoundaries(new Uint8Array(5 * 4000 + 123), sizes), [4000, 8000, 12000, 16000, 20000]);
  // Ending exactly on a hard cut: the last chunk is the full max-sized one, no empty chunk follows.
  t.same(chunkBoundaries(new Uint8Array(4 * 4000), sizes), [4000, 8000, 12000]);

  // Streamed in max-sized pieces, a hard cut is reported with the first byte after it.
  const chunker = new Xor32Chunker(sizes);
  const piece = new Uint8Array(4000);
  t.same(chunker.push(piece), []);
  t.same(chunker.push(piece), [4000]);
  t.same(chunker.push(piece), [8000]);
  t.same(chunker.push(new Uint8Array(0)), []);
  t.same(chunker.push(new Uint8Array(1)), [12000]);
  t.equal(chunker.position, 12001);
  t.equal(chunker.lastCut, 12000);

  const big = new Uint8Array(DEFAULT_CHUNK_SIZES.max * 3);
  t.same(chunkBoundaries(big, DEFAULT_CHUNK_SIZES), [DEFAULT_CHUNK_SIZES.max, 2 * DEFAULT_CHUNK_SIZES.max]);
});
