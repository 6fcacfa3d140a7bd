import type { KSamplerArgs } from './types.ts';

/**
 * Karras et al.'s "churn" (Algorithm 2), shared by Euler, Heun and DPM2: optionally raise the noise level to
 * sigmaHat = sigma * (1 + gamma) by adding fresh noise before the step. With A1111's default s_churn = 0 it
 * does nothing and draws nothing.
 */
export function churn(args: KSamplerArgs, x: Float32Array, i: number): { x: Float32Array; sigmaHat: number } {
  const { sigmas, sChurn, sTmin, sTmax, sNoise } = args;
  const sigma = sigmas[i]!;
  const gamma = sTmin <= sigma && sigma <= sTmax ? Math.min(sChurn / (sigmas.length - 1), Math.SQRT2 - 1) : 0;
  if (!(gamma > 0)) return { x, sigmaHat: sigma };
  const sigmaHat = sigma * (gamma + 1);
  const eps = args.noise(sigma, sigmaHat);
  const s = sNoise * Math.sqrt(sigmaHat ** 2 - sigma ** 2);
  const out = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) out[k] = x[k]! + eps[k]! * s;
  return { x: out, sigmaHat };
}
