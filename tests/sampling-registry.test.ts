import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isUserError } from '../engine/util/errors.ts';
import { cfgModel, guide } from '../engine/sampling/cfg.ts';
import { a1111Timesteps } from '../engine/sampling/ddim-plms.ts';
import { img2imgSteps } from '../engine/sampling/img2img.ts';
import { A1111_SAMPLER_NAMES, listSamplersForApi, resolutionNotes, resolveSampler, samplerUsesEnsd } from '../engine/sampling/registry.ts';
import { SAMPLERS as SERVER_SAMPLERS, resolveSampler as serverResolve } from '../server/samplers.ts';
import { sample, samplerSigmas } from '../engine/sampling/sample.ts';
import { karrasSigmas } from '../engine/sampling/schedulers.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';
import type { EpsModel, ModelCall } from '../engine/sampling/types.ts';

const schedule = DiscreteSchedule.fromTrainSchedule();

test('GET /sdapi/v1/samplers: A1111 order, aliases and stringified options', () => {
  const list = listSamplersForApi();
  assert.deepEqual(list[0], { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], options: { scheduler: 'karras' } });
  const names = list.map((s) => s.name);
  assert.deepEqual(names, A1111_SAMPLER_NAMES.filter((n) => names.includes(n)), 'A1111 order');
  for (const n of ['Euler a', 'Euler', 'LMS', 'Heun', 'DPM2', 'DPM2 a', 'DPM++ 2M', 'DPM++ SDE', 'DPM++ 2M SDE', 'DDIM', 'PLMS', 'UniPC']) {
    assert.ok(names.includes(n), `${n} is offered`);
  }
  assert.deepEqual(list.find((s) => s.name === 'DPM++ SDE')!.options, { scheduler: 'karras', second_order: 'True', brownian_noise: 'True' });
  assert.deepEqual(list.find((s) => s.name === 'Euler a')!.aliases, ['k_euler_a', 'k_euler_ancestral']);
  for (const s of list) for (const v of Object.values(s.options)) assert.equal(typeof v, 'string');
});

test('sampler and schedule resolution follows get_sampler_and_scheduler', () => {
  const r1 = resolveSampler('DPM++ 2M Karras');
  assert.equal(r1.sampler.name, 'DPM++ 2M');
  assert.equal(r1.schedulerLabel, 'Automatic', 'the default schedule is reported as Automatic');
  const r2 = resolveSampler('DPM++ 2M SDE Karras');
  assert.deepEqual([r2.sampler.name, r2.schedulerLabel], ['DPM++ 2M SDE', 'Karras']);
  const r3 = resolveSampler('k_euler_a', 'karras');
  assert.deepEqual([r3.sampler.name, r3.schedulerLabel], ['Euler a', 'Karras']);
  const r4 = resolveSampler('Euler', 'SGMUniform');
  assert.equal(r4.schedulerLabel, 'SGM Uniform');
  const r5 = resolveSampler('Euler', 'no such schedule');
  assert.equal(r5.schedulerLabel, 'Automatic');
  assert.equal(resolveSampler(null).sampler.name, 'DPM++ 2M');
  const unknown = resolveSampler('Nonsense');
  assert.deepEqual([unknown.sampler.name, unknown.fallbackFrom], ['DPM++ 2M', 'Nonsense']);
  assert.equal(resolveSampler('DDIM CFG++').fallbackFrom, 'DDIM CFG++', 'not implemented here: default sampler, flagged');
  assert.equal(resolveSampler('k_dpm_fast').sampler.name, 'DPM fast');
  assert.equal(resolveSampler('euler A').sampler.name, 'Euler a', 'case-insensitive names');
  assert.equal(resolveSampler('DPM2 a Karras').sampler.name, 'DPM2 a');
  assert.equal(resolveSampler('LMS Karras').schedulerLabel, 'Karras');
});

