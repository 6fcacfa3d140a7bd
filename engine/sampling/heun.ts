import { churn } from './churn.ts';
import { ancestralStep } from './noise.ts';
import type { KSamplerArgs } from './types.ts';
import { lin2, lin3, toD } from './vec.ts';

/** k-diffusion sample_heun (A1111 "Heun"): trapezoidal steps, Euler for the final step to sigma 0. */
export async function sampleHeun(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const c = churn(args, x, i);
    x = c.x;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, c.sigmaHat, i);
    const d = toD(x, c.sigmaHat, denoised);
    const dt = next - c.sigmaHat;
    if (next === 0) {
      x = lin2(1, x, dt, d);
    } else {
      const x2 = lin2(1, x, dt, d);
      const d2 = toD(x2, next, await denoise(x2, next, i));
      x = lin3(1, x, dt / 2, d, dt / 2, d2);
    }
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

const logMidpoint = (a: number, b: number): number => Math.exp((Math.log(a) + Math.log(b)) / 2);

/** k-diffusion sample_dpm_2 (A1111 "DPM2"): midpoint steps with the midpoint taken in log sigma. */
export async function sampleDpm2(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const c = churn(args, x, i);
    x = c.x;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, c.sigmaHat, i);
    const d = toD(x, c.sigmaHat, denoised);
    if (next === 0) {
      x = lin2(1, x, next - c.sigmaHat, d);
    } else {
      const mid = logMidpoint(c.sigmaHat, next);
      const x2 = lin2(1, x, mid - c.sigmaHat, d);
      const d2 = toD(x2, mid, await denoise(x2, mid, i));
      x = lin2(1, x, next - c.sigmaHat, d2);
    }
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_dpm_2_ancestral (A1111 "DPM2 a"). */
export async function sampleDpm2Ancestral(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    const { sigmaDown, sigmaUp } = ancestralStep(sigma, next, args.eta);
    const d = toD(x, sigma, denoised);
    if (sigmaDown === 0) {
      x = lin2(1, x, sigmaDown - sigma, d);
    } else {
      const mid = logMidpoint(sigma, sigmaDown);
      const x2 = lin2(1, x, mid - sigma, d);
      const d2 = toD(x2, mid, await denoise(x2, mid, i));
      x = lin2(1, x, sigmaDown - sigma, d2);
      x = lin2(1, x, args.sNoise * sigmaUp, args.noise(sigma, next));
    }
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}
