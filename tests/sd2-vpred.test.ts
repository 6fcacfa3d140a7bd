import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createGenerator } from '../engine/rng/noise.ts';
import { compVisDenoiser, compVisVDenoiser, vPredictionAsEps } from '../engine/sampling/denoiser.ts';
import { SAMPLERS } from '../engine/sampling/registry.ts';
import { sample } from '../engine/sampling/sample.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';
import type { EpsModel, Randn } from '../engine/sampling/types.ts';

// v-prediction on data whose ideal model is closed form. The UNet input is the variance-preserving latent
// x_t = alpha * x0 + sigma_vp * eps with alpha = 1 / sqrt(1 + sigma^2), sigma_vp = sigma * alpha
// (k-diffusion's sigma = sigma_vp / alpha). With the ideal x0 estimate D(x_t):
//   eps = (x_t - alpha * D) / sigma_vp,   v = alpha * eps - sigma_vp * D = (alpha * x_t - D) / sigma_vp
// (alpha^2 + sigma_vp^2 = 1). For N(mu, s^2) data, D = mu + (x_ve - mu) * s^2 / (s^2 + sigma^2) with
// x_ve = x_t / alpha; s = 0 is a point mass at mu, where D = mu whatever the input.

const schedule = DiscreteSchedule.fromTrainSchedule();
const N = 256;

function idealX0(xt: number, sigma: number, mu: number, s: number): number {
  const xVe = xt * Math.sqrt(1 + sigma * sigma);
  return mu + ((xVe - mu) * s * s) / (s * s + sigma * sigma);
}

function idealV(mu: number, s: number): EpsModel {
  return async (input, _t, { sigma }) => {
    const alpha = 1 / Math.sqrt(1 + sigma * sigma);
    const sigmaVp = sigma * alpha;
    return input.map((x) => (alpha * x - idealX0(x, sigma, mu, s)) / sigmaVp);
  };
}

function idealEps(mu: number, s: number): EpsModel {
  return async (input, _t, { sigma }) => {
    const alpha = 1 / Math.sqrt(1 + sigma * sigma);
    return input.map((x) => (x - alpha * idealX0(x, sigma, mu, s)) / (sigma * alpha));
  };
}

const maxErr = (a: ArrayLike<number>, b: ArrayLike<number> | number): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - (typeof b === 'number' ? b : b[i]!)));
  return m;
};

const randnFrom = (seed: number): Randn => {
  const g = createGenerator('CPU', seed);
  return (n) => g.randn([n]);
};

test('CompVisVDenoiser: the ideal v of a point mass denoises to the point at every noise level, as the eps denoiser does', async () => {
  const mu = 0.7;
  for (const sigma of [schedule.sigmaMax, 3, 1, 0.2, schedule.sigmaMin]) {
    const x = Float32Array.from(randnFrom(1)(N), (n) => mu + n * sigma);
    const fromV = await compVisVDenoiser(idealV(mu, 0), schedule, 1)(x, sigma, 0);
    const fromEps = await compVisDenoiser(idealEps(mu, 0), schedule, 1)(x, sigma, 0);
    assert.ok(maxErr(fromV, mu) < 1e-5 * Math.max(1, sigma), `sigma ${sigma}: v denoiser err ${maxErr(fromV, mu)}`);
    assert.ok(maxErr(fromV, fromEps) < 1e-5 * Math.max(1, sigma), `sigma ${sigma}: v and eps denoisers differ`);
    // The same v read as eps is far off wherever the two differ (v tends to eps as sigma -> 0).
    const wrong = await compVisDenoiser(idealV(mu, 0), schedule, 1)(x, sigma, 0);
    if (sigma >= 1) assert.ok(maxErr(wrong, mu) > 0.1, `sigma ${sigma}: v misread as eps still denoised`);
  }
});

test('v -> eps conversion (DDIM, PLMS, UniPC, LCM) gives the ideal eps from the VP latent', async () => {
  const [mu, s] = [-0.3, 0.6];
  for (const sigma of [10, 1, 0.05]) {
    const alpha = 1 / Math.sqrt(1 + sigma * sigma);
    const xt = Float32Array.from(randnFrom(2)(N), (n) => alpha * (mu + n * Math.hypot(s, sigma)));
    const call = { sigma, index: 0, total: 1 };
    const eps = await vPredictionAsEps(idealV(mu, s))(xt, schedule.sigmaToT(sigma), call);
    const want = await idealEps(mu, s)(xt, 0, call);
    assert.ok(maxErr(eps, want) < 1e-4, `sigma ${sigma}: ${maxErr(eps, want)}`);
  }
});

test('every sampler with v-prediction lands on the point mass, and runs as it does on the same data with eps', async () => {
  const noise = randnFrom(3)(N);
  for (const entry of SAMPLERS) {
    const stopsAtSigmaMin = entry.name === 'DPM fast' || entry.name === 'DPM adaptive';
    const eta = stopsAtSigmaMin ? 0 : null;
    for (const [mu, s] of [[0.7, 0], [0.3, 0.5]] as const) {
      const common = { sampler: entry.name, steps: 8, schedule, noise, eta };
      const v = await sample({ ...common, model: idealV(mu, s), prediction: 'v_prediction', randn: randnFrom(4) });
      const e = await sample({ ...common, model: idealEps(mu, s), prediction: 'epsilon', randn: randnFrom(4) });
      assert.ok(v.latent.every(Number.isFinite), `${entry.name}: finite`);
      assert.ok(maxErr(v.latent, e.latent) < 2e-4, `${entry.name} (s=${s}): v run differs from eps run by ${maxErr(v.latent, e.latent)}`);
      // k-diffusion samplers end at sigma 0, where a point mass leaves nothing but the point.
      if (s === 0 && entry.impl.family === 'k' && !stopsAtSigmaMin) {
        assert.ok(maxErr(v.latent, mu) < 1e-5, `${entry.name}: ends ${maxErr(v.latent, mu)} from the point`);
      }
    }
  }
});

test('a v model sampled as eps goes astray; an unknown prediction type is refused', async () => {
  const noise = randnFrom(5)(N);
  const [mu, s] = [0.3, 0.5];
  for (const sampler of ['Euler', 'DDIM']) {
    const common = { sampler, steps: 8, schedule, noise, randn: randnFrom(6) };
    const right = await sample({ ...common, model: idealEps(mu, s) });
    const wrong = await sample({ ...common, model: idealV(mu, s), prediction: 'epsilon' });
    const d = maxErr(wrong.latent, right.latent);
    assert.ok(d > 0.05, `${sampler}: reading v as eps must not work (${d})`);
  }
  await assert.rejects(
    sample({ sampler: 'Euler', steps: 2, model: idealV(mu, s), schedule, noise, randn: randnFrom(6), prediction: 'x0' as never }),
    /prediction must be 'epsilon' or 'v_prediction'/,
  );
});
