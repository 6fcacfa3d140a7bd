/**
 * A1111's "NV" noise source: Philox4x32-10 as cuRAND / CUDA `torch.randn` use it, so the same seed gives
 * the same noise as A1111 on an NVIDIA GPU. Element i of a draw uses counter [offset, 0, i, 0] and the key
 * (seed low 32 bits, seed high 32 bits); the first two outputs feed one Box–Muller (sine branch), computed
 * in float64 and rounded to float32. Each draw increments the offset.
 */
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

// A1111 keeps these constants as float32 and does the arithmetic in float64.
const TWO_POW32_INV = Math.fround(2.3283064e-10);
const TWO_POW32_INV_2PI = Math.fround(2.3283064e-10 * 6.2831855);

/** High 32 bits of the 64-bit product of two uint32 values. */
function mulhi(a: number, b: number): number {
  const al = a & 0xffff;
  const ah = a >>> 16;
  const bl = b & 0xffff;
  const bh = b >>> 16;
  const ll = al * bl;
  const hl = ah * bl;
  const lh = al * bh;
  const cross = (ll >>> 16) + (hl & 0xffff) + (lh & 0xffff);
  return (ah * bh + (hl >>> 16) + (lh >>> 16) + (cross >>> 16)) >>> 0;
}

/** Philox4x32 with 10 rounds; returns the first two outputs (A1111 discards the other two). */
function philox2(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number, out: Uint32Array): void {
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(c0, M0);
    const lo0 = Math.imul(c0, M0) >>> 0;
    const hi1 = mulhi(c2, M1);
    const lo1 = Math.imul(c2, M1) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0;
    const n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  out[0] = c0;
  out[1] = c1;
}

export class PhiloxGenerator {
  private readonly keyLo: number;
  private readonly keyHi: number;
  /** Number of draws made so far; the next draw uses it as counter word 0. */
  offset = 0;

  constructor(seed: number | bigint) {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.keyLo = Number(s & 0xffffffffn);
    this.keyHi = Number(s >> 32n);
  }

  randn(shape: readonly number[]): Float32Array {
    const n = shape.reduce((a, b) => a * b, 1);
    if (n > 4294967296) throw new RangeError('Philox draw larger than 2^32 elements');
    const out = new Float32Array(n);
    const pair = new Uint32Array(2);
    const offset = this.offset >>> 0;
    for (let i = 0; i < n; i++) {
      philox2(offset, 0, i >>> 0, 0, this.keyLo, this.keyHi, pair);
      const u = pair[0]! * TWO_POW32_INV + TWO_POW32_INV / 2;
      const v = pair[1]! * TWO_POW32_INV_2PI + TWO_POW32_INV_2PI / 2;
      out[i] = Math.sqrt(-2 * Math.log(u)) * Math.sin(v);
    }
    this.offset++;
    return out;
  }
}
