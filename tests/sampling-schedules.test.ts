import { test } from 'node:test';
import assert from 'node:assert/strict';
import { betaCdf, betaPpf } from '../engine/sampling/beta-distribution.ts';
import { a1111Timesteps } from '../engine/sampling/ddim-plms.ts';
import { findSampler } from '../engine/sampling/registry.ts';
import { samplerSigmas } from '../engine/sampling/sample.ts';
import {
  alignYourStepsSigmas, betaSigmas, ddimSigmas, exponentialSigmas, karrasSigmas, klOptimalSigmas, listSchedulersForApi,
  normalSigmas, polyexponentialSigmas, sgmUniformSigmas, simpleSigmas, uniformSigmas,
} from '../engine/sampling/schedulers.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';

const model = DiscreteSchedule.fromTrainSchedule();
const { sigmaMin, sigmaMax } = model;
const near = (a: number, b: number, rel = 1e-6): boolean => Math.abs(a - b) <= rel * Math.max(Math.abs(a), Math.abs(b));

function checkShape(s: number[], steps: number, what: string, endsAtZero = true): void {
  assert.equal(s.length, steps + 1, `${what}: ${steps} steps`);
  for (let i = 1; i < s.length; i++) assert.ok(s[i]! < s[i - 1]!, `${what}: decreasing at ${i}`);
  if (endsAtZero) assert.equal(s[s.length - 1], 0, `${what}: ends at 0`);
}

test('Karras, Exponential, Polyexponential span the model sigma range with their spacing', () => {
  const n = 12;
  const k = karrasSigmas(n, sigmaMin, sigmaMax);
  checkShape(k, n, 'karras');
  assert.ok(near(k[0]!, sigmaMax) && near(k[n - 1]!, sigmaMin));
  // Evenly spaced in sigma^(1/rho).
  const inv = k.slice(0, n).map((v) => v ** (1 / 7));
  for (let i = 2; i < n; i++) assert.ok(Math.abs(inv[i]! - inv[i - 1]! - (inv[1]! - inv[0]!)) < 1e-5);
  const e = exponentialSigmas(n, sigmaMin, sigmaMax);
  checkShape(e, n, 'exponential');
  for (let i = 2; i < n; i++) assert.ok(near(e[i]! / e[i - 1]!, e[1]! / e[0]!, 1e-5), 'geometric');
  const p = polyexponentialSigmas(n, sigmaMin, sigmaMax, 1);
  p.forEach((v, i) => assert.ok(near(v, e[i]!, 1e-6) || v === e[i], 'polyexponential rho 1 = exponential'));
  assert.notDeepEqual(polyexponentialSigmas(n, sigmaMin, sigmaMax, 2), p);
});

test('model-based schedules: Uniform, SGM Uniform, Normal, Simple, DDIM pick the documented timesteps', () => {
  for (const n of [4, 7, 20, 33]) {
    const u = uniformSigmas(n, model);
    checkShape(u, n, 'uniform');
    u.slice(0, n).forEach((v, i) => assert.ok(Math.abs(model.sigmaToT(v) - (999 - (999 * i) / (n - 1))) < 1e-3, `uniform t ${i}`));
    const sgm = sgmUniformSigmas(n, model);
    checkShape(sgm, n, 'sgm_uniform');
    sgm.slice(0, n).forEach((v, i) => assert.ok(Math.abs(model.sigmaToT(v) - (999 - (999 * i) / n)) < 1e-3, `sgm t ${i}`));
    const nm = normalSigmas(n, model);
    checkShape(nm, n, 'normal');
    assert.ok(near(nm[0]!, sigmaMax, 1e-5) && near(nm[n - 1]!, sigmaMin, 1e-5));
    const sm = simpleSigmas(n, model);
    checkShape(sm, n, 'simple');
    sm.slice(0, n).forEach((v, i) => assert.equal(v, model.sigmas[999 - Math.trunc((i * 1000) / n)]));
    // A1111's DDIM schedule is the DDIM sampler's timesteps as sigmas (n + 1 of them when n does not divide 1000).
    const dd = ddimSigmas(n, model);
    assert.deepEqual(dd, [...a1111Timesteps(n).reverse().map((t) => model.sigmas[t]!), 0]);
  }
});

