import { UserError } from '../util/errors.ts';

/**
 * The model's training noise schedule: betas -> alphas_cumprod -> k-diffusion sigmas, and the
 * sigma <-> timestep maps A1111's k-diffusion wrapper (CompVisDenoiser / DiscreteSchedule) uses.
 */

export type BetaSchedule = 'scaled_linear' | 'linear';

export interface TrainSchedule {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: BetaSchedule;
}

/** SD 1.x / 2.x / SDXL training schedule (LDM configs: linear_start 0.00085, linear_end 0.012, 1000 steps). */
export const SD_TRAIN_SCHEDULE: TrainSchedule = { numTrainTimesteps: 1000, betaStart: 0.00085, betaEnd: 0.012, betaSchedule: 'scaled_linear' };

/**
 * Where the cumulative product is rounded: 'float32' = diffusers (float32 betas and alphas; torch.cumprod
 * accumulates in double on CPU and stores float32), 'float64' = LDM / A1111 (all in float64, cast at the end).
 * They differ by up to 1e-6 relative.
 */
export type CumprodPrecision = 'float32' | 'float64';

function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(a + ((b - a) * i) / (n - 1));
  return out;
}

export function checkTrainSchedule(s: TrainSchedule): void {
  if (!Number.isInteger(s.numTrainTimesteps) || s.numTrainTimesteps < 2) {
    throw new UserError(`schedule num_train_timesteps must be an integer >= 2, got ${s.numTrainTimesteps}`);
  }
  if (!(s.betaStart > 0 && s.betaEnd > 0 && s.betaStart < 1 && s.betaEnd < 1)) {
    throw new UserError(`schedule beta_start / beta_end must be in (0, 1), got ${s.betaStart} / ${s.betaEnd}`);
  }
  if (s.betaSchedule !== 'scaled_linear' && s.betaSchedule !== 'linear') {
    throw new UserError(`schedule beta_schedule must be "scaled_linear" or "linear", got ${JSON.stringify(s.betaSchedule)}`);
  }
}

/** Betas as float64 numbers; 'scaled_linear' is linspace(sqrt(start), sqrt(end))^2. */
export function betas(s: TrainSchedule, precision: CumprodPrecision = 'float32'): number[] {
  checkTrainSchedule(s);
  const n = s.numTrainTimesteps;
  if (precision === 'float64') {
    if (s.betaSchedule === 'linear') return linspace(s.betaStart, s.betaEnd, n);
    return linspace(Math.sqrt(s.betaStart), Math.sqrt(s.betaEnd), n).map((v) => v * v);
  }
  if (s.betaSchedule === 'linear') return torchLinspaceF32(s.betaStart, s.betaEnd, n);
  return torchLinspaceF32(Math.sqrt(s.betaStart), Math.sqrt(s.betaEnd), n).map((v) => Math.fround(v * v));
}

/** torch.linspace in float32 on CPU: the first half counts up from start, the second half down from end. */
function torchLinspaceF32(start: number, end: number, n: number): number[] {
  const a = Math.fround(start);
  const b = Math.fround(end);
  if (n === 1) return [a];
  const step = Math.fround((b - a) / (n - 1));
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    out.push(i < Math.floor(n / 2) ? Math.fround(a + Math.fround(step * i)) : Math.fround(b - Math.fround(step * (n - 1 - i))));
  }
  return out;
}

export function alphasCumprod(s: TrainSchedule, precision: CumprodPrecision = 'float32'): Float32Array {
  const b = betas(s, precision);
  const out = new Float32Array(b.length);
  let acc = 1;
  for (let i = 0; i < b.length; i++) {
    const alpha = precision === 'float32' ? Math.fround(1 - b[i]!) : 1 - b[i]!;
    acc *= alpha;
    out[i] = acc;
  }
  return out;
}

/**
 * k-diffusion's discrete schedule over the model's training timesteps: sigma_t = sqrt((1 - acp_t) / acp_t),
 * in float32 as A1111 holds it, ascending in t.
 */
export class DiscreteSchedule {
  readonly alphasCumprod: Float32Array;
  readonly sigmas: Float32Array;
  readonly logSigmas: Float32Array;

  constructor(alphasCumprod: Float32Array) {
    if (alphasCumprod.length < 2) throw new UserError(`alphas_cumprod needs at least 2 entries, got ${alphasCumprod.length}`);
    for (let i = 0; i < alphasCumprod.length; i++) {
      const a = alphasCumprod[i]!;
      if (!(a > 0 && a <= 1)) throw new UserError(`alphas_cumprod[${i}] = ${a} is not in (0, 1]`);
      if (i > 0 && a > alphasCumprod[i - 1]!) throw new UserError(`alphas_cumprod must not increase (index ${i})`);
    }
    this.alphasCumprod = alphasCumprod;
    const n = alphasCumprod.length;
    this.sigmas = new Float32Array(n);
    this.logSigmas = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const a = alphasCumprod[i]!;
      this.sigmas[i] = Math.sqrt(Math.fround(Math.fround(1 - a) / a));
      this.logSigmas[i] = Math.log(this.sigmas[i]!);
    }
  }

  static fromTrainSchedule(s: TrainSchedule = SD_TRAIN_SCHEDULE, precision: CumprodPrecision = 'float32'): DiscreteSchedule {
    return new DiscreteSchedule(alphasCumprod(s, precision));
  }

  get numTimesteps(): number {
    return this.sigmas.length;
  }
  get sigmaMin(): number {
    return this.sigmas[0]!;
  }
  get sigmaMax(): number {
    return this.sigmas[this.sigmas.length - 1]!;
  }

  /** Fractional timestep of a sigma, by linear interpolation in log-sigma (k-diffusion sigma_to_t, not quantized). */
  sigmaToT(sigma: number): number {
    const ls = this.logSigmas;
    const n = ls.length;
    const logSigma = Math.log(Math.fround(sigma));
    // The last index whose log-sigma is <= log(sigma), 0 if none, at most n - 2.
    let lo = 0;
    for (let i = 0; i < n; i++) if (logSigma - ls[i]! >= 0) lo = i;
    lo = Math.min(lo, n - 2);
    const low = ls[lo]!;
    const high = ls[lo + 1]!;
    const w = Math.min(1, Math.max(0, (low - logSigma) / (low - high)));
    return (1 - w) * lo + w * (lo + 1);
  }

  /** Sigma at a fractional timestep, interpolating log-sigma (k-diffusion t_to_sigma). */
  tToSigma(t: number): number {
    const n = this.logSigmas.length;
    if (!(t >= 0 && t <= n - 1)) throw new RangeError(`timestep ${t} is outside [0, ${n - 1}]`);
    const lo = Math.floor(t);
    const hi = Math.ceil(t);
    const w = t - lo;
    return Math.fround(Math.exp((1 - w) * this.logSigmas[lo]! + w * this.logSigmas[hi]!));
  }

  /** Noise level of a VP latent at integer timestep t, as a k-diffusion sigma. */
  sigmaAtTimestep(t: number): number {
    const a = this.alphasCumprod[t];
    if (a === undefined) throw new RangeError(`timestep ${t} is outside [0, ${this.alphasCumprod.length - 1}]`);
    return Math.sqrt((1 - a) / a);
  }
}
