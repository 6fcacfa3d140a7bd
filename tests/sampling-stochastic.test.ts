import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createGenerator } from '../engine/rng/noise.ts';
import { BrownianNoise } from '../engine/sampling/noise.ts';
import { sample } from '../engine/sampling/sample.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';
import type { EpsModel, Randn } from '../engine/sampling/types.ts';

// Ancestral and SDE samplers draw from the data distribution: with the exact denoiser of N(mu, s^2) data,
// the final samples must have mean mu and standard deviation s, for any noise generator.

const schedule = DiscreteSchedule.fromTrainSchedule();
const N = 4096;

function gaussianEps(mu: number, s: number): EpsModel {
  return async (input, _t, call) => {
    const sigma = call.sigma;
    const k = Math.sqrt(1 + sigma * sigma);
    const out = new Float32Array(input.length);
    for (let i = 0; i < input.length; i++) out[i] = ((input[i]! * k - mu) * sigma) / (s * s + sigma * sigma);
    return out;
  };
}

const counting = (seed: number): { randn: Randn; draws: () => number } => {
  const g = createGenerator('CPU', seed);
  let draws = 0;
  return { randn: (n) => (draws++, g.randn([n])), draws: () => draws };
};

function moments(v: Float32Array): { mean: number; std: number } {
  let m = 0;
  for (const x of v) m += x;
  m /= v.length;
  let q = 0;
  for (const x of v) q += (x - m) ** 2;
  return { mean: m, std: Math.sqrt(q / (v.length - 1)) };
}

const STOCHASTIC: [string, number][] = [
  ['DPM2 a', 30], ['DPM++ 2S a', 30], ['DPM++ SDE', 30], ['DPM++ 2M SDE', 30],
  ['DPM++ 2M SDE Heun', 30], ['DPM++ 3M SDE', 30], ['Restart', 24], ['DPM fast', 30], ['DPM adaptive', 30], ['Euler a', 30],
];

test('ancestral and SDE samplers reproduce the data mean and standard deviation', async () => {
  const mu = 0.3;
  const s = 0.5;
  const noise = createGenerator('CPU', 11).randn([N]);
  const run = async (name: string, steps: number, eta?: number) =>
    moments((await sample({ sampler: name, steps, eta, model: gaussianEps(mu, s), schedule, noise, randn: counting(12).randn })).latent);
  for (const [name, steps] of STOCHASTIC.filter(([n]) => n !== 'Euler a')) {
    const { mean, std } = await run(name, steps);
    // Sampling error of 4096 draws is ~0.008 on both; the rest is discretization.
    assert.ok(Math.abs(mean - mu) < 0.03, `${name}: mean ${mean}`);
    assert.ok(Math.abs(std - s) < 0.03, `${name}: std ${std}`);
  }
  // The first-order ancestral steps (Euler a, DDIM with eta 1) lose variance at O(1/steps): check they converge.
  for (const [name, eta] of [['Euler a', undefined], ['DDIM', 1]] as const) {
    const coarse = await run(name, 30, eta);
    const fine = await run(name, 100, eta);
    assert.ok(Math.abs(fine.mean - mu) < 0.03, `${name}: mean ${fine.mean}`);
    assert.ok(Math.abs(fine.std - s) < 0.035, `${name}: std ${fine.std} at 100 steps`);
    assert.ok(Math.abs(fine.std - s) < Math.abs(coarse.std - s) / 2, `${name}: std ${coarse.std} -> ${fine.std}`);
  }
});

test('stochastic samplers are deterministic given the generator, and eta 0 removes the noise', async () => {
  const model = gaussianEps(0.1, 0.4);
  const noise = createGenerator('CPU', 21).randn([256]);
  for (const [name] of STOCHASTIC) {
    const a = await sample({ sampler: name, steps: 20, model, schedule, noise, randn: counting(5).randn });
    const b = await sample({ sampler: name, steps: 20, model, schedule, noise, randn: counting(5).randn });
    const c = await sample({ sampler: name, steps: 20, model, schedule, noise, randn: counting(6).randn });
    assert.deepEqual(a.latent, b.latent, `${name} repeats with the same generator`);
    assert.notDeepEqual(a.latent, c.latent, `${name} changes with the generator`);
    if (name === 'Restart') continue;
    const z1 = await sample({ sampler: name, steps: 20, eta: 0, model, schedule, noise, randn: counting(5).randn });
    const z2 = await sample({ sampler: name, steps: 20, eta: 0, model, schedule, noise, randn: counting(6).randn });
    assert.deepEqual(z1.latent, z2.latent, `${name} with eta 0 does not depend on the noise`);
  }
});

test('noise draws follow A1111: Euler a none at the last step, Euler none, DDIM one per step', async () => {
  const model = gaussianEps(0, 1);
  const noise = new Float32Array(64).fill(0.5);
  const steps = 10;
  const counts: Record<string, number> = {};
  for (const name of ['Euler a', 'Euler', 'DPM++ 2M', 'DPM2 a', 'DDIM']) {
    const c = counting(1);
    await sample({ sampler: name, steps, model, schedule, noise, randn: c.randn });
    counts[name] = c.draws();
  }
  assert.deepEqual(counts, { 'Euler a': steps - 1, Euler: 0, 'DPM++ 2M': 0, 'DPM2 a': steps - 1, DDIM: steps - 1 });
});

test('Brownian noise: unit-variance increments, correlated exactly as a Brownian path on overlaps', () => {
  const n = 20000;
  const g = createGenerator('CPU', 3);
  const bm = new BrownianNoise((k) => g.randn([k]), n, 0.03, 14.6);
  const a = bm.sample(10, 4); // sigma -> next
  const b = bm.sample(10, 7); // sigma -> a midpoint (overlaps the first)
  const c = bm.sample(4, 1); // a later, disjoint interval
  const again = bm.sample(10, 4);
  assert.deepEqual(again, a, 'the same interval gives the same increment');
  const cov = (x: Float32Array, y: Float32Array): number => {
    let s = 0;
    for (let i = 0; i < n; i++) s += x[i]! * y[i]!;
    return s / n;
  };
  for (const v of [a, b, c]) assert.ok(Math.abs(cov(v, v) - 1) < 0.04, `unit variance ${cov(v, v)}`);
  // W(4) - W(10) and W(7) - W(10) share W(7) - W(10): correlation sqrt(3 / 6).
  assert.ok(Math.abs(cov(a, b) - Math.sqrt(3 / 6)) < 0.03, `overlap correlation ${cov(a, b)}`);
  assert.ok(Math.abs(cov(a, c)) < 0.03, `disjoint intervals independent ${cov(a, c)}`);
});
