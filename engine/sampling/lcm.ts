import { DiscreteSchedule } from './training-schedule.ts';
import type { Denoise, EpsModel } from './types.ts';
import { checkSameLength } from './vec.ts';

/**
 * A1111's "LCM" (modules/sd_samplers_lcm.py) for latent-consistency models / LCM-LoRA: the model is seen
 * through LCM's 50 "original" timesteps t = 20 j + 19, the UNet is called at the nearest of them (an integer),
 * and its x0 estimate goes through the consistency boundary condition
 *   denoised = c_skip * x + c_out * x0,  c_skip = 0.25 / (T^2 + 0.25),  c_out = T / sqrt(T^2 + 0.25),  T = 10 t.
 * The sampler itself (sampleLcm in euler.ts) jumps to that estimate and re-noises to the next sigma.
 */

const ORIGINAL_STEPS = 50;

export class LcmSchedule {
  readonly skip: number;
  /** The model's schedule restricted to LCM's timesteps (acp[skip * j + skip - 1]). */
  readonly inner: DiscreteSchedule;

  constructor(readonly model: DiscreteSchedule) {
    const n = model.numTimesteps;
    this.skip = Math.floor(n / ORIGINAL_STEPS);
    const acp = new Float32Array(ORIGINAL_STEPS);
    for (let x = 0; x < ORIGINAL_STEPS; x++) acp[ORIGINAL_STEPS - 1 - x] = model.alphasCumprod[n - 1 - x * this.skip]!;
    this.inner = new DiscreteSchedule(acp);
  }

  /** The nearest LCM timestep (in log sigma), as a training timestep. */
  sigmaToT(sigma: number): number {
    const ls = this.inner.logSigmas;
    const l = Math.log(sigma);
    let best = 0;
    for (let j = 1; j < ls.length; j++) if (Math.abs(l - ls[j]!) < Math.abs(l - ls[best]!)) best = j;
    return best * this.skip + (this.skip - 1);
  }

  tToSigma(timestep: number): number {
    const t = Math.min(Math.max((timestep - (this.skip - 1)) / this.skip, 0), this.inner.numTimesteps - 1);
    return this.inner.tToSigma(t);
  }

  /** A1111's LCM get_sigmas(n): LCM timesteps evenly spaced from sigma_max's to sigma_min's, then 0. */
  sigmas(n: number): number[] {
    const start = this.sigmaToT(this.inner.sigmaMax);
    const end = this.sigmaToT(this.inner.sigmaMin);
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(this.tToSigma(n === 1 ? start : start + ((end - start) * i) / (n - 1)));
    return [...out, 0];
  }
}

export function lcmDenoiser(model: EpsModel, lcm: LcmSchedule, total: number): Denoise {
  return async (x, sigma, index) => {
    const cIn = 1 / Math.sqrt(sigma * sigma + 1);
    const input = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) input[i] = x[i]! * cIn;
    const t = lcm.sigmaToT(sigma);
    const eps = await model(input, t, { sigma, index, total });
    checkSameLength(x, eps, 'eps model output');
    const T = t * 10;
    const cSkip = 0.25 / (T * T + 0.25);
    const cOut = T / Math.sqrt(T * T + 0.25);
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = cOut * (x[i]! - sigma * eps[i]!) + cSkip * x[i]!;
    return out;
  };
}
