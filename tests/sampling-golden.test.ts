import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { a1111Timesteps, sampleDdim } from '../engine/sampling/ddim-plms.ts';
import { sample } from '../engine/sampling/sample.ts';
import { uniformSigmas } from '../engine/sampling/schedulers.ts';
import { alphasCumprod, DiscreteSchedule, type TrainSchedule } from '../engine/sampling/training-schedule.ts';
import type { EpsModel } from '../engine/sampling/types.ts';
import { fixturesDir } from './support/paths.ts';

// Samplers against the sd-tiny goldens: the model callback replays diffusers' guided eps for each step and
// checks that the sampler hands the UNet the input diffusers gave it.

const root = join(fixturesDir, 'sd-tiny');

interface Tol {
  atol: number;
  rtol: number;
}
interface Manifest {
  config: { steps: number; schedule: { num_train_timesteps: number; beta_start: number; beta_end: number; beta_schedule: string } };
  tensors: { file: string; key: string; shape: number[]; recommended_tolerance?: Tol }[];
}

const manifest: Manifest = JSON.parse(await readFile(join(root, 'manifest.json'), 'utf8'));
const tolOf = (file: string, key: string): Tol => {
  const t = manifest.tensors.find((e) => e.file === file && e.key === key)?.recommended_tolerance;
  assert.ok(t, `manifest has a tolerance for ${file}/${key}`);
  return t;
};
const trainSchedule: TrainSchedule = {
  numTrainTimesteps: manifest.config.schedule.num_train_timesteps,
  betaStart: manifest.config.schedule.beta_start,
  betaEnd: manifest.config.schedule.beta_end,
  betaSchedule: manifest.config.schedule.beta_schedule as TrainSchedule['betaSchedule'],
};

async function load(file: string, key: string): Promise<{ data: Float32Array; shape: number[] }> {
  const f = await SafetensorsFile.open(join(root, file));
  try {
    return { data: await f.readFloat32(key), shape: [...f.info(key).shape] };
  } finally {
    await f.close();
  }
}

/** Row i of a [k, ...] tensor. */
function row(t: { data: Float32Array; shape: number[] }, i: number): Float32Array {
  const size = t.data.length / t.shape[0]!;
  return t.data.subarray(i * size, (i + 1) * size);
}

function assertClose(ours: ArrayLike<number>, golden: ArrayLike<number>, tol: Tol, what: string): number {
  assert.equal(ours.length, golden.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < golden.length; i++) {
    const err = Math.abs(ours[i]! - golden[i]!);
    const allowed = tol.atol + tol.rtol * Math.abs(golden[i]!);
    assert.ok(err <= allowed, `${what}[${i}]: ${ours[i]} vs golden ${golden[i]} (|diff| ${err} > ${allowed})`);
    worst = Math.max(worst, err);
  }
  return worst;
}

const scheduleFile = 'golden/schedule.safetensors';
const goldenAcp = await load(scheduleFile, 'alphas_cumprod');
const schedule = new DiscreteSchedule(alphasCumprod(trainSchedule));
const steps = manifest.config.steps;

test('alphas_cumprod from the training config match diffusers float32 values', () => {
  const ours = alphasCumprod(trainSchedule, 'float32');
  // float32 rounding of a cumulative product: within a couple of ulps of values <= 1.
  assertClose(ours, goldenAcp.data, { atol: 1.5e-7, rtol: 0 }, 'alphas_cumprod');
  // The LDM (float64) variant is a different, documented rounding; it must still be close but not identical.
  const ldm = alphasCumprod(trainSchedule, 'float64');
  assertClose(ldm, goldenAcp.data, { atol: 0, rtol: 2e-6 }, 'alphas_cumprod (float64)');
  assert.ok(ldm.some((v, i) => v !== goldenAcp.data[i]), 'float64 cumprod rounds differently');
});

test('Uniform (A1111 Euler default) sigmas and sigma -> t match the Euler golden schedule', async () => {
  const goldenSigmas = await load(scheduleFile, 'euler_sigmas');
  const goldenT = await load(scheduleFile, 'euler_timesteps');
  const sigmas = uniformSigmas(steps, schedule);
  assert.equal(sigmas.length, goldenSigmas.data.length);
  // log/exp round trip in float32: relative error of a few ulps.
  assertClose(sigmas, goldenSigmas.data, { atol: 0, rtol: 2e-6 }, 'euler_sigmas');
  const ts = goldenSigmas.data.subarray(0, steps).map((s) => schedule.sigmaToT(s));
  assertClose(ts, goldenT.data, { atol: 1e-3, rtol: 0 }, 'sigma_to_t(euler_sigmas)');
  for (let i = 0; i < steps; i++) assert.ok(Math.abs(schedule.tToSigma(goldenT.data[i]!) - goldenSigmas.data[i]!) <= 2e-6 * goldenSigmas.data[i]!);
});