test('Beta schedule: scipy-equivalent quantiles, symmetric for alpha = beta', () => {
  for (const p of [0.01, 0.2, 0.5, 0.77, 0.99]) {
    assert.ok(Math.abs(betaCdf(betaPpf(p, 0.6, 0.6), 0.6, 0.6) - p) < 1e-10);
    // Closed forms: Beta(2, 2) CDF 3x^2 - 2x^3, Beta(1/2, 1/2) CDF (2/pi) asin(sqrt x), Beta(1, 1) uniform.
    const x = betaPpf(p, 2, 2);
    assert.ok(Math.abs(3 * x * x - 2 * x ** 3 - p) < 1e-10);
    assert.ok(Math.abs((2 / Math.PI) * Math.asin(Math.sqrt(betaPpf(p, 0.5, 0.5))) - p) < 1e-10);
    assert.ok(Math.abs(betaPpf(p, 1, 1) - p) < 1e-10);
  }
  assert.equal(betaPpf(0.5, 0.6, 0.6).toFixed(10), '0.5000000000');
  const n = 9;
  const b = betaSigmas(n, sigmaMin, sigmaMax);
  checkShape(b, n, 'beta');
  assert.ok(near(b[0]!, sigmaMax) && near(b[n - 1]!, sigmaMin));
  for (let i = 0; i < n; i++) assert.ok(Math.abs(b[i]! + b[n - 1 - i]! - (sigmaMin + sigmaMax)) < 1e-5, 'symmetric');
});

test('KL Optimal and Align Your Steps', () => {
  const n = 10;
  const kl = klOptimalSigmas(n, sigmaMin, sigmaMax);
  checkShape(kl, n, 'kl_optimal', false);
  assert.ok(near(kl[0]!, sigmaMax) && near(kl[n]!, sigmaMin), 'A1111 ends KL Optimal at sigma_min, not 0');
  const at = kl.map(Math.atan);
  for (let i = 2; i <= n; i++) assert.ok(Math.abs(at[i]! - at[i - 1]! - (at[1]! - at[0]!)) < 1e-6);
  const table = alignYourStepsSigmas(11);
  checkShape(table, 11, 'ays 11');
  assert.ok(near(table[0]!, 14.615) && near(table[10]!, 0.029));
  const five = alignYourStepsSigmas(5);
  checkShape(five, 5, 'ays 5');
  assert.ok(near(five[0]!, 14.615) && near(five[4]!, 0.029));
  assert.notDeepEqual(alignYourStepsSigmas(11, true), table, 'SDXL table differs');
});

test('samplers whose A1111 option discards the penultimate sigma sample one more step and drop it', () => {
  const dpm2 = findSampler('DPM2')!;
  const s = samplerSigmas(dpm2, null, 10, model);
  const k11 = karrasSigmas(11, sigmaMin, sigmaMax);
  assert.deepEqual(s, [...k11.slice(0, 10), 0]);
  const euler = findSampler('Euler')!;
  assert.deepEqual(samplerSigmas(euler, null, 10, model), uniformSigmas(10, model));
  assert.deepEqual(samplerSigmas(euler, 'Karras', 10, model), karrasSigmas(10, sigmaMin, sigmaMax));
  assert.deepEqual(samplerSigmas(euler, null, 10, model, {}, true), [...uniformSigmas(11, model).slice(0, 10), 0]);
  assert.deepEqual(samplerSigmas(euler, 'karras', 10, model, { rho: 3 }), karrasSigmas(10, sigmaMin, sigmaMax, 3));
});

test('GET /sdapi/v1/schedulers lists A1111 v1.10 schedulers in order with its fields', () => {
  const list = listSchedulersForApi();
  assert.deepEqual(
    list.map((s) => s.name),
    ['automatic', 'uniform', 'karras', 'exponential', 'polyexponential', 'sgm_uniform', 'kl_optimal', 'align_your_steps', 'simple', 'normal', 'ddim', 'beta'],
  );
  assert.deepEqual(list[2], { name: 'karras', label: 'Karras', aliases: null, default_rho: 7, need_inner_model: false });
  assert.deepEqual(list[5], { name: 'sgm_uniform', label: 'SGM Uniform', aliases: ['SGMUniform'], default_rho: -1, need_inner_model: true });
  assert.deepEqual(list.filter((s) => s.need_inner_model).map((s) => s.name), ['uniform', 'sgm_uniform', 'simple', 'normal', 'ddim', 'beta']);
  assert.equal(list.find((s) => s.name === 'polyexponential')!.default_rho, 1);
});
