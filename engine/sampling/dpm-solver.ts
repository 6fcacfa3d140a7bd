import { ancestralStep } from './noise.ts';
import type { KSamplerArgs } from './types.ts';

/**
 * DPM-Solver (Lu et al. 2022) in k-diffusion's form: A1111 "DPM fast" (fixed steps of orders 3, 2, 1) and
 * "DPM adaptive" (embedded 2/3 pair with a PID step-size controller). They work in t = -log(sigma) on the eps
 * estimate (x - denoised) / sigma, take the range [sigmaMin, sigmaMax] instead of a sigma list, and stop at
 * sigmaMin, not 0 (as k-diffusion does).
 */

export interface SigmaRange {
  sigmaMin: number;
  sigmaMax: number;
  /** Model evaluations (DPM fast). */
  n: number;
}

const sig = (t: number): number => Math.exp(-t);
const tOf = (s: number): number => -Math.log(s);

/** The range A1111 passes when it only has a sigma list: first sigma, last non-zero sigma, one evaluation per step. */
export function rangeFromSigmas(sigmas: readonly number[]): SigmaRange {
  const last = sigmas[sigmas.length - 1] === 0 ? sigmas.length - 2 : sigmas.length - 1;
  return { sigmaMax: sigmas[0]!, sigmaMin: sigmas[last]!, n: sigmas.length - 1 };
}

class Solver {
  evals = 0;
  constructor(
    private readonly args: KSamplerArgs,
    private readonly total: number,
  ) {}

  async eps(cache: Map<string, Float32Array>, key: string, x: Float32Array, t: number): Promise<Float32Array> {
    const hit = cache.get(key);
    if (hit) return hit;
    const s = sig(t);
    const denoised = await this.args.denoise(x, s, Math.min(this.evals, this.total - 1));
    this.evals++;
    const e = new Float32Array(x.length);
    for (let i = 0; i < x.length; i++) e[i] = (x[i]! - denoised[i]!) / s;
    cache.set(key, e);
    return e;
  }

  async step1(x: Float32Array, t: number, tNext: number, cache: Map<string, Float32Array>): Promise<Float32Array> {
    const e = await this.eps(cache, 'eps', x, t);
    const c = sig(tNext) * Math.expm1(tNext - t);
    return x.map((v, i) => v - c * e[i]!);
  }

  async step2(x: Float32Array, t: number, tNext: number, cache: Map<string, Float32Array>, r1 = 1 / 2): Promise<Float32Array> {
    const h = tNext - t;
    const e = await this.eps(cache, 'eps', x, t);
    const s1 = t + r1 * h;
    const c1 = sig(s1) * Math.expm1(r1 * h);
    const u1 = x.map((v, i) => v - c1 * e[i]!);
    const e1 = await this.eps(cache, 'eps_r1', u1, s1);
    const a = sig(tNext) * Math.expm1(h);
    const b = (sig(tNext) / (2 * r1)) * Math.expm1(h);
    return x.map((v, i) => v - a * e[i]! - b * (e1[i]! - e[i]!));
  }

  async step3(x: Float32Array, t: number, tNext: number, cache: Map<string, Float32Array>, r1 = 1 / 3, r2 = 2 / 3): Promise<Float32Array> {
    const h = tNext - t;
    const e = await this.eps(cache, 'eps', x, t);
    const s1 = t + r1 * h;
    const s2 = t + r2 * h;
    const c1 = sig(s1) * Math.expm1(r1 * h);
    const u1 = x.map((v, i) => v - c1 * e[i]!);
    const e1 = await this.eps(cache, 'eps_r1', u1, s1);
    const c2 = sig(s2) * Math.expm1(r2 * h);
    const d2 = sig(s2) * (r2 / r1) * (Math.expm1(r2 * h) / (r2 * h) - 1);
    const u2 = x.map((v, i) => v - c2 * e[i]! - d2 * (e1[i]! - e[i]!));
    const e2 = await this.eps(cache, 'eps_r2', u2, s2);
    const a = sig(tNext) * Math.expm1(h);
    const b = (sig(tNext) / r2) * (Math.expm1(h) / h - 1);
    return x.map((v, i) => v - a * e[i]! - b * (e2[i]! - e[i]!));
  }
}

/** The ancestral split of one step: where the deterministic part lands (tNext_) and how much noise follows. */
function ancestralTarget(t: number, tNext: number, tEnd: number, eta: number): { tDet: number; su: number } {
  if (!eta) return { tDet: tNext, su: 0 };
  const { sigmaDown } = ancestralStep(sig(t), sig(tNext), eta);
  const tDet = Math.min(tEnd, tOf(sigmaDown));
  return { tDet, su: Math.sqrt(Math.max(0, sig(tNext) ** 2 - sig(tDet) ** 2)) };
}