test('A1111 DDIM timesteps are the golden DDIM timesteps (leading spacing + 1)', async () => {
  const golden = await load(scheduleFile, 'ddim_timesteps');
  assert.deepEqual([...a1111Timesteps(steps)].reverse(), [...golden.data]);
});

/** A model that replays golden guided eps and checks what the sampler feeds the UNet. */
function replay(
  eps: { data: Float32Array; shape: number[] },
  expectInput: (i: number) => Float32Array,
  expectT: (i: number) => number,
  tol: Tol,
): { model: EpsModel; calls: () => number } {
  let calls = 0;
  const model: EpsModel = async (input, t, call) => {
    const i = calls++;
    assert.ok(i < eps.shape[0]!, `model called more than ${eps.shape[0]} times`);
    assert.equal(call.index, i);
    assertClose(input, expectInput(i), tol, `UNet input at step ${i}`);
    assert.ok(Math.abs(t - expectT(i)) <= 1e-3, `timestep at step ${i}: ${t} vs ${expectT(i)}`);
    return row(eps, i).slice();
  };
  return { model, calls: () => calls };
}

test('Euler through the registry reproduces the diffusers Euler trajectory', async () => {
  const file = 'golden/sample_euler.safetensors';
  const latents = await load(file, 'latents');
  const eps = await load(file, 'guided_eps');
  const sigmas = (await load(scheduleFile, 'euler_sigmas')).data;
  const ts = (await load(scheduleFile, 'euler_timesteps')).data;
  const noise = (await load('golden/inputs.safetensors', 'sample_noise')).data;
  const tol = tolOf(file, 'latents');
  // The UNet input is the golden latent scaled by c_in = 1 / sqrt(sigma^2 + 1).
  const { model, calls } = replay(eps, (i) => row(latents, i).map((v) => v / Math.sqrt(sigmas[i]! ** 2 + 1)), (i) => ts[i]!, tol);
  const seen: Float32Array[] = [];
  const r = await sample({
    sampler: 'Euler', steps, model, schedule, noise,
    randn: () => assert.fail('Euler must not draw noise'),
    onStep: ({ x }) => void seen.push(x),
  });
  assert.equal(calls(), steps);
  assert.equal(r.sampler, 'Euler');
  assert.equal(r.scheduleType, 'Automatic');
  for (let i = 0; i < steps; i++) assertClose(seen[i]!, row(latents, i + 1), tol, `latent after step ${i + 1}`);
  assertClose(r.latent, row(latents, steps), tol, 'final latent');
});

test('DDIM reproduces the diffusers DDIM trajectory; A1111 DDIM stops one transition early', async () => {
  const file = 'golden/sample_ddim.safetensors';
  const latents = await load(file, 'latents');
  const eps = await load(file, 'guided_eps');
  const ts = (await load(scheduleFile, 'ddim_timesteps')).data;
  const noise = (await load('golden/inputs.safetensors', 'sample_noise')).data;
  const tol = tolOf(file, 'latents');
  assertClose(noise, row(latents, 0), { atol: 0, rtol: 0 }, 'DDIM starts from the raw noise');

  // LDM / diffusers walk: every timestep, the last one landing on acp[0].
  const full = replay(eps, (i) => row(latents, i), (i) => ts[i]!, tol);
  const seen: Float32Array[] = [];
  const out = await sampleDdim({
    model: full.model, schedule, x: noise, timesteps: a1111Timesteps(steps), includeFinal: true,
    onStep: ({ x }) => void seen.push(x),
  });
  assert.equal(full.calls(), steps);
  for (let i = 0; i < steps; i++) assertClose(seen[i]!, row(latents, i + 1), tol, `DDIM latent after step ${i + 1}`);
  assertClose(out, row(latents, steps), tol, 'DDIM final latent');

  // A1111 v1.10 (sd_samplers_timesteps_impl.ddim) runs len(timesteps) - 1 transitions: its result is golden step steps-1.
  const a1111 = replay(eps, (i) => row(latents, i), (i) => ts[i]!, tol);
  let draws = 0;
  const r = await sample({
    sampler: 'ddim', steps, model: a1111.model, schedule, noise,
    randn: (n) => (draws++, new Float32Array(n).fill(1)),
  });
  assert.equal(r.sampler, 'DDIM');
  assert.equal(a1111.calls(), steps - 1);
  assert.equal(draws, steps - 1, 'A1111 draws one (eta-scaled) noise per DDIM step even at eta 0');
  assertClose(r.latent, row(latents, steps - 1), tol, 'A1111 DDIM result');
});
