import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createGenerator } from '../engine/rng/noise.ts';
import { compVisDenoiser } from '../engine/sampling/denoiser.ts';
import { sampleDpmpp2m } from '../engine/sampling/dpmpp.ts';
import { sampleEuler } from '../engine/sampling/euler.ts';
import { sampleDpm2, sampleHeun } from '../engine/sampling/heun.ts';
import { sampleLms } from '../engine/sampling/lms.ts';
import { independentNoise } from '../engine/sampling/noise.ts';
import { SAMPLERS } from '../engine/sampling/registry.ts';
import { sample } from '../engine/sampling/sample.ts';
import { karrasSigmas } from '../engine/sampling/schedulers.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';
import { sampleUniPc } from '../engine/sampling/unipc.ts';
import type { EpsModel, KSampler, Randn } from '../engine/sampling/types.ts';

// Samplers on data whose ideal denoiser is known in closed form. For data N(mu, s^2) per element the
// probability-flow ODE in k-diffusion's sigma has the exact solution
//   x(sigma) - mu = (x(sigma0) - mu) * sqrt((s^2 + sigma^2) / (s^2 + sigma0^2)),
// so every deterministic sampler must land there, with errors shrinking at its order. s = 0 is a single point.

const schedule = DiscreteSchedule.fromTrainSchedule();
const N = 512;

/** The exact eps of N(mu, s^2) data, from the UNet input (VE latent times c_in, or the VP latent) and sigma. */
function gaussianEps(mu: number, s: number, sigmaLog: number[][] = []): EpsModel {
  return async (input, t, call) => {
    const sigma = call.sigma;
    const k = Math.sqrt(1 + sigma * sigma);
    sigmaLog.push([t, sigma]);
    const out = new Float32Array(input.length);
    for (let i = 0; i < input.length; i++) out[i] = ((input[i]! * k - mu) * sigma) / (s * s + sigma * sigma);
    return out;
  };
}

function exact(xStartVe: Float32Array, sigma0: number, sigmaEnd: number, mu: number, s: number): Float64Array {
  const f = Math.sqrt((s * s + sigmaEnd * sigmaEnd) / (s * s + sigma0 * sigma0));
  return Float64Array.from(xStartVe, (v) => mu + (v - mu) * f);
}

const maxErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

const randnFrom = (seed: number): Randn => {
  const g = createGenerator('CPU', seed);
  return (n) => g.randn([n]);
};

test('every sampler lands on the single data point (exact denoiser), and t matches sigma', async () => {
  const mu = 0.7;
  const noise = randnFrom(1)(N);
  for (const entry of SAMPLERS) {
    const log: number[][] = [];
    // DPM fast / adaptive stop at sigma_min (k-diffusion); without their ancestral noise that point is on the exact path too.
    const stopsAtSigmaMin = entry.name === 'DPM fast' || entry.name === 'DPM adaptive';
    const r = await sample({
      sampler: entry.name, steps: 8, model: gaussianEps(mu, 0, log), schedule, noise, randn: randnFrom(2), eta: stopsAtSigmaMin ? 0 : null,
    });
    // Every call's timestep must be the one that belongs to its sigma.
    for (const [t, sigma] of log) assert.ok(Math.abs(schedule.tToSigma(t!) - sigma!) <= 2e-3 * sigma!, `${entry.name}: t ${t} for sigma ${sigma}`);
    const k = entry.impl.family;
    if (stopsAtSigmaMin) {
      const start = Float32Array.from(noise, (v) => v * schedule.sigmaMax);
      assert.ok(maxErr(r.latent, exact(start, schedule.sigmaMax, schedule.sigmaMin, mu, 0)) < 1e-4, `${entry.name} follows the exact path`);
    } else if (k === 'k') {
      assert.ok(maxErr(r.latent, new Float32Array(N).fill(mu)) < 1e-5, `${entry.name} ends at the data point`);
    } else {
      // The timestep samplers end at a small noise level (t = 1, or acp[0] for UniPC), still on the exact ODE path.
      const first = log[0]![1]!;
      const last = entry.impl.kind === 'unipc' ? schedule.sigmaAtTimestep(0) : schedule.sigmaAtTimestep(r.plan.timesteps![0]!);
      const start = Float32Array.from(noise, (v) => v * Math.sqrt(1 + first * first));
      const want = exact(start, first, last, mu, 0).map((v) => v / Math.sqrt(1 + last * last));
      assert.ok(maxErr(r.latent, want) < 1e-4, `${entry.name} follows the exact path: err ${maxErr(r.latent, want)}`);
    }
  }
});

