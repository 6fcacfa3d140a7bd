import { UserError } from '../util/errors.ts';
import type { DiscreteSchedule } from './training-schedule.ts';
import type { EpsModel, Randn, StepCallback } from './types.ts';
import { checkSameLength } from './vec.ts';

/**
 * A1111's timestep samplers DDIM and PLMS (modules/sd_samplers_timesteps_impl.py). They work on the
 * variance-preserving latent x_t = sqrt(acp_t) x0 + sqrt(1 - acp_t) eps and call the UNet on x_t itself at
 * integer timesteps.
 *
 * A1111 takes the timesteps in ascending order [t_0 < t_1 < ... < t_k] and steps t_k -> t_(k-1) -> ... -> t_0:
 * k model calls for k + 1 timesteps, ending at noise level t_0 = 1, not at 0. With `includeFinal` the walk
 * continues t_0 -> "t = -1" using acp[0] as the last alpha, one more call: that is LDM's original DDIMSampler
 * and diffusers' DDIMScheduler (set_alpha_to_one false), which the sd-tiny goldens use.
 */

export interface TimestepSamplerArgs {
  model: EpsModel;
  schedule: DiscreteSchedule;
  /** Starting VP latent, at noise level of the last (largest) timestep. Not modified. */
  x: Float32Array;
  /** Ascending integer timesteps, as A1111's get_timesteps (or its img2img prefix). */
  timesteps: readonly number[];
  includeFinal?: boolean;
  /** DDIM only: 0 = deterministic (A1111 option eta_ddim, default 0). */
  eta?: number;
  /** DDIM draws one noise per step, as A1111 does even at eta 0 (it multiplies it by 0). */
  randn?: Randn;
  onStep?: StepCallback;
}

/** A1111 get_timesteps: range(0, 1000, 1000 // steps) + 1, clipped to 999 (steps + 1 entries if steps does not divide 1000). */
export function a1111Timesteps(steps: number, numTrainTimesteps = 1000): number[] {
  const stride = Math.floor(numTrainTimesteps / steps);
  if (!Number.isInteger(steps) || !(stride >= 1)) throw new UserError(`steps must be an integer between 1 and ${numTrainTimesteps} for DDIM / PLMS / UniPC, got ${steps}`);
  const out: number[] = [];
  for (let t = 0; t < numTrainTimesteps; t += stride) out.push(Math.min(t + 1, numTrainTimesteps - 1));
  return out;
}

interface Transition {
  index: number;
  t: number;
  aT: number;
  aPrev: number;
  tNext: number;
}

function transitions(args: TimestepSamplerArgs): Transition[] {
  const ts = args.timesteps;
  const acp = args.schedule.alphasCumprod;
  for (const t of ts) {
    if (!Number.isInteger(t) || t < 0 || t >= acp.length) throw new RangeError(`timestep ${t} is outside [0, ${acp.length - 1}]`);
  }
  const out: Transition[] = [];
  const last = args.includeFinal ? 0 : 1;
  for (let index = ts.length - 1; index >= last; index--) {
    const t = ts[index]!;
    // A1111 pads the previous-timestep list with 0, so the step from t_0 lands on acp[0].
    const tPrev = index > 0 ? ts[index - 1]! : 0;
    out.push({ index, t, aT: acp[t]!, aPrev: acp[tPrev]!, tNext: ts[Math.max(index - 1, 0)]! });
  }
  return out;
}

const sigmaOf = (a: number): number => Math.sqrt((1 - a) / a);

async function callModel(args: TimestepSamplerArgs, x: Float32Array, t: number, a: number, index: number, total: number): Promise<Float32Array> {
  const eps = await args.model(x, t, { sigma: sigmaOf(a), index, total });
  checkSameLength(x, eps, 'eps model output');
  return eps;
}

export async function sampleDdim(args: TimestepSamplerArgs): Promise<Float32Array> {
  const steps = transitions(args);
  const total = steps.length;
  const eta = args.eta ?? 0;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const { t, aT, aPrev } = steps[i]!;
    const eps = await callModel(args, x, t, aT, i, total);
    const sigmaT = eta * Math.sqrt(((1 - aPrev) / (1 - aT)) * (1 - aT / aPrev));
    const noise = args.randn ? args.randn(x.length) : undefined;
    if (noise && noise.length !== x.length) throw new Error(`randn returned ${noise.length} values, expected ${x.length}`);
    if (sigmaT > 0 && !noise) throw new Error('DDIM with eta > 0 needs a noise generator');
    const sqrtOneMinusAt = Math.sqrt(1 - aT);
    const sqrtAt = Math.sqrt(aT);
    const sqrtAPrev = Math.sqrt(aPrev);
    const dirCoef = Math.sqrt(Math.max(0, 1 - aPrev - sigmaT * sigmaT));
    const out = new Float32Array(x.length);
    const denoised = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      const x0 = (x[k]! - sqrtOneMinusAt * eps[k]!) / sqrtAt;
      denoised[k] = x0;
      out[k] = sqrtAPrev * x0 + dirCoef * eps[k]! + (sigmaT > 0 ? sigmaT * noise![k]! : 0);
    }
    x = out;
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

export async function samplePlms(args: TimestepSamplerArgs): Promise<Float32Array> {
  const steps = transitions(args);
  const total = steps.length;
  const acp = args.schedule.alphasCumprod;
  let x = args.x;
  const oldEps: Float32Array[] = [];
  const step = (xIn: Float32Array, e: Float32Array, aT: number, aPrev: number): { xPrev: Float32Array; x0: Float32Array } => {
    const xPrev = new Float32Array(xIn.length);
    const x0 = new Float32Array(xIn.length);
    const s1 = Math.sqrt(1 - aT);
    const sa = Math.sqrt(aT);
    const sp = Math.sqrt(aPrev);
    const dp = Math.sqrt(1 - aPrev);
    for (let k = 0; k < xIn.length; k++) {
      const p = (xIn[k]! - s1 * e[k]!) / sa;
      x0[k] = p;
      xPrev[k] = sp * p + dp * e[k]!;
    }
    return { xPrev, x0 };
  };
  for (let i = 0; i < total; i++) {
    const { t, aT, aPrev, tNext } = steps[i]!;
    const e = await callModel(args, x, t, aT, i, total);
    let ePrime: Float32Array;
    const n = x.length;
    if (oldEps.length === 0) {
      // Pseudo improved Euler: average with the eps at the predicted next point.
      const { xPrev } = step(x, e, aT, aPrev);
      const eNext = await callModel(args, xPrev, tNext, acp[tNext]!, i, total);
      ePrime = new Float32Array(n);
      for (let k = 0; k < n; k++) ePrime[k] = (e[k]! + eNext[k]!) / 2;
    } else {
      // Adams-Bashforth of order 2, 3, 4 on the eps history.
      const c =
        oldEps.length === 1 ? [3 / 2, -1 / 2] : oldEps.length === 2 ? [23 / 12, -16 / 12, 5 / 12] : [55 / 24, -59 / 24, 37 / 24, -9 / 24];
      ePrime = new Float32Array(n);
      for (let k = 0; k < n; k++) {
        let s = c[0]! * e[k]!;
        for (let j = 1; j < c.length; j++) s += c[j]! * oldEps[oldEps.length - j]![k]!;
        ePrime[k] = s;
      }
    }
    const { xPrev, x0 } = step(x, ePrime, aT, aPrev);
    oldEps.push(e);
    if (oldEps.length >= 4) oldEps.shift();
    x = xPrev;
    await args.onStep?.({ index: i, total, x, denoised: x0 });
  }
  return x;
}
