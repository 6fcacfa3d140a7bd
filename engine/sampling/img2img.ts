import { UserError } from '../util/errors.ts';

/**
 * A1111's img2img step rule (modules/sd_samplers_common.py setup_img2img_steps).
 *
 * By default the schedule is built for `steps` and sampling starts part-way down it: t_enc =
 * int(min(strength, 0.999) * steps), and the k-diffusion samplers run the last t_enc + 1 steps of it. With
 * A1111's option img2img_fix_steps ("do exactly the amount of steps the slider specifies") the schedule is
 * stretched to int(steps / min(strength, 0.999)) steps instead, and t_enc = steps - 1, so `steps` steps run.
 */
export function img2imgSteps(steps: number, denoisingStrength: number, fixSteps = false): { steps: number; tEnc: number } {
  if (!Number.isInteger(steps) || steps < 1) throw new UserError(`steps must be a positive integer, got ${steps}`);
  if (!(denoisingStrength >= 0 && denoisingStrength <= 1)) {
    throw new UserError(`denoising_strength must be between 0 and 1, got ${denoisingStrength}`);
  }
  const s = Math.min(denoisingStrength, 0.999);
  if (fixSteps) return { steps: denoisingStrength > 0 ? Math.trunc(steps / s) : 0, tEnc: steps - 1 };
  return { steps, tEnc: Math.trunc(s * steps) };
}
