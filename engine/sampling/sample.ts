import { UserError } from '../util/errors.ts';
import { a1111Timesteps, sampleDdim, samplePlms } from './ddim-plms.ts';
import { compVisDenoiser, compVisVDenoiser, vPredictionAsEps } from './denoiser.ts';
import { img2imgSteps } from './img2img.ts';
import { LcmSchedule, lcmDenoiser } from './lcm.ts';
import { BrownianNoise, independentNoise } from './noise.ts';
import { defaultEta, effectiveScheduler, resolveSampler, type SamplerEntry } from './registry.ts';
import { restartStepList } from './restart.ts';
import { uniformSigmas, type SchedulerContext } from './schedulers.ts';
import type { DiscreteSchedule } from './training-schedule.ts';
import type { EpsModel, KSamplerArgs, Randn, StepCallback } from './types.ts';
import { sampleUniPc } from './unipc.ts';

/**
 * One A1111 sampling run, txt2img or img2img: resolve the sampler and schedule type, build the noise levels or
 * timesteps, place the starting latent, and walk it down with the model.
 */

export interface SampleRequest {
  /** A1111 sampler name, alias, or legacy combined name such as "DPM++ 2M Karras"; null = the default (DPM++ 2M). */
  sampler: string | null;
  /** Schedule type name or label; null / "Automatic" = the sampler's default. */
  scheduler?: string | null;
  steps: number;
  /** The guided UNet: it predicts eps, or v where `prediction` says so. */
  model: EpsModel;
  /** What `model` predicts: 'epsilon' (SD 1.x, SD 2.x 512-base; the default) or 'v_prediction' (SD 2.x 768-v). */
  prediction?: 'epsilon' | 'v_prediction';
  schedule: DiscreteSchedule;
  /** N(0, 1) noise for the starting latent, the length of the latent batch. */
  noise: Float32Array;
  /** Later N(0, 1) draws (ancestral, SDE, DDIM). */
  randn: Randn;
  /** null = A1111's defaults: eta_ancestral 1 for k-diffusion samplers, eta_ddim 0 for DDIM. */
  eta?: number | null;
  sChurn?: number | null;
  sTmin?: number | null;
  sTmax?: number | null;
  sNoise?: number | null;
  /** img2img: the encoded image latent (already times the VAE scaling factor) and the denoising strength. */
  img2img?: { init: Float32Array; denoisingStrength: number; fixSteps?: boolean };
  /** Schedule knobs (A1111 options rho, beta_dist_alpha / beta; SDXL picks Align Your Steps' SDXL table). */
  scheduleOptions?: Omit<SchedulerContext, 'model'>;
  /** A1111 option always_discard_next_to_last_sigma. */
  alwaysDiscardPenultimate?: boolean;
  onStep?: StepCallback;
}

export interface SampleResult {
  latent: Float32Array;
  sampler: string;
  /** Infotext "Schedule type" ("Automatic" when it is the sampler's default). */
  scheduleType: string;
  /** Set when the requested sampler was unknown or not implemented and the default ran instead. */
  fallbackFrom?: string;
  /** Noise levels walked (k-diffusion samplers) or timesteps walked (DDIM / PLMS / UniPC), for infotext and tests. */
  plan: { sigmas?: number[]; timesteps?: number[] };
}

/** A1111 KDiffusionSampler.get_sigmas: the schedule for `steps`, one step longer and trimmed where the penultimate sigma is discarded. */
export function samplerSigmas(
  sampler: SamplerEntry,
  schedulerName: string | null | undefined,
  steps: number,
  schedule: DiscreteSchedule,
  options: Omit<SchedulerContext, 'model'> = {},
  alwaysDiscardPenultimate = false,
): number[] {
  const resolved = resolveSampler(sampler.name, schedulerName);
  const discard = sampler.discardPenultimate || alwaysDiscardPenultimate;
  const n = steps + (discard ? 1 : 0);
  const sched = effectiveScheduler(resolved);
  // LCM's "model" is its 50-timestep view of the schedule, so schedule types see that sigma range.
  const lcm = sampler.lcm ? new LcmSchedule(schedule) : undefined;
  const model = lcm ? lcm.inner : schedule;
  const sigmas = sched?.sigmas ? sched.sigmas(n, { ...options, model }) : lcm ? lcm.sigmas(n) : uniformSigmas(n, schedule);
  return discard ? [...sigmas.slice(0, -2), sigmas[sigmas.length - 1]!] : sigmas;
}

function checkLatent(v: Float32Array, n: number, what: string): void {
  if (v.length !== n) throw new UserError(`${what} has ${v.length} elements, expected ${n} (the latent batch)`);
}

