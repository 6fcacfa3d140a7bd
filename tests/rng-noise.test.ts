import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { BatchNoise, ImageNoise, createNoise, slerpColumns } from '../engine/rng/noise.ts';
import { TorchCpuGenerator } from '../engine/rng/torch-cpu.ts';
import { batchSeeds, fixSeed } from '../engine/rng/seeds.ts';
import { UserError } from '../engine/util/errors.ts';
import { fixturesDir } from './support/paths.ts';

const seedsPath = join(fixturesDir, 'sd-tiny', 'golden', 'seeds.safetensors');

async function golden(name: string): Promise<Float32Array> {
  const f = await SafetensorsFile.open(seedsPath);
  try {
    return await f.readFloat32(name);
  } finally {
    await f.close();
  }
}

function assertClose(a: Float32Array, b: Float32Array, atol: number, what: string): void {
  assert.equal(a.length, b.length, what);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i]! - b[i]!) <= atol, `${what}[${i}]: ${a[i]} vs ${b[i]}`);
  }
}

const shape: [number, number, number] = [4, 8, 8];

for (const source of ['CPU', 'NV', 'GPU'] as const) {
  const prefix = source === 'CPU' ? 'cpu' : 'nv';
  test(`${source}: first() is the seed's first draw and next() its second (A1111 ancestral noise)`, async () => {
    const n = new ImageNoise({ source, seed: 42, shape });
    assertClose(n.first(), await golden(`${prefix}_seed42_4x8x8`), 1e-6, 'first');
    assertClose(n.next(), await golden(`${prefix}_seed42_second_4x8x8`), 1e-6, 'second');
  });

  test(`${source}: ENSD reseeds later draws with seed + delta, leaving the first noise alone`, async () => {
    const n = new ImageNoise({ source, seed: 0, shape, etaNoiseSeedDelta: 42 });
    assertClose(n.first(), await golden(`${prefix}_seed0_4x8x8`), 1e-6, 'first');
    assertClose(n.next(), await golden(`${prefix}_seed42_4x8x8`), 1e-6, 'after ENSD');
  });

  test(`${source}: subseed strength 1 gives the subseed's noise, 0 the seed's`, async () => {
    const full = createNoise({ source, seed: 0, subseed: 42, subseedStrength: 1, shape });
    assertClose(full, await golden(`${prefix}_seed42_4x8x8`), 1e-5, 'strength 1');
    const none = createNoise({ source, seed: 0, subseed: 42, subseedStrength: 0, shape });
    assertClose(none, await golden(`${prefix}_seed0_4x8x8`), 1e-6, 'strength 0');
  });
}

test('subseed strength 0.5 is (a + b) / (2 cos(omega/2)) per (channel, column), omega the angle between them', async () => {
  const a = await golden('cpu_seed1_4x8x8');
  const b = await golden('cpu_seed42_4x8x8');
  const mid = createNoise({ source: 'CPU', seed: 1, subseed: 42, subseedStrength: 0.5, shape });
  const [c, h, w] = shape;
  for (let ci = 0; ci < c; ci++) {
    for (let x = 0; x < w; x++) {
      let na = 0, nb = 0, ab = 0;
      for (let y = 0; y < h; y++) {
        const i = (ci * h + y) * w + x;
        na += a[i]! ** 2;
        nb += b[i]! ** 2;
        ab += a[i]! * b[i]!;
      }
      const omega = Math.acos(ab / Math.sqrt(na * nb));
      const k = 1 / (2 * Math.cos(omega / 2));
      for (let y = 0; y < h; y++) {
        const i = (ci * h + y) * w + x;
        assert.ok(Math.abs(mid[i]! - k * (a[i]! + b[i]!)) < 1e-5, `${ci},${y},${x}`);
      }
    }
  }
});

test('slerp near-parallel fallback keeps A1111 weights low*val + high*(1-val)', () => {
  const low = new Float32Array([1, 0]);
  const high = new Float32Array([1, 1e-4]);
  const out = slerpColumns(0.25, low, high, [1, 2, 1]);
  assert.ok(Math.abs(out[0]! - 1) < 1e-7);
  assert.ok(Math.abs(out[1]! - 0.75e-4) < 1e-9);
});

test('seed resize from a smaller size pastes that noise in the centre of the full-size draw', async () => {
  const full = await golden('cpu_seed42_4x8x8');
  const small = new TorchCpuGenerator(42).randn([4, 4, 4]);
  const n = new ImageNoise({ source: 'CPU', seed: 42, shape, seedResizeFromW: 32, seedResizeFromH: 32 });
  const x = n.first();
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < 8; y++) {
      for (let xx = 0; xx < 8; xx++) {
        const inside = y >= 2 && y < 6 && xx >= 2 && xx < 6;
        const want = inside ? small[(c * 4 + y - 2) * 4 + xx - 2]! : full[(c * 8 + y) * 8 + xx]!;
        assert.ok(Math.abs(x[(c * 8 + y) * 8 + xx]! - want) <= 1e-6, `${c},${y},${xx}`);
      }
    }
  }
  // The image's own generator made the full-size draw, so the next draw is its second.
  assertClose(n.next(), await golden('cpu_seed42_second_4x8x8'), 1e-6, 'next after resize');
});

test('seed resize from a larger size crops the centre of that noise', () => {
  const big = new TorchCpuGenerator(7).randn([4, 12, 10]);
  const x = createNoise({ source: 'CPU', seed: 7, shape, seedResizeFromW: 80, seedResizeFromH: 96 });
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < 8; y++) {
      for (let xx = 0; xx < 8; xx++) {
        assert.equal(x[(c * 8 + y) * 8 + xx], big[(c * 12 + y + 2) * 10 + xx + 1]);
      }
    }
  }
});

test('a batch stacks one independent stream per seed', async () => {
  const { seeds, subseeds } = batchSeeds(0, 5, 0, 2);
  assert.deepEqual(seeds, [0, 1]);
  assert.deepEqual(subseeds, [5, 6]);
  const b = new BatchNoise({ source: 'NV', seeds, shape });
  const first = b.next();
  assertClose(first.subarray(0, 256), await golden('nv_seed0_4x8x8'), 1e-6, 'item 0');
  assertClose(first.subarray(256), await golden('nv_seed1_4x8x8'), 1e-6, 'item 1');
  const second = b.next();
  assertClose(second.subarray(256), await golden('nv_seed1_second_4x8x8'), 1e-6, 'item 1 second');
});

test('with a subseed in use the batch keeps the seed and advances the subseed', () => {
  assert.deepEqual(batchSeeds(10, 20, 0.3, 3), { seeds: [10, 10, 10], subseeds: [20, 21, 22] });
});

test('fixSeed: -1 and empty pick a random seed below 4294967294, others pass through', () => {
  for (const s of [-1, '', null, undefined, 'abc', '1.5']) {
    const v = fixSeed(s);
    assert.ok(Number.isInteger(v) && v >= 0 && v < 4294967294);
  }
  assert.equal(fixSeed(1234), 1234);
  assert.equal(fixSeed('99'), 99);
});

test('bad options are user errors naming the field', () => {
  assert.throws(() => createNoise({ source: 'CPU', seed: -5, shape }), (e: unknown) => e instanceof UserError && /seed/.test(e.message));
  assert.throws(() => createNoise({ source: 'XPU' as 'CPU', seed: 1, shape }), (e: unknown) => e instanceof UserError && /randn_source/.test(e.message));
  assert.throws(() => createNoise({ source: 'CPU', seed: 1, shape: [4, 0, 8] }), UserError);
});
