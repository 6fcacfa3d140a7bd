import type { EpsModel, ModelCall } from './types.ts';
import { checkSameLength } from './vec.ts';

/**
 * Classifier-free guidance, for the pipeline to build its EpsModel: eps_uncond + scale * (eps_cond - eps_uncond).
 * A1111 combines the x0 estimates instead; with one shared x and sigma that is the same linear combination.
 */
export function guide(cond: Float32Array, uncond: Float32Array, scale: number): Float32Array {
  checkSameLength(cond, uncond, 'unconditional eps');
  const out = new Float32Array(cond.length);
  for (let i = 0; i < cond.length; i++) out[i] = uncond[i]! + scale * (cond[i]! - uncond[i]!);
  return out;
}

/** The UNet evaluated for the same input with the prompt's and the negative prompt's context. */
export type CondUncondEps = (unetInput: Float32Array, t: number, call: ModelCall) => Promise<{ cond: Float32Array; uncond: Float32Array }>;

export function cfgModel(unet: CondUncondEps, scale: number): EpsModel {
  return async (input, t, call) => {
    const { cond, uncond } = await unet(input, t, call);
    checkSameLength(input, cond, 'conditional eps');
    return guide(cond, uncond, scale);
  };
}
