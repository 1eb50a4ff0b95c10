/**
 * Test data generator reproducing the CVMFS `Prng` (facts sheet §4.4) bit for bit, so upstream
 * test vectors computed from its output apply unchanged: a 64-bit LCG (MMIX constants) whose
 * state is advanced before each draw; a draw scales `double(state)` to [0, boundary).
 * The state is kept as two uint32 halves: BigInt per step would be far too slow for 100 MiB.
 */
const A_HI = 0x5851f42d; // 6364136223846793005
const A_LO = 0x4c957f2d;
const C_HI = 0x14057b7e; // 1442695040888963407
const C_LO = 0xf767814f;
const TWO_32 = 4294967296;
const TWO_56 = 72057594037927936;
const TWO_64 = 18446744073709551616;

export class Prng {
  private hi: number;
  private lo: number;

  constructor(seed: number | bigint) {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.hi = Number(s >> 32n);
    this.lo = Number(s & 0xffffffffn);
  }

  /** A number in [0, boundary), as the C++ `Next(boundary)` computes it in IEEE doubles. */
  next(boundary: number): number {
    this.step();
    // hi · 2^32 is exact; the one addition rounds to nearest-even like the C++ uint64 → double.
    const scaled = ((this.hi * TWO_32 + this.lo) * boundary) / TWO_64;
    // scaled can round up to `boundary` itself, which the modulo turns into 0.
    return Math.floor(scaled) % boundary;
  }

  /** Fills `out` with successive `next(256)` bytes; the hot path for large test data. */
  fillBytes(out: Uint8Array): Uint8Array {
    let hi = this.hi;
    let lo = this.lo;
    const a0 = A_LO & 0xffff;
    const a1 = A_LO >>> 16;
    for (let i = 0; i < out.length; i++) {
      // (hi, lo) · A mod 2^64: the full 64-bit lo · A_LO from 16-bit limbs, the cross terms mod 2^32.
      const b0 = lo & 0xffff;
      const b1 = lo >>> 16;
      const p00 = b0 * a0;
      const p01 = b0 * a1;
      const p10 = b1 * a0;
      const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
      const carry = b1 * a1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16);
      const mulLo = ((mid << 16) | (p00 & 0xffff)) >>> 0;
      const mulHi = carry + Math.imul(lo, A_HI) + Math.imul(hi, A_LO);
      const sumLo = mulLo + C_LO;
      lo = sumLo >>> 0;
      hi = (mulHi + C_HI + (sumLo >= TWO_32 ? 1 : 0)) >>> 0;
      // · 256 / 2^64 is an exact power-of-two scaling, the same as / 2^56; `& 255` maps 256 to 0.
      out[i] = ((hi * TWO_32 + lo) / TWO_56) & 255;
    }
    this.hi = hi;
    this.lo = lo;
    return out;
  }

  /** Plain BigInt step: fine for single draws, and an independent check of the limb arithmetic. */
  private step(): void {
    const state = (BigInt(this.hi) << 32n) | BigInt(this.lo);
    const s = BigInt.asUintN(64, state * 6364136223846793005n + 1442695040888963407n);
    this.hi = Number(s >> 32n);
    this.lo = Number(s & 0xffffffffn);
  }
}
