import type { NoiseSampler, Randn } from './types.ts';

/**
 * Noise for ancestral and SDE steps.
 */

/**
 * k-diffusion get_ancestral_step: step deterministically down to sigmaDown, then add sigmaUp of fresh noise,
 * so the marginal noise level is sigmaTo. eta scales the fresh noise (0 = deterministic).
 */
export function ancestralStep(sigmaFrom: number, sigmaTo: number, eta = 1): { sigmaDown: number; sigmaUp: number } {
  if (!eta) return { sigmaDown: sigmaTo, sigmaUp: 0 };
  const sigmaUp = Math.min(sigmaTo, eta * Math.sqrt(Math.max(0, (sigmaTo ** 2 * (sigmaFrom ** 2 - sigmaTo ** 2)) / sigmaFrom ** 2)));
  const sigmaDown = Math.sqrt(Math.max(0, sigmaTo ** 2 - sigmaUp ** 2));
  return { sigmaDown, sigmaUp };
}

function checkDraw(v: Float32Array, n: number): Float32Array {
  if (v.length !== n) throw new Error(`randn returned ${v.length} values, expected ${n}`);
  return v;
}

/** A fresh draw per step, as k-diffusion's default noise sampler (A1111 takes it from the image's generator). */
export function independentNoise(randn: Randn, n: number): NoiseSampler {
  return () => checkDraw(randn(n), n);
}

/**
 * A Brownian motion W over sigma whose increments are returned normalized,
 * (W(sigmaNext) - W(sigma)) / sqrt(|sigmaNext - sigma|), as k-diffusion's BrownianTreeNoiseSampler.
 *
 * k-diffusion samples the path with torchsde's Brownian tree seeded from the image seed; this one samples the
 * same process lazily from the injected generator: W(sigmaMin) = 0, W(sigmaMax) ~ N(0, sigmaMax - sigmaMin),
 * and a point between two known points from the Brownian bridge between them. So overlapping queries
 * (DPM++ SDE asks for sigma -> midpoint and sigma -> next) are correlated exactly as a Brownian path's are,
 * and results are deterministic for a given generator and query order. The values differ from A1111's,
 * which come from torchsde's own tree traversal.
 */
export class BrownianNoise {
  private readonly times: number[] = [];
  private readonly values: Float64Array[] = [];

  constructor(
    private readonly randn: Randn,
    private readonly n: number,
    sigmaMin: number,
    sigmaMax: number,
  ) {
    const lo = Math.min(sigmaMin, sigmaMax);
    const hi = Math.max(sigmaMin, sigmaMax);
    this.times.push(lo);
    this.values.push(new Float64Array(n));
    if (hi > lo) {
      const z = checkDraw(randn(n), n);
      const w = new Float64Array(n);
      const s = Math.sqrt(hi - lo);
      for (let i = 0; i < n; i++) w[i] = z[i]! * s;
      this.times.push(hi);
      this.values.push(w);
    }
  }

  /** W at time t, sampling it (and remembering it) if not yet known. */
  private at(t: number): Float64Array {
    const ts = this.times;
    let k = 0;
    while (k < ts.length && ts[k]! < t) k++;
    if (k < ts.length && ts[k] === t) return this.values[k]!;
    const z = checkDraw(this.randn(this.n), this.n);
    const w = new Float64Array(this.n);
    if (k === 0 || k === ts.length) {
      // Outside the known span: an independent increment from the nearest end.
      const ref = k === 0 ? 0 : ts.length - 1;
      const s = Math.sqrt(Math.abs(t - ts[ref]!));
      const v = this.values[ref]!;
      for (let i = 0; i < this.n; i++) w[i] = v[i]! + z[i]! * s;
    } else {
      const a = ts[k - 1]!;
      const b = ts[k]!;
      const wa = this.values[k - 1]!;
      const wb = this.values[k]!;
      const frac = (t - a) / (b - a);
      const s = Math.sqrt(((t - a) * (b - t)) / (b - a));
      for (let i = 0; i < this.n; i++) w[i] = wa[i]! + frac * (wb[i]! - wa[i]!) + z[i]! * s;
    }
    ts.splice(k, 0, t);
    this.values.splice(k, 0, w);
    return w;
  }

  readonly sample: NoiseSampler = (sigma, sigmaNext) => {
    const out = new Float32Array(this.n);
    if (sigma === sigmaNext) return out;
    const w0 = this.at(sigma);
    const w1 = this.at(sigmaNext);
    const s = 1 / Math.sqrt(Math.abs(sigmaNext - sigma));
    for (let i = 0; i < this.n; i++) out[i] = (w1[i]! - w0[i]!) * s;
    return out;
  };
}