test('a backend that runs fewer samplers: listed and resolved among those, the first of them the fallback, with a note', () => {
  const available = ['Euler', 'Euler a'];
  assert.deepEqual(listSamplersForApi(available).map((s) => s.name), ['Euler a', 'Euler'], "A1111's order");
  const ddim = resolveSampler('DDIM', null, available);
  assert.deepEqual([ddim.sampler.name, ddim.fallbackFrom], ['Euler a', 'DDIM']);
  assert.deepEqual(resolutionNotes(ddim), ["Sampler 'DDIM' is not available; used Euler a"]);
  assert.equal(resolveSampler('Euler Karras', null, available).schedulerLabel, 'Karras');
  assert.deepEqual(resolutionNotes(resolveSampler('Euler', 'no such schedule')), ["Scheduler 'no such schedule' is not available; used Automatic"]);
  assert.deepEqual(resolutionNotes(resolveSampler('', null)), [], 'an empty name is the default, not a fallback');
});

test('the server lists and resolves samplers from the engine table, only shaping them', () => {
  assert.deepEqual(SERVER_SAMPLERS, listSamplersForApi());
  const r = serverResolve('DPM++ 2M SDE Karras', null, SERVER_SAMPLERS.filter((s) => s.name !== 'DPM++ 2M'));
  assert.deepEqual(r, { sampler: 'DPM++ 2M SDE', scheduler: 'karras', schedulerLabel: 'Karras', notes: [] });
  const fallback = serverResolve('DPM++ 2M', null, SERVER_SAMPLERS.filter((s) => s.name !== 'DPM++ 2M'));
  assert.equal(fallback.sampler, 'DPM++ SDE', 'the first offered sampler');
  assert.deepEqual(fallback.notes, ["Sampler 'DPM++ 2M' is not available; used DPM++ SDE"]);
});

test("ENSD in the infotext: A1111's uses_ensd samplers with eta ≠ 0 only", () => {
  for (const name of ['Euler a', 'DPM++ 2S a', 'DPM2 a', 'DPM fast', 'DPM adaptive']) {
    assert.equal(samplerUsesEnsd(name, null), true, name);
    assert.equal(samplerUsesEnsd(name, 0), false, `${name} at eta 0`);
  }
  for (const name of ['Euler', 'DPM++ 2M', 'DPM++ SDE', 'DPM++ 2M SDE', 'DDIM', 'UniPC', 'LCM']) assert.equal(samplerUsesEnsd(name, 0.7), false, name);
});

/** A model that records its calls and returns a fixed eps. */
function recorder(): { model: EpsModel; calls: { input: Float32Array; t: number; call: ModelCall }[] } {
  const calls: { input: Float32Array; t: number; call: ModelCall }[] = [];
  return {
    calls,
    model: async (input, t, call) => {
      calls.push({ input: input.slice(), t, call });
      return Float32Array.from(input, (v) => 0.1 * v);
    },
  };
}

const constant = (n: number, v: number): Float32Array => new Float32Array(n).fill(v);

test('img2img step rule: t_enc = int(strength * steps), or stretched steps with img2img_fix_steps', () => {
  assert.deepEqual(img2imgSteps(20, 0.75), { steps: 20, tEnc: 15 });
  assert.deepEqual(img2imgSteps(20, 1), { steps: 20, tEnc: 19 }, 'strength is capped at 0.999');
  assert.deepEqual(img2imgSteps(20, 0.5, true), { steps: 40, tEnc: 19 });
  assert.deepEqual(img2imgSteps(7, 0.3), { steps: 7, tEnc: 2 });
  assert.throws(() => img2imgSteps(20, 1.5), isUserError);
  assert.throws(() => img2imgSteps(0, 0.5), isUserError);
});

