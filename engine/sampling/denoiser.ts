import type { Denoise, EpsModel } from './types.ts';
import type { DiscreteSchedule } from './training-schedule.ts';
import { checkSameLength } from './vec.ts';

/**
 * k-diffusion's CompVisDenoiser over an eps model: the UNet sees x * c_in with c_in = 1 / sqrt(sigma^2 + 1)
 * at the fractional timestep sigma_to_t(sigma), and the x0 estimate is x - sigma * eps.
 */
export function compVisDenoiser(model: EpsModel, schedule: DiscreteSchedule, total: number): Denoise {
  return async (x, sigma, index) => {
    const cIn = 1 / Math.sqrt(sigma * sigma + 1);
    const input = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) input[i] = x[i]! * cIn;
    const eps = await model(input, schedule.sigmaToT(sigma), { sigma, index, total });
    checkSameLength(x, eps, 'eps model output');
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i]! - sigma * eps[i]!;
    return out;
  };
}

/**
 * k-diffusion's CompVisVDenoiser, for v-prediction models (SD 2.x 768-v): the UNet sees the same input and
 * timestep as above but predicts v = alpha * eps - sigma_vp * x0 (Salimans & Ho 2022), so the x0 estimate is
 * x * c_skip + v * c_out with c_skip = 1 / (sigma^2 + 1) and c_out = -sigma / sqrt(sigma^2 + 1).
 */
export function compVisVDenoiser(model: EpsModel, schedule: DiscreteSchedule, total: number): Denoise {
  return async (x, sigma, index) => {
    const s2 = sigma * sigma + 1;
    const cIn = 1 / Math.sqrt(s2);
    const input = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) input[i] = x[i]! * cIn;
    const v = await model(input, schedule.sigmaToT(sigma), { sigma, index, total });
    checkSameLength(x, v, 'v model output');
    const cSkip = 1 / s2;
    const cOut = -sigma * cIn;
    const out = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) out[i] = x[i]! * cSkip + v[i]! * cOut;
    return out;
  };
}

/**
 * A v-prediction model seen as an eps model, for the samplers that work in eps (DDIM, PLMS, UniPC, LCM).
 * Every sampler hands the model the variance-preserving latent x_t = alpha * x0 + sigma_vp * eps together
 * with its k-diffusion sigma = sigma_vp / alpha, so alpha = 1 / sqrt(sigma^2 + 1), sigma_vp = sigma * alpha,
 * and eps = alpha * v + sigma_vp * x_t (A1111's predict_eps_from_z_and_v).
 */
export function vPredictionAsEps(model: EpsModel): EpsModel {
  return async (unetInput, t, call) => {
    const v = await model(unetInput, t, call);
    checkSameLength(unetInput, v, 'v model output');
    const alpha = 1 / Math.sqrt(call.sigma * call.sigma + 1);
    const sigmaVp = call.sigma * alpha;
    const eps = new Float32Array(v.length);
    for (let i = 0; i < v.length; i++) eps[i] = alpha * v[i]! + sigmaVp * unetInput[i]!;
    return eps;
  };
}