export async function sample(req: SampleRequest): Promise<SampleResult> {
  if (!Number.isInteger(req.steps) || req.steps < 1) throw new UserError(`steps must be a positive integer, got ${req.steps}`);
  const resolved = resolveSampler(req.sampler, req.scheduler);
  const { sampler } = resolved;
  const n = req.noise.length;
  if (req.prediction !== undefined && req.prediction !== 'epsilon' && req.prediction !== 'v_prediction') {
    throw new UserError(`prediction must be 'epsilon' or 'v_prediction', got ${JSON.stringify(req.prediction)}`);
  }
  const v = req.prediction === 'v_prediction';
  // The k-diffusion samplers get k-diffusion's v denoiser; the others work in eps, so v is converted to eps.
  const epsModel = v ? vPredictionAsEps(req.model) : req.model;
  if (req.img2img) checkLatent(req.img2img.init, n, 'img2img init latent');
  const base = { sampler: sampler.name, scheduleType: resolved.schedulerLabel, ...(resolved.fallbackFrom !== undefined ? { fallbackFrom: resolved.fallbackFrom } : {}) };

  if (sampler.impl.family === 'timesteps') {
    const kind = sampler.impl.kind;
    const acp = req.schedule.alphasCumprod;
    const discard = sampler.discardPenultimate || req.alwaysDiscardPenultimate === true;
    let x: Float32Array;
    let timesteps: number[];
    let tStart: number | undefined;
    if (req.img2img) {
      const { steps, tEnc } = img2imgSteps(req.steps, req.img2img.denoisingStrength, req.img2img.fixSteps);
      const all = a1111Timesteps(steps + (discard ? 1 : 0), acp.length);
      // A1111 noises the image to timesteps[t_enc] but hands the sampler timesteps[:t_enc] (it then starts one timestep lower).
      const tNoise = all[Math.min(tEnc, all.length - 1)]!;
      timesteps = all.slice(0, tEnc);
      const a = acp[tNoise]!;
      x = new Float32Array(n);
      for (let i = 0; i < n; i++) x[i] = req.img2img.init[i]! * Math.sqrt(a) + req.noise[i]! * Math.sqrt(1 - a);
      tStart = timesteps.length ? timesteps[timesteps.length - 1]! / 1000 + 1 / 1000 : undefined;
      if (timesteps.length === 0) return { ...base, latent: x, plan: { timesteps } };
    } else {
      timesteps = a1111Timesteps(req.steps + (discard ? 1 : 0), acp.length);
      x = req.noise;
    }
    let latent: Float32Array;
    if (kind === 'unipc') {
      latent = await sampleUniPc({ model: epsModel, schedule: req.schedule, x, steps: timesteps.length, tStart, onStep: req.onStep });
    } else {
      const run = kind === 'ddim' ? sampleDdim : samplePlms;
      latent = await run({ model: epsModel, schedule: req.schedule, x, timesteps, eta: req.eta ?? defaultEta(sampler), randn: req.randn, onStep: req.onStep });
    }
    return { ...base, latent, plan: { timesteps } };
  }

  let sigmas: number[];
  let x: Float32Array;
  if (req.img2img) {
    const { steps, tEnc } = img2imgSteps(req.steps, req.img2img.denoisingStrength, req.img2img.fixSteps);
    if (steps === 0) return { ...base, latent: req.img2img.init, plan: { sigmas: [] } };
    const all = samplerSigmas(sampler, resolved.scheduler.name, steps, req.schedule, req.scheduleOptions, req.alwaysDiscardPenultimate);
    sigmas = all.slice(Math.max(0, steps - tEnc - 1));
    x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = req.img2img.init[i]! + req.noise[i]! * sigmas[0]!;
  } else {
    sigmas = samplerSigmas(sampler, resolved.scheduler.name, req.steps, req.schedule, req.scheduleOptions, req.alwaysDiscardPenultimate);
    x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = req.noise[i]! * sigmas[0]!;
  }
  const positive = sigmas.filter((s) => s > 0);
  const noise = sampler.brownian && positive.length
    ? new BrownianNoise(req.randn, n, Math.min(...positive), Math.max(...sigmas)).sample
    : independentNoise(req.randn, n);
  const total = sampler.name === 'Restart' ? restartStepList(sigmas).length : sigmas.length - 1;
  const args: KSamplerArgs = {
    denoise: sampler.lcm
      ? lcmDenoiser(epsModel, new LcmSchedule(req.schedule), total)
      : (v ? compVisVDenoiser : compVisDenoiser)(req.model, req.schedule, total),
    x,
    sigmas,
    noise,
    eta: req.eta ?? defaultEta(sampler),
    sNoise: req.sNoise ?? 1,
    sChurn: req.sChurn ?? 0,
    sTmin: req.sTmin ?? 0,
    sTmax: req.sTmax ?? Infinity,
    onStep: req.onStep,
  };
  // DPM fast / adaptive get the model's whole sigma range for txt2img, the schedule's span for img2img (as A1111).
  if (!req.img2img) args.sigmaRange = { sigmaMin: req.schedule.sigmaMin, sigmaMax: req.schedule.sigmaMax, n: req.steps };
  const latent = await sampler.impl.run(args);
  return { ...base, latent, plan: { sigmas } };
}