test('img2img with a k-diffusion sampler starts at sigmas[steps - t_enc - 1] from init + noise * sigma', async () => {
  const n = 16;
  const init = constant(n, 0.25);
  const noise = constant(n, -1);
  const steps = 20;
  const strength = 0.6;
  const { tEnc } = img2imgSteps(steps, strength);
  const rec = recorder();
  const r = await sample({
    sampler: 'DPM++ 2M', steps, model: rec.model, schedule, noise, randn: () => assert.fail('no draws'),
    img2img: { init, denoisingStrength: strength },
  });
  const all = karrasSigmas(steps, schedule.sigmaMin, schedule.sigmaMax);
  assert.deepEqual(r.plan.sigmas, all.slice(steps - tEnc - 1));
  assert.equal(rec.calls.length, tEnc + 1);
  const s0 = all[steps - tEnc - 1]!;
  const cIn = 1 / Math.sqrt(s0 * s0 + 1);
  for (const v of rec.calls[0]!.input) assert.ok(Math.abs(v - (0.25 - s0) * cIn) < 1e-6);
  assert.ok(Math.abs(rec.calls[0]!.t - schedule.sigmaToT(s0)) < 1e-9);
  assert.equal(rec.calls[0]!.call.total, tEnc + 1);

  const fixed = recorder();
  await sample({ sampler: 'Euler', steps: 10, model: fixed.model, schedule, noise, randn: () => new Float32Array(n), img2img: { init, denoisingStrength: 0.5, fixSteps: true } });
  assert.equal(fixed.calls.length, 10, 'img2img_fix_steps runs exactly the requested steps');
});

test('img2img with DDIM noises to timesteps[t_enc] and samples timesteps[:t_enc] as A1111 does', async () => {
  const n = 8;
  const init = constant(n, 0.5);
  const noise = constant(n, 2);
  const steps = 10;
  const strength = 0.5;
  const { tEnc } = img2imgSteps(steps, strength);
  const ts = a1111Timesteps(steps);
  const rec = recorder();
  const r = await sample({ sampler: 'DDIM', steps, model: rec.model, schedule, noise, randn: (k) => new Float32Array(k), img2img: { init, denoisingStrength: strength } });
  assert.deepEqual(r.plan.timesteps, ts.slice(0, tEnc));
  assert.equal(rec.calls.length, tEnc - 1);
  const a = schedule.alphasCumprod[ts[tEnc]!]!;
  for (const v of rec.calls[0]!.input) assert.ok(Math.abs(v - (0.5 * Math.sqrt(a) + 2 * Math.sqrt(1 - a))) < 1e-6);
  assert.equal(rec.calls[0]!.t, ts[tEnc - 1]);

  const uni = recorder();
  await sample({ sampler: 'UniPC', steps, model: uni.model, schedule, noise, randn: (k) => new Float32Array(k), img2img: { init, denoisingStrength: strength } });
  assert.equal(uni.calls.length, tEnc);
  assert.ok(Math.abs(uni.calls[0]!.t - ts[tEnc - 1]!) < 1e-6, 'UniPC starts at t_start = (timesteps[t_enc - 1] + 1) / 1000');
});

test('txt2img: model-call counts, timesteps and scaling per family', async () => {
  const n = 4;
  const noise = constant(n, 1);
  const randn = (k: number) => new Float32Array(k);
  const counts: Record<string, number> = {};
  for (const name of ['Euler', 'Heun', 'DPM2', 'DPM++ 2M', 'DPM++ SDE', 'LMS', 'PLMS', 'UniPC', 'DDIM']) {
    const rec = recorder();
    await sample({ sampler: name, steps: 10, model: rec.model, schedule, noise, randn });
    counts[name] = rec.calls.length;
  }
  // Heun skips its second evaluation on the last step; DPM2 samples 11 sigmas and drops one; PLMS's first step costs two.
  assert.deepEqual(counts, { Euler: 10, Heun: 19, DPM2: 19, 'DPM++ 2M': 10, 'DPM++ SDE': 19, LMS: 10, PLMS: 10, UniPC: 10, DDIM: 9 });
  const rec = recorder();
  await sample({ sampler: 'UniPC', steps: 10, model: rec.model, schedule, noise, randn });
  assert.ok(Math.abs(rec.calls[0]!.t - 999) < 1e-9 && Math.abs(rec.calls.at(-1)!.t - 99.9) < 1e-6, 'UniPC times (t - 1/N) * 1000');
  assert.deepEqual(rec.calls[0]!.input, noise, 'timestep samplers feed the VP latent unscaled');
  const k = recorder();
  const r = await sample({ sampler: 'Euler a', scheduler: 'Exponential', steps: 5, model: k.model, schedule, noise, randn });
  assert.equal(r.scheduleType, 'Exponential');
  const s0 = r.plan.sigmas![0]!;
  assert.ok(Math.abs(k.calls[0]!.input[0]! - s0 / Math.sqrt(s0 * s0 + 1)) < 1e-6, 'k-diffusion input is noise * sigma_max * c_in');
  assert.deepEqual(samplerSigmas(resolveSampler('Euler a').sampler, 'exponential', 5, schedule), r.plan.sigmas);
});

