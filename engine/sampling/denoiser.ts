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
