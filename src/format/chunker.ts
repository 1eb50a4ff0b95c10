/**
 * xor32 content-defined chunking (facts sheet §4.3): where the publisher cuts large files into
 * chunks. Pure and incremental — the stream is pushed piece by piece and never buffered, and the
 * cut marks do not depend on how it is split into pieces.
 */
import { FormatError } from '../errors';

export interface ChunkSizes {
  min: number;
  avg: number;
  max: number;
}

/** Server defaults `CVMFS_{MIN,AVG,MAX}_CHUNK_SIZE` (§4.2). */
export const DEFAULT_CHUNK_SIZES: ChunkSizes = Object.freeze({
  min: 4 * 1024 * 1024,
  avg: 8 * 1024 * 1024,
  max: 16 * 1024 * 1024,
});

/** The rolling value depends only on the last WINDOW bytes. */
const WINDOW = 32;
const MAGIC = 0x7fffffff;

/** floor(UINT32_MAX / avg): 511 for the default 8 MiB. */
export function xor32Threshold(avg: number): number {
  return Math.floor(0xffffffff / avg);
}

function validate(sizes: ChunkSizes): void {
  const { min, avg, max } = sizes;
  for (const [name, value] of Object.entries({ min, avg, max })) {
    if (!Number.isSafeInteger(value)) throw new FormatError(`chunk size ${name} must be an integer, got ${value}`);
  }
  if (min < WINDOW) throw new FormatError(`minimal chunk size ${min} is below the xor32 window of ${WINDOW} bytes`);
  if (!(min < avg && avg < max)) {
    throw new FormatError(`chunk sizes must satisfy min < avg < max, got ${min} / ${avg} / ${max}`);
  }
}

/**
 * Finds the cut marks of one stream. A cut mark is the offset of the first byte of a new chunk,
 * so the chunks are [0, m1), [m1, m2), …, [mk, end): all but the last lie within [min, max].
 *
 * A mark is reported only once the byte it points at has been pushed, so every mark is below
 * `position` and every chunk it starts is non-empty. In particular a hard cut at `s + max` waits
 * for byte `s + max`; if the stream ends exactly there, that max-sized piece is the last chunk
 * (never an empty trailing chunk). At end of stream nothing is pending: the remainder
 * [lastCut, position) is the last chunk.
 */
export class Xor32Chunker {
  readonly min: number;
  readonly max: number;
  readonly threshold: number;
  private readonly low: number; // (MAGIC − threshold + 1) mod 2^32, as int32
  private readonly span: number; // 2 · threshold − 1
  private x = 0; // rolling value, as int32
  private start = 0; // offset of the current chunk's first byte (the last cut mark)
  private next = 0; // offset of the next byte the rolling value needs
  private pushed = 0;

  constructor(sizes: ChunkSizes) {
    validate(sizes);
    this.min = sizes.min;
    this.max = sizes.max;
    this.threshold = xor32Threshold(sizes.avg);
    // |int32(x − MAGIC)| < T  ⇔  (x − MAGIC + T − 1) mod 2^32 < 2T − 1: one subtraction, one compare.
    this.low = (MAGIC - this.threshold + 1) | 0;
    this.span = 2 * this.threshold - 1;
  }

  /** Bytes pushed so far. */
  get position(): number {
    return this.pushed;
  }

  /** Offset of the last cut mark (0 before the first): where the chunk being filled starts. */
  get lastCut(): number {
    return this.start;
  }

  /** Feeds the next piece of the stream; returns the absolute offsets of the cut marks found in it, ascending. */
  push(data: Uint8Array): number[] {
    const marks: number[] = [];
    const base = this.pushed;
    const end = base + data.length;
    const { min, max, low, span } = this;
    let x = this.x;
    let start = this.start;
    let next = this.next;

    for (;;) {
      // Bytes before the window that ends at start + min cannot influence the first test: skip them.
      const warm = start + min - WINDOW;
      if (next < warm) next = warm;
      const scan = start + min;
      let stop = scan < end ? scan : end;
      for (; next < stop; next++) x = (x << 1) ^ data[next - base];
      if (next < scan) break; // still warming up; continue with the next piece

      const hard = start + max;
      if (next === hard) {
        if (hard === end) break; // the hard cut is reported with the next byte, if any
        marks.push(hard);
        start = next = hard;
        x = 0;
        continue;
      }

      stop = hard < end ? hard : end;
      let cut = -1;
      for (let i = next - base, n = stop - base; i < n; i++) {
        x = (x << 1) ^ data[i];
        if ((x - low) >>> 0 < span) {
          cut = i + base;
          break;
        }
      }
      if (cut < 0) {
        next = stop;
        if (stop === end && stop !== hard) break;
        continue; // reached hard: cut there once its byte is available
      }
      marks.push(cut);
      start = next = cut; // the triggering byte begins the next chunk (and its window when min = 32)
      x = 0;
    }

    this.x = x;
    this.start = start;
    this.next = next;
    this.pushed = end;
    return marks;
  }
}

/** All cut marks of a whole buffer (a convenience for tests and small files). */
export function chunkBoundaries(data: Uint8Array, sizes: ChunkSizes): number[] {
  return new Xor32Chunker(sizes).push(data);
}