test('bad requests are user errors', async () => {
  const rec = recorder();
  const base = { sampler: 'Euler', model: rec.model, schedule, noise: constant(4, 0), randn: (k: number) => new Float32Array(k) };
  await assert.rejects(sample({ ...base, steps: 0 }), isUserError);
  await assert.rejects(sample({ ...base, sampler: 'DDIM', steps: 1001 }), isUserError);
  await assert.rejects(sample({ ...base, steps: 5, img2img: { init: constant(3, 0), denoisingStrength: 0.5 } }), isUserError);
  await assert.rejects(sample({ ...base, steps: 5, img2img: { init: constant(4, 0), denoisingStrength: -0.1 } }), isUserError);
  const wrong: EpsModel = async () => new Float32Array(3);
  await assert.rejects(sample({ ...base, steps: 5, model: wrong }), /eps model output/);
});

test('LCM: UNet called at LCM timesteps 20j + 19 with the consistency boundary scalings', async () => {
  const rec = recorder();
  const noise = constant(4, 1);
  const r = await sample({ sampler: 'k_lcm', steps: 5, model: rec.model, schedule, noise, randn: (k) => new Float32Array(k) });
  assert.equal(r.sampler, 'LCM');
  assert.equal(rec.calls.length, 5);
  for (const c of rec.calls) assert.ok(Number.isInteger(c.t) && (c.t - 19) % 20 === 0, `LCM timestep ${c.t}`);
  assert.equal(rec.calls[0]!.t, 999);
  assert.equal(rec.calls.at(-1)!.t, 19);
  // One step from sigma_max with a model that predicts eps = 0.1 * input: the result is c_out * x0 + c_skip * x.
  const one = recorder();
  const r1 = await sample({ sampler: 'LCM', steps: 1, model: one.model, schedule, noise, randn: (k) => new Float32Array(k) });
  const s = schedule.sigmaMax;
  const x = s;
  const x0 = x - s * 0.1 * (x / Math.sqrt(s * s + 1));
  const T = 9990;
  const want = (T / Math.sqrt(T * T + 0.25)) * x0 + (0.25 / (T * T + 0.25)) * x;
  for (const v of r1.latent) assert.ok(Math.abs(v - want) < 1e-4 * Math.abs(want), `${v} vs ${want}`);
});

test('CFG helper: uncond + scale * (cond - uncond), applied per model call', async () => {
  const cond = Float32Array.from([1, 2, -3]);
  const uncond = Float32Array.from([0.5, 2, 1]);
  assert.deepEqual(guide(cond, uncond, 7), Float32Array.from([4, 2, -27]));
  assert.deepEqual(guide(cond, uncond, 1), cond);
  const seen: number[] = [];
  const model = cfgModel(async (input, t) => (seen.push(t), { cond: input, uncond: new Float32Array(input.length) }), 2);
  assert.deepEqual(await model(Float32Array.from([1, -1, 0.5]), 12.5, { sigma: 1, index: 0, total: 1 }), Float32Array.from([2, -2, 1]));
  assert.deepEqual(seen, [12.5]);
  const short = cfgModel(async () => ({ cond: new Float32Array(1), uncond: new Float32Array(1) }), 2);
  await assert.rejects(short(new Float32Array(2), 1, { sigma: 1, index: 0, total: 1 }), /conditional eps/);
});