/** Error at sigma_min (the state before the final jump to 0) of a k-diffusion sampler on Karras sigmas. */
async function errorAtSigmaMin(run: KSampler, steps: number, mu: number, s: number): Promise<number> {
  const sigmas = karrasSigmas(steps, schedule.sigmaMin, schedule.sigmaMax);
  const x0 = Float32Array.from(randnFrom(3)(N), (v) => v * sigmas[0]!);
  let atMin: Float32Array | undefined;
  await run({
    denoise: compVisDenoiser(gaussianEps(mu, s), schedule, steps),
    x: x0, sigmas, noise: independentNoise(randnFrom(4), N), eta: 0, sNoise: 1, sChurn: 0, sTmin: 0, sTmax: Infinity,
    onStep: ({ index, x }) => {
      if (index === steps - 2) atMin = x;
    },
  });
  assert.ok(atMin);
  return maxErr(atMin, exact(x0, sigmas[0]!, sigmas[steps - 1]!, mu, s));
}

test('order of accuracy on Gaussian data: Euler is first order, Heun / DPM2 / DPM++ 2M / LMS higher', async () => {
  const mu = 0.3;
  const s = 0.5;
  const samplers: [string, KSampler][] = [
    ['Euler', sampleEuler], ['Heun', sampleHeun], ['DPM2', sampleDpm2], ['DPM++ 2M', sampleDpmpp2m], ['LMS', (a) => sampleLms(a)],
  ];
  const errs = new Map<string, [number, number]>();
  for (const [name, run] of samplers) errs.set(name, [await errorAtSigmaMin(run, 12, mu, s), await errorAtSigmaMin(run, 24, mu, s)]);
  const ratio = (name: string): number => errs.get(name)![0] / errs.get(name)![1];
  const report = [...errs].map(([n, [a, b]]) => `${n}: ${a.toExponential(2)} -> ${b.toExponential(2)}`).join('; ');
  // Doubling the steps halves a first-order error and quarters a second-order one.
  assert.ok(ratio('Euler') > 1.6 && ratio('Euler') < 2.6, `Euler ratio ${ratio('Euler')} (${report})`);
  for (const name of ['Heun', 'DPM2', 'DPM++ 2M', 'LMS']) {
    assert.ok(ratio(name) > 3.2, `${name} ratio ${ratio(name)} (${report})`);
    assert.ok(errs.get(name)![1] < errs.get('Euler')![1] / 4, `${name} beats Euler at 24 steps (${report})`);
  }
});

