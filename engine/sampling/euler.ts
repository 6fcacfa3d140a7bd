import { churn } from './churn.ts';
import { ancestralStep } from './noise.ts';
import type { KSamplerArgs } from './types.ts';
import { lin2, toD } from './vec.ts';

/** k-diffusion sample_euler (A1111 "Euler"). */
export async function sampleEuler(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const c = churn(args, x, i);
    x = c.x;
    const denoised = await denoise(x, c.sigmaHat, i);
    const d = toD(x, c.sigmaHat, denoised);
    x = lin2(1, x, sigmas[i + 1]! - c.sigmaHat, d);
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_euler_ancestral (A1111 "Euler a"). */
export async function sampleEulerAncestral(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    const { sigmaDown, sigmaUp } = ancestralStep(sigma, next, args.eta);
    const d = toD(x, sigma, denoised);
    x = lin2(1, x, sigmaDown - sigma, d);
    if (next > 0) x = lin2(1, x, args.sNoise * sigmaUp, args.noise(sigma, next));
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_lcm (A1111 "LCM" over the plain eps denoiser): jump to x0, then re-noise to the next sigma. */
export async function sampleLcm(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const denoised = await denoise(x, sigmas[i]!, i);
    x = denoised;
    const next = sigmas[i + 1]!;
    if (next > 0) x = lin2(1, x, next, args.noise(sigmas[i]!, next));
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}
