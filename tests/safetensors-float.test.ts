import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  f16ToF32, f32ToF16, bf16ToF32, f32ToBf16, halfBitsToFloat, floatToHalfBits, bf16BitsToFloat, floatToBf16Bits,
} from '../engine/safetensors/float.ts';

/** The IEEE binary16 value of a bit pattern, straight from the definition (independent of the code under test). */
function halfValue(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  if (e === 0) return s * m * 2 ** -24;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const allPatterns = Uint16Array.from({ length: 65536 }, (_, i) => i);
const isHalfNaN = (h: number) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

function mulberry32(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}

test('F16 -> F32 decodes every one of the 65536 patterns to its exact value', () => {
  const f = f16ToF32(allPatterns);
  for (let h = 0; h < 65536; h++) {
    const want = halfValue(h);
    if (Number.isNaN(want)) assert.ok(Number.isNaN(f[h]!), `0x${h.toString(16)} should be NaN`);
    else assert.ok(Object.is(f[h], want), `0x${h.toString(16)}: got ${f[h]} want ${want}`);
    const s = halfBitsToFloat(h);
    assert.ok(Object.is(s, f[h]) || (Number.isNaN(s) && Number.isNaN(f[h]!)), `scalar 0x${h.toString(16)}`);
  }
});

test('every F16 pattern round-trips F16 -> F32 -> F16 bit-exactly (NaN payloads included)', () => {
  const back = f32ToF16(f16ToF32(allPatterns));
  for (let h = 0; h < 65536; h++) assert.equal(back[h], h, `0x${h.toString(16)} came back as 0x${back[h]!.toString(16)}`);
  for (let h = 0; h < 65536; h++) {
    const r = floatToHalfBits(halfBitsToFloat(h));
    if (isHalfNaN(h)) assert.ok(isHalfNaN(r), `scalar NaN 0x${h.toString(16)} stays NaN`);
    else assert.equal(r, h, `scalar 0x${h.toString(16)}`);
  }
});

test('F32 -> F16 special values, subnormals, overflow and ties-to-even', () => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [-0, 0x8000], [Infinity, 0x7c00], [-Infinity, 0xfc00],
    [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-1e6, 0xfc00], [3.4028234663852886e38, 0x7c00],
    [2 ** -24, 0x0001], [2 ** -25, 0x0000], [2 ** -25 * 1.0000001, 0x0001], [3 * 2 ** -25, 0x0002], [-(2 ** -24), 0x8001],
    [1023 * 2 ** -24, 0x03ff], [1023.5 * 2 ** -24, 0x0400], [2 ** -14, 0x0400], [1e-30, 0x0000], [1.4e-45, 0x0000],
    [1, 0x3c00], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01],
    [2048 + 1, 0x6800], [2048 + 3, 0x6802], [-2, 0xc000], [0.1, 0x2e66], [1 / 3, 0x3555],
  ];
  const arr = f32ToF16(Float32Array.from(cases.map((c) => c[0])));
  cases.forEach(([x, want], i) => {
    assert.equal(arr[i], want, `f32ToF16(${x}) = 0x${arr[i]!.toString(16)}, want 0x${want.toString(16)}`);
    assert.equal(floatToHalfBits(Math.fround(x)), want, `floatToHalfBits(${x})`);
  });
  assert.ok(isHalfNaN(f32ToF16(Float32Array.of(NaN))[0]!));
  assert.ok(isHalfNaN(floatToHalfBits(NaN)));
});

test('F32 -> F16 picks the nearest half (ties to even) for 131072 random floats; array and scalar agree', () => {
  const rnd = mulberry32(1234);
  const n = 1 << 17;
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    // Half the samples in the half-precision range, where rounding matters most.
    bits[i] = i & 1 ? rnd() : (rnd() & 0x80000000) | ((rnd() % (0x47800000 - 0x33000000)) + 0x33000000);
  }
  const x = new Float32Array(bits.buffer);
  const h = f32ToF16(x);
  for (let i = 0; i < n; i++) {
    const v = x[i]!;
    if (Number.isNaN(v)) {
      assert.ok(isHalfNaN(h[i]!));
      continue;
    }
    assert.equal(floatToHalfBits(v), h[i], `scalar vs array at ${v}`);
    const got = halfValue(h[i]!);
    // The neighbours of the result must not be closer; at an exact tie the result's mantissa must be even.
    for (const nb of [h[i]! - 1, h[i]! + 1]) {
      if ((nb & 0x7fff) > 0x7c00 || nb < 0 || ((nb ^ h[i]!) & 0x8000) !== 0) continue;
      const other = halfValue(nb);
      const dGot = Math.abs(v - got);
      const dOther = Math.abs(v - other);
      if (!Number.isFinite(got)) {
        assert.ok(Math.abs(v) >= 65520, `${v} overflowed to inf`);
        continue;
      }
      assert.ok(dGot <= dOther, `${v}: 0x${h[i]!.toString(16)} is not nearest`);
      if (dGot === dOther) assert.equal(h[i]! & 1, 0, `${v}: tie not to even`);
    }
  }
});

test('BF16: every pattern round-trips; ties to even, overflow to inf, NaN stays NaN, subnormals kept', () => {
  const f = bf16ToF32(allPatterns);
  const back = f32ToBf16(f);
  const fb = new Uint32Array(f.buffer);
  for (let h = 0; h < 65536; h++) {
    assert.equal(fb[h], h << 16 >>> 0, 'bf16 is the top half of f32');
    assert.equal(back[h], h, `0x${h.toString(16)}`);
    const s = bf16BitsToFloat(h);
    assert.ok(Object.is(s, f[h]) || (Number.isNaN(s) && Number.isNaN(f[h]!)));
  }
  const asF32 = (b: number) => new Float32Array(Uint32Array.of(b).buffer)[0]!;
  const cases: Array<[number, number]> = [
    [0x3f808000, 0x3f80], // 1 + 2^-8: tie, 0x3f80 is even
    [0x3f818000, 0x3f82], // tie, rounds up to even
    [0x3f808001, 0x3f81],
    [0x3f807fff, 0x3f80],
    [0x7f7fffff, 0x7f80], // max float rounds to inf
    [0xff7fffff, 0xff80],
    [0x7f7f7fff, 0x7f7f], // largest that stays finite
    [0x00010000, 0x0001], // subnormal
    [0x00008000, 0x0000], // tie between 0 and the smallest subnormal
    [0x80000000, 0x8000],
  ];
  const arr = f32ToBf16(new Float32Array(Uint32Array.from(cases.map((c) => c[0])).buffer));
  cases.forEach(([b, want], i) => {
    assert.equal(arr[i], want, `f32 0x${b.toString(16)} -> 0x${arr[i]!.toString(16)}, want 0x${want.toString(16)}`);
    assert.equal(floatToBf16Bits(asF32(b)), want, `scalar 0x${b.toString(16)}`);
  });
  const nan = f32ToBf16(new Float32Array(Uint32Array.of(0x7f800001, 0xffc00000).buffer));
  for (const v of nan) assert.ok((v & 0x7f80) === 0x7f80 && (v & 0x7f) !== 0, `NaN -> 0x${v.toString(16)}`);
  const rnd = mulberry32(99);
  const xs = new Float32Array(Uint32Array.from({ length: 100000 }, () => rnd()).buffer);
  const ys = f32ToBf16(xs);
  xs.forEach((x, i) => {
    if (!Number.isNaN(x)) assert.equal(floatToBf16Bits(x), ys[i], `scalar vs array at ${x}`);
  });
});
