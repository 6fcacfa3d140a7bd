/**
 * Float32 log and sin/cos exactly as PyTorch's CPU `normal_fill_16_AVX2` computes them: the Cephes-derived
 * polynomials of `ATen/native/cpu/avx_mathfun.h`, compiled by GCC with floating-point contraction, so some
 * multiply-adds are fused (one rounding). Every step is rounded to float32 here, fused ones once.
 */

const f32 = Math.fround;
const bits = new Float32Array(1);
const bitsInt = new Int32Array(bits.buffer);

function toBits(x: number): number {
  bits[0] = x;
  return bitsInt[0]!;
}

function fromBits(b: number): number {
  bitsInt[0] = b;
  return bits[0]!;
}

/** float32 a*b + c with a single rounding (a, b, c float32). */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b; // exact: 24-bit by 24-bit mantissas fit a double
  const s = p + c;
  const bb = s - p;
  const err = p - (s - bb) + (c - bb);
  const r = f32(s);
  if (err === 0 || !Number.isFinite(r)) return r;
  // Rounding s to float32 differs from rounding p + c only when s sits exactly halfway between two floats.
  const other = r <= s ? fromBits(toBits(r) + (r >= 0 ? 1 : -1)) : fromBits(toBits(r) - (r > 0 ? 1 : -1));
  const lo = Math.min(r, other);
  const hi = Math.max(r, other);
  if (s - lo !== hi - s) return r;
  return err > 0 ? hi : lo;
}

const SQRTHF = f32(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/** `log256_ps` for one lane, for x > 0. */
export function logF32(x: number): number {
  const b = toBits(x);
  let e = f32((b >>> 23) - 0x7f + 1);
  let m = fromBits((b & ~0x7f800000) | 0x3f000000); // mantissa scaled into [0.5, 1)
  const below = m < SQRTHF;
  const tmp = below ? m : 0;
  m = f32(m - 1);
  if (below) e = f32(e - 1);
  m = f32(m + tmp);
  const z = f32(m * m);
  let y = LOG_P[0]!;
  for (let k = 1; k < LOG_P.length; k++) y = fmaF32(y, m, LOG_P[k]!);
  y = f32(y * m);
  y = fmaF32(y, z, f32(e * LOG_Q1));
  y = fmaF32(-z, 0.5, y);
  return fmaF32(e, LOG_Q2, f32(m + y));
}

const FOPI = f32(1.27323954473516);
const DP1 = f32(-0.78515625);
const DP2 = f32(-2.4187564849853515625e-4);
const DP3 = f32(-3.77489497744594108e-8);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f32);
const COS_P = [2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2].map(f32);

/** `sincos256_ps` for one lane. */
export function sinCosF32(x: number): { sin: number; cos: number } {
  const negative = x < 0 || Object.is(x, -0);
  let a = Math.abs(x);
  let j = Math.trunc(f32(a * FOPI)) | 0;
  j = (j + 1) & ~1;
  const y = f32(j);
  const sinSwap = (j & 4) !== 0;
  const usesSinPoly = (j & 2) === 0;
  const cosNegative = (~(j - 2) & 4) !== 0;
  a = fmaF32(y, DP1, a);
  a = fmaF32(y, DP2, a);
  a = fmaF32(y, DP3, a);
  const z = f32(a * a);
  let c = fmaF32(COS_P[0]!, z, COS_P[1]!);
  c = fmaF32(c, z, COS_P[2]!);
  c = f32(c * z);
  c = fmaF32(c, z, -f32(z * 0.5));
  c = f32(c + 1);
  let s = fmaF32(SIN_P[0]!, z, SIN_P[1]!);
  s = fmaF32(s, z, SIN_P[2]!);
  s = f32(s * z);
  s = fmaF32(s, a, a);
  const sinV = usesSinPoly ? s : c;
  const cosV = usesSinPoly ? c : s;
  return { sin: negative !== sinSwap ? -sinV : sinV, cos: cosNegative ? -cosV : cosV };
}
