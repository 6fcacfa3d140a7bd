import type { KSamplerArgs } from './types.ts';
import { linN, toD } from './vec.ts';

// 3-point Gauss-Legendre nodes and weights on [-1, 1]: exact for the cubic Lagrange bases of order <= 4.
const GL_X = [-Math.sqrt(3 / 5), 0, Math.sqrt(3 / 5)];
const GL_W = [5 / 9, 8 / 9, 5 / 9];

/**
 * Integral over [sigmas[i], sigmas[i+1]] of the Lagrange basis polynomial that is 1 at sigmas[i - j] and 0 at
 * the other order - 1 points. k-diffusion integrates it numerically with scipy's quad; exact quadrature
 * gives the same value to rounding.
 */
export function lmsCoefficient(order: number, sigmas: readonly number[], i: number, j: number): number {
  if (order - 1 > i) throw new Error(`LMS order ${order} too high for step ${i}`);
  const basis = (tau: number): number => {
    let p = 1;
    for (let k = 0; k < order; k++) {
      if (k === j) continue;
      p *= (tau - sigmas[i - k]!) / (sigmas[i - j]! - sigmas[i - k]!);
    }
    return p;
  };
  const a = sigmas[i]!;
  const b = sigmas[i + 1]!;
  const half = (b - a) / 2;
  const mid = (a + b) / 2;
  let s = 0;
  for (let q = 0; q < 3; q++) s += GL_W[q]! * basis(mid + half * GL_X[q]!);
  return s * half;
}

/** k-diffusion sample_lms (A1111 "LMS"): linear multistep on the ODE derivatives, order up to 4. */
export async function sampleLms(args: KSamplerArgs, order = 4): Promise<Float32Array> {
  const { sigmas, denoise } = args;
  const total = sigmas.length - 1;
  let x = args.x;
  const ds: Float32Array[] = [];
  for (let i = 0; i < total; i++) {
    const denoised = await denoise(x, sigmas[i]!, i);
    ds.push(toD(x, sigmas[i]!, denoised));
    if (ds.length > order) ds.shift();
    const cur = Math.min(i + 1, order);
    const coeffs = [1];
    const vs = [x];
    for (let j = 0; j < cur; j++) {
      coeffs.push(lmsCoefficient(cur, sigmas, i, j));
      vs.push(ds[ds.length - 1 - j]!);
    }
    x = linN(coeffs, vs);
    await args.onStep?.({ index: i, total, x, denoised });
  }
  return x;
}
