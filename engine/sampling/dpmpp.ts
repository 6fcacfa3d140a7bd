import { ancestralStep } from './noise.ts';
import type { KSamplerArgs } from './types.ts';
import { lin2, lin3, toD } from './vec.ts';

/**
 * The DPM-Solver++ family (Lu et al. 2022) as k-diffusion implements it, in "time" t = -log(sigma):
 * each step is exact for the linear part of the ODE and extrapolates the x0 estimate.
 */

const tOf = (sigma: number): number => -Math.log(sigma);

/** k-diffusion sample_dpmpp_2m (A1111 "DPM++ 2M"). */
export async function sampleDpmpp2m(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  let old: Float32Array | undefined;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    if (next === 0) {
      x = denoised;
    } else {
      const h = tOf(next) - tOf(sigma);
      const c = -Math.expm1(-h);
      if (old === undefined) {
        x = lin2(next / sigma, x, c, denoised);
      } else {
        const r = (tOf(sigma) - tOf(sigmas[i - 1]!)) / h;
        x = lin3(next / sigma, x, c * (1 + 1 / (2 * r)), denoised, -c / (2 * r), old);
      }
    }
    old = denoised;
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_dpmpp_2s_ancestral (A1111 "DPM++ 2S a"). */
export async function sampleDpmpp2sAncestral(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    const { sigmaDown, sigmaUp } = ancestralStep(sigma, next, args.eta);
    if (sigmaDown === 0) {
      x = lin2(1, x, sigmaDown - sigma, toD(x, sigma, denoised));
    } else {
      const t = tOf(sigma);
      const h = tOf(sigmaDown) - t;
      const sMid = Math.exp(-(t + h / 2));
      const x2 = lin2(sMid / sigma, x, -Math.expm1(-h / 2), denoised);
      const denoised2 = await denoise(x2, sMid, i);
      x = lin2(sigmaDown / sigma, x, -Math.expm1(-h), denoised2);
    }
    if (next > 0) x = lin2(1, x, args.sNoise * sigmaUp, args.noise(sigma, next));
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_dpmpp_sde with r = 1/2 (A1111 "DPM++ SDE"); its noise should be Brownian (see noise.ts). */
export async function sampleDpmppSde(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise, eta, sNoise } = args;
  const total = sigmas.length - 1;
  const r = 0.5;
  const fac = 1 / (2 * r);
  let x = args.x;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    if (next === 0) {
      x = lin2(1, x, next - sigma, toD(x, sigma, denoised));
    } else {
      const t = tOf(sigma);
      const h = tOf(next) - t;
      const sMid = Math.exp(-(t + h * r));
      // Step 1: to the midpoint, ancestrally.
      let a = ancestralStep(sigma, sMid, eta);
      let x2 = lin2(a.sigmaDown / sigma, x, -Math.expm1(t - tOf(a.sigmaDown)), denoised);
      x2 = lin2(1, x2, sNoise * a.sigmaUp, args.noise(sigma, sMid));
      const denoised2 = await denoise(x2, sMid, i);
      // Step 2: the full step with the blended x0 estimate.
      a = ancestralStep(sigma, next, eta);
      const c = -Math.expm1(t - tOf(a.sigmaDown));
      x = lin3(a.sigmaDown / sigma, x, c * (1 - fac), denoised, c * fac, denoised2);
      x = lin2(1, x, sNoise * a.sigmaUp, args.noise(sigma, next));
    }
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_dpmpp_2m_sde (A1111 "DPM++ 2M SDE", and "DPM++ 2M SDE Heun" with solverType 'heun'). */
export async function sampleDpmpp2mSde(args: KSamplerArgs, solverType: 'midpoint' | 'heun' = 'midpoint'): Promise<Float32Array> {
  const { sigmas, denoise, eta, sNoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  let old: Float32Array | undefined;
  let hLast = 0;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    if (next === 0) {
      x = denoised;
    } else {
      const h = tOf(next) - tOf(sigma);
      const etaH = eta * h;
      const c = -Math.expm1(-h - etaH);
      x = lin2((next / sigma) * Math.exp(-etaH), x, c, denoised);
      if (old !== undefined) {
        const k = (solverType === 'heun' ? c / (-h - etaH) + 1 : 0.5 * c) * (h / hLast);
        x = lin3(1, x, k, denoised, -k, old);
      }
      if (eta) x = lin2(1, x, next * Math.sqrt(-Math.expm1(-2 * etaH)) * sNoise, args.noise(sigma, next));
      hLast = h;
    }
    old = denoised;
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}

/** k-diffusion sample_dpmpp_3m_sde (A1111 "DPM++ 3M SDE"). */
export async function sampleDpmpp3mSde(args: KSamplerArgs): Promise<Float32Array> {
  const { sigmas, denoise, eta, sNoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  let den1: Float32Array | undefined;
  let den2: Float32Array | undefined;
  let h1: number | undefined;
  let h2: number | undefined;
  let h: number | undefined;
  for (let i = 0; i < total; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const denoised = await denoise(x, sigma, i);
    if (next === 0) {
      x = denoised;
    } else {
      h = tOf(next) - tOf(sigma);
      const hEta = h * (eta + 1);
      x = lin2(Math.exp(-hEta), x, -Math.expm1(-hEta), denoised);
      const phi2 = Math.expm1(-hEta) / hEta + 1;
      if (h2 !== undefined && h1 !== undefined && den1 && den2) {
        const r0 = h1 / h;
        const r1 = h2 / h;
        const n = x.length;
        const out = new Float32Array(n);
        const phi3 = phi2 / hEta - 0.5;
        for (let k = 0; k < n; k++) {
          const d10 = (denoised[k]! - den1[k]!) / r0;
          const d11 = (den1[k]! - den2[k]!) / r1;
          const d1 = d10 + ((d10 - d11) * r0) / (r0 + r1);
          const d2 = (d10 - d11) / (r0 + r1);
          out[k] = x[k]! + phi2 * d1 - phi3 * d2;
        }
        x = out;
      } else if (h1 !== undefined && den1) {
        const r = h1 / h;
        x = lin3(1, x, phi2 / r, denoised, -phi2 / r, den1);
      }
      if (eta) x = lin2(1, x, next * Math.sqrt(-Math.expm1(-2 * h * eta)) * sNoise, args.noise(sigma, next));
    }
    den2 = den1;
    den1 = denoised;
    h2 = h1;
    h1 = h;
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}
