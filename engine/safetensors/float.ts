/**
 * Exact conversions between IEEE half (F16), bfloat16 (BF16) and float32.
 * Narrowing rounds to nearest, ties to even, overflows to ±inf, and keeps NaN a NaN (payload kept where it fits),
 * so every F16 bit pattern survives F16 → F32 → F16 unchanged.
 */

// One table for all 65536 half patterns: decoding a 4 GB F16 checkpoint is then one lookup per element.
let halfTable: Uint32Array | undefined;

function halfToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise the mantissa into an f32 normal (every half subnormal is an f32 normal).
  let e = 113;
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | (e << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

function table(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToF32Bits(h);
  }
  return halfTable;
}

function f32BitsToHalf(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const e = (b >>> 23) & 0xff;
  const m = b & 0x7fffff;
  if (e === 0xff) {
    if (m === 0) return sign | 0x7c00;
    const payload = m >>> 13;
    return sign | 0x7c00 | (payload === 0 ? 0x200 : payload);
  }
  if (e >= 143) return sign | 0x7c00; // ≥ 2^16: beyond the largest half even before rounding
  if (e >= 113) {
    const hm = m >>> 13;
    const rem = m & 0x1fff;
    let h = sign | ((e - 112) << 10) | hm;
    // A carry out of the mantissa correctly bumps the exponent, up to and including inf.
    if (rem > 0x1000 || (rem === 0x1000 && (hm & 1) !== 0)) h += 1;
    return h;
  }
  if (e < 102) return sign; // below half the smallest subnormal (2^-25): rounds to zero
  const full = m | 0x800000;
  const shift = 126 - e; // 14..24: converts to units of 2^-24, the half subnormal step
  let hm = full >>> shift;
  const rem = full & ((1 << shift) - 1);
  const half = 1 << (shift - 1);
  if (rem > half || (rem === half && (hm & 1) !== 0)) hm += 1; // may carry into the smallest normal, 0x400
  return sign | hm;
}

function f32BitsToBf16(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) {
    const hi = b >>> 16;
    return (hi & 0x7f) === 0 ? hi | 0x40 : hi;
  }
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

function bitsOf(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

export function f16ToF32(bits: Uint16Array): Float32Array {
  const t = table();
  const out = new Float32Array(bits.length);
  const o = bitsOf(out);
  for (let i = 0; i < bits.length; i++) o[i] = t[bits[i]!]!;
  return out;
}

export function f32ToF16(x: Float32Array): Uint16Array {
  const b = bitsOf(x);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < b.length; i++) out[i] = f32BitsToHalf(b[i]!);
  return out;
}

export function bf16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const o = bitsOf(out);
  for (let i = 0; i < bits.length; i++) o[i] = bits[i]! << 16;
  return out;
}

export function f32ToBf16(x: Float32Array): Uint16Array {
  const b = bitsOf(x);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < b.length; i++) out[i] = f32BitsToBf16(b[i]!);
  return out;
}

const scratch = new Float32Array(1);
const scratchBits = new Uint32Array(scratch.buffer);

export function halfBitsToFloat(h: number): number {
  scratchBits[0] = table()[h & 0xffff]!;
  return scratch[0]!;
}

function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f; // exact: q has at most 53 significant bits
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Rounds a double straight to a narrow binary float (16 bits wide) with `mant` mantissa bits and exponent bias `bias`
 * (not through float32, which could round twice). NaN becomes the format's quiet NaN.
 */
function doubleToNarrowBits(f: number, mant: number, bias: number): number {
  const expAllOnes = (2 * bias + 1) << mant;
  if (Number.isNaN(f)) return expAllOnes | (1 << (mant - 1));
  const sign = f < 0 || Object.is(f, -0) ? 0x8000 : 0; // both formats are 16 bits wide
  const a = Math.abs(f);
  // Halfway between the largest finite value (odd mantissa) and 2^(bias+1): the tie goes up to inf.
  if (a >= (2 - 2 ** -(mant + 1)) * 2 ** bias) return sign | expAllOnes;
  const emin = 1 - bias;
  if (a < 2 ** emin) return sign | roundHalfEven(a * 2 ** (mant - emin));
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  const r = roundHalfEven(a * 2 ** (mant - e)); // in [2^mant, 2^(mant+1)]; the top carries into the exponent
  return sign | (((e + bias) << mant) + (r - 2 ** mant));
}

export function floatToHalfBits(f: number): number {
  return doubleToNarrowBits(f, 10, 15);
}

export function bf16BitsToFloat(h: number): number {
  scratchBits[0] = (h & 0xffff) << 16;
  return scratch[0]!;
}

export function floatToBf16Bits(f: number): number {
  return doubleToNarrowBits(f, 7, 127);
}