test('timestep samplers on Gaussian data: PLMS and UniPC beat DDIM, and all converge as steps grow', async () => {
  const mu = -0.2;
  const s = 0.6;
  const noise = randnFrom(5)(N);
  const err = async (name: string, steps: number): Promise<number> => {
    const log: number[][] = [];
    const r = await sample({ sampler: name, steps, model: gaussianEps(mu, s, log), schedule, noise, randn: randnFrom(6) });
    const first = log[0]![1]!;
    const last = name === 'UniPC' ? schedule.sigmaAtTimestep(0) : schedule.sigmaAtTimestep(r.plan.timesteps![0]!);
    const start = Float32Array.from(noise, (v) => v * Math.sqrt(1 + first * first));
    return maxErr(r.latent, exact(start, first, last, mu, s).map((v) => v / Math.sqrt(1 + last * last)));
  };
  const e: Record<string, [number, number]> = {};
  for (const name of ['DDIM', 'PLMS', 'UniPC']) e[name] = [await err(name, 10), await err(name, 20)];
  const report = JSON.stringify(e);
  for (const name of ['DDIM', 'PLMS', 'UniPC']) assert.ok(e[name]![1] < e[name]![0], `${name} converges (${report})`);
  assert.ok(e['DDIM']![0] / e['DDIM']![1] > 1.5, `DDIM at least first order (${report})`);
  assert.ok(e['PLMS']![1] < e['DDIM']![1] / 3, `PLMS beats DDIM (${report})`);
  // A1111's UniPC spaces time uniformly, so its last step in log-SNR stays large and dominates the error.
  for (const i of [0, 1]) assert.ok(e['UniPC']![i]! < e['DDIM']![i]! / 1.5, `UniPC beats DDIM (${report})`);
});

test('UniPC reaches its order with log-SNR spacing (predictor-corrector raises the order by one)', async () => {
  const mu = -0.2;
  const s = 0.6;
  const x = randnFrom(7)(N);
  const sigmaT = schedule.sigmaAtTimestep(schedule.numTimesteps - 1);
  const sigma0 = schedule.sigmaAtTimestep(0);
  const start = Float32Array.from(x, (v) => v * Math.sqrt(1 + sigmaT ** 2));
  const want = exact(start, sigmaT, sigma0, mu, s).map((v) => v / Math.sqrt(1 + sigma0 ** 2));
  const err = async (order: number, steps: number): Promise<number> =>
    maxErr(await sampleUniPc({ model: gaussianEps(mu, s), schedule, x, steps, order, skipType: 'logSNR' }), want);
  const o1 = [await err(1, 10), await err(1, 20)];
  const o2 = [await err(2, 10), await err(2, 20)];
  const o3 = await err(3, 20);
  const report = JSON.stringify({ o1, o2, o3 });
  assert.ok(o1[0]! / o1[1]! > 3.2, `UniPC-1 is second order (${report})`);
  assert.ok(o2[0]! / o2[1]! > 6, `UniPC-2 is third order (${report})`);
  assert.ok(o3 < o1[1]! / 20, `UniPC-3 far ahead of UniPC-1 (${report})`);
});

test('DPM fast is third order; DPM adaptive picks its own step count and meets its tolerance', async () => {
  const mu = 0.3;
  const s = 0.5;
  const noise = randnFrom(8)(N);
  const start = Float32Array.from(noise, (v) => v * schedule.sigmaMax);
  const want = exact(start, schedule.sigmaMax, schedule.sigmaMin, mu, s);
  const run = async (name: string, steps: number): Promise<{ err: number; calls: number }> => {
    const log: number[][] = [];
    const r = await sample({ sampler: name, steps, eta: 0, model: gaussianEps(mu, s, log), schedule, noise, randn: (n) => new Float32Array(n) });
    return { err: maxErr(r.latent, want), calls: log.length };
  };
  const f12 = await run('DPM fast', 12);
  const f24 = await run('DPM fast', 24);
  assert.equal(f12.calls, 12, 'DPM fast spends exactly `steps` evaluations');
  assert.ok(f24.err < f12.err / 8, `DPM fast ${f12.err} -> ${f24.err}`);
  const a6 = await run('DPM adaptive', 6);
  const a24 = await run('DPM adaptive', 24);
  assert.equal(a6.calls, a24.calls, 'DPM adaptive ignores steps');
  assert.equal(a6.calls % 3, 0, 'three evaluations per attempted step');
  // rtol 0.05 on values up to ~3: the local error control keeps the global error at a few hundredths.
  assert.ok(a6.err < 0.1, `DPM adaptive error ${a6.err}`);
});