/** k-diffusion sample_dpm_fast (A1111 "DPM fast"; A1111 passes its eta, default 1). */
export async function sampleDpmFast(args: KSamplerArgs, range: SigmaRange = rangeFromSigmas(args.sigmas)): Promise<Float32Array> {
  const { sigmaMin, sigmaMax, n: nfe } = range;
  if (!(sigmaMin > 0 && sigmaMax > 0)) throw new RangeError('DPM fast needs sigma_min and sigma_max > 0');
  const tStart = tOf(sigmaMax);
  const tEnd = tOf(sigmaMin);
  const m = Math.floor(nfe / 3) + 1;
  const ts = Array.from({ length: m + 1 }, (_, i) => tStart + ((tEnd - tStart) * i) / m);
  const orders = nfe % 3 === 0 ? [...Array<number>(m - 2).fill(3), 2, 1] : [...Array<number>(m - 1).fill(3), nfe % 3];
  const solver = new Solver(args, nfe);
  let x = args.x;
  for (let i = 0; i < orders.length; i++) {
    const cache = new Map<string, Float32Array>();
    const t = ts[i]!;
    const tNext = ts[i + 1]!;
    const { tDet, su } = ancestralTarget(t, tNext, tEnd, args.eta);
    const e = await solver.eps(cache, 'eps', x, t);
    const denoised = x.map((v, k) => v - sig(t) * e[k]!);
    const order = orders[i]!;
    x = order === 1 ? await solver.step1(x, t, tDet, cache) : order === 2 ? await solver.step2(x, t, tDet, cache) : await solver.step3(x, t, tDet, cache);
    const noise = args.noise(sig(t), sig(tNext));
    const c = su * args.sNoise;
    x = x.map((v, k) => v + c * noise[k]!);
    await args.onStep?.({ index: i, total: orders.length, x, denoised });
  }
  return x;
}

export interface AdaptiveOptions {
  order?: 2 | 3;
  rtol?: number;
  atol?: number;
  hInit?: number;
  pcoeff?: number;
  icoeff?: number;
  dcoeff?: number;
  acceptSafety?: number;
}

/** k-diffusion sample_dpm_adaptive (A1111 "DPM adaptive"): the step count follows the error, not `steps`. */
export async function sampleDpmAdaptive(args: KSamplerArgs, range: SigmaRange = rangeFromSigmas(args.sigmas), o: AdaptiveOptions = {}): Promise<Float32Array> {
  const order = o.order ?? 3;
  const rtol = o.rtol ?? 0.05;
  const atol = o.atol ?? 0.0078;
  const acceptSafety = o.acceptSafety ?? 0.81;
  const [p, ic, dc] = [o.pcoeff ?? 0, o.icoeff ?? 1, o.dcoeff ?? 0];
  const { sigmaMin, sigmaMax } = range;
  if (!(sigmaMin > 0 && sigmaMax > 0)) throw new RangeError('DPM adaptive needs sigma_min and sigma_max > 0');
  const tStart = tOf(sigmaMax);
  const tEnd = tOf(sigmaMin);
  // PID step-size controller on the inverse error, with k-diffusion's arctan limiter.
  const pidOrder = args.eta ? 1.5 : order;
  const b1 = (p + ic + dc) / pidOrder;
  const b2 = -(p + 2 * dc) / pidOrder;
  const b3 = dc / pidOrder;
  let h = Math.abs(o.hInit ?? 0.05);
  let errs: number[] | undefined;
  const propose = (error: number): boolean => {
    const inv = 1 / (error + 1e-8);
    errs ??= [inv, inv, inv];
    errs[0] = inv;
    const factor = 1 + Math.atan(errs[0]! ** b1 * errs[1]! ** b2 * errs[2]! ** b3 - 1);
    const accept = factor >= acceptSafety;
    if (accept) {
      errs[2] = errs[1]!;
      errs[1] = errs[0]!;
    }
    h *= factor;
    return accept;
  };

  const solver = new Solver(args, Math.max(1, args.sigmas.length - 1));
  let x = args.x;
  let xPrev = x;
  let s = tStart;
  let attempt = 0;
  while (s < tEnd - 1e-5) {
    if (attempt > 10000) throw new Error('DPM adaptive did not converge');
    const cache = new Map<string, Float32Array>();
    const t = Math.min(tEnd, s + h);
    const { tDet, su } = ancestralTarget(s, t, tEnd, args.eta);
    const e = await solver.eps(cache, 'eps', x, s);
    const denoised = x.map((v, k) => v - sig(s) * e[k]!);
    let low: Float32Array;
    let high: Float32Array;
    if (order === 2) {
      low = await solver.step1(x, s, tDet, cache);
      high = await solver.step2(x, s, tDet, cache);
    } else {
      low = await solver.step2(x, s, tDet, cache, 1 / 3);
      high = await solver.step3(x, s, tDet, cache);
    }
    let sq = 0;
    for (let k = 0; k < x.length; k++) {
      const delta = Math.max(atol, rtol * Math.max(Math.abs(low[k]!), Math.abs(xPrev[k]!)));
      sq += ((low[k]! - high[k]!) / delta) ** 2;
    }
    const error = Math.sqrt(sq) / Math.sqrt(x.length);
    if (propose(error)) {
      xPrev = low;
      const noise = args.noise(sig(s), sig(t));
      const c = su * args.sNoise;
      x = high.map((v, k) => v + c * noise[k]!);
      s = t;
    }
    await args.onStep?.({ index: attempt, total: attempt + 1, x, denoised });
    attempt++;
  }
  return x;
}
