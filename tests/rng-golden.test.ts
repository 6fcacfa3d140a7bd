import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { TorchCpuGenerator } from '../engine/rng/torch-cpu.ts';
import { PhiloxGenerator } from '../engine/rng/philox.ts';
import { Mt19937 } from '../engine/rng/mt19937.ts';
import { fmaF32, logF32, sinCosF32 } from '../engine/rng/avx-mathfun.ts';
import { fixturesDir } from './support/paths.ts';

const seedsPath = join(fixturesDir, 'sd-tiny', 'golden', 'seeds.safetensors');
const ATOL = 1e-6;

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('mt19937 matches the C++ standard: 10000th output of the default seed 5489 is 4123659995', () => {
  const mt = new Mt19937(5489);
  let v = 0;
  for (let i = 0; i < 10000; i++) v = mt.nextUint32();
  assert.equal(v, 4123659995);
});

test('every seeds.safetensors golden is reproduced within atol 1e-6', async (t) => {
  const f = await SafetensorsFile.open(seedsPath);
  try {
    const names = f.names();
    assert.ok(names.length > 0);
    const seen = new Set<string>();
    let exact = 0;
    for (const name of names) {
      const m = /^(cpu|nv)_seed(\d+)_(second_)?(\d+(?:x\d+)*)$/.exec(name);
      assert.ok(m, `unexpected key ${name}`);
      const [, source, seedText, second, shapeText] = m;
      const shape = shapeText!.split('x').map(Number);
      assert.deepEqual(f.info(name).shape, shape, `${name}: shape in the key and the header differ`);
      const golden = await f.readFloat32(name);
      const seed = Number(seedText);
      const gen = source === 'cpu' ? new TorchCpuGenerator(seed) : new PhiloxGenerator(seed);
      let ours = gen.randn(shape);
      if (second) ours = gen.randn(shape);
      const d = maxAbsDiff(ours, golden);
      assert.ok(d <= ATOL, `${name}: max |diff| ${d}`);
      if (d === 0) exact++;
      seen.add(`${source}_${shape.length}_${shape.reduce((a, b) => a * b, 1) < 16 ? 'small' : 'large'}`);
    }
    // Both torch paths (scalar < 16 elements, vectorised >= 16) and both sources were exercised.
    for (const k of ['cpu_2_small', 'cpu_3_large', 'nv_2_small', 'nv_3_large']) assert.ok(seen.has(k), `no golden covers ${k}`);
    t.diagnostic(`${exact} of ${names.length} seed goldens bit-exact`);
  } finally {
    await f.close();
  }
});

test('torch CPU: a scalar draw caches its second normal for the next scalar draw', () => {
  // Two draws of 1 element consume one Box-Muller pair; the pair is the first two values of a 2-element draw.
  const a = new TorchCpuGenerator(7);
  const x = a.randn([1]);
  const y = a.randn([1]);
  const b = new TorchCpuGenerator(7).randn([2]);
  assert.equal(x[0], b[0]);
  assert.equal(y[0], b[1]);
  assert.notEqual(x[0], y[0]);
});

test('torch CPU: sizes that are not a multiple of 16 redraw the last block', () => {
  // For 17 elements torch fills 17 uniforms, transforms block 0..15, then redraws 16 uniforms for 1..16.
  const g17 = new TorchCpuGenerator(3).randn([17]);
  const g16 = new TorchCpuGenerator(3).randn([16]);
  assert.equal(g17[0], g16[0]);
  assert.notEqual(g17[1], g16[1]);
  let sum = 0;
  for (const v of g17) sum += v * v;
  assert.ok(Number.isFinite(sum) && sum > 0);
});

test('philox: the offset advances per draw and seeds above 2^32 use the high key word', () => {
  const g = new PhiloxGenerator(5);
  const first = g.randn([8]);
  assert.equal(g.offset, 1);
  const again = new PhiloxGenerator(5).randn([8]);
  assert.deepEqual(first, again);
  const high = new PhiloxGenerator(5 + 2 ** 32).randn([8]);
  assert.ok(maxAbsDiff(first, high) > 0.01);
});

test('fused multiply-add rounds once, where rounding through double would round twice', () => {
  const a = 1 + 2 ** -23;
  const b = 1 - 2 ** -23;
  const c = 2 ** 24 + 2;
  // a*b + c = 2^24 + 3 - 2^-46: just below the halfway point between the floats 2^24+2 and 2^24+4.
  assert.equal(Math.fround(a * b + c), 2 ** 24 + 4);
  assert.equal(fmaF32(a, b, c), 2 ** 24 + 2);
  assert.equal(fmaF32(-a, b, -c), -(2 ** 24 + 2));
  assert.equal(fmaF32(2, 3, 1), 7);
});

test('float32 log and sin/cos track the true functions to float32 accuracy', () => {
  for (const x of [1e-7, 0.001, 0.1, 0.5, 0.70710677, 0.9, 1]) {
    const v = Math.fround(x);
    assert.ok(Math.abs(logF32(v) - Math.log(v)) <= 2e-7 * Math.max(1, Math.abs(Math.log(v))), `log ${x}`);
  }
  for (const x of [0, 0.1, 1, 2, 3, 4, 5, 6, 6.2831855, -1.5]) {
    const v = Math.fround(x);
    const { sin, cos } = sinCosF32(v);
    assert.ok(Math.abs(sin - Math.sin(v)) < 3e-7, `sin ${x}`);
    assert.ok(Math.abs(cos - Math.cos(v)) < 3e-7, `cos ${x}`);
  }
});
