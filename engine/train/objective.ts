/**
 * The diffusion training objective on the host: draw timesteps and noise, make noisy latents
 * (DDPMScheduler.add_noise, in float32 like diffusers), and the regression target (ε or v) with
 * offset noise and min-SNR-γ per-sample weights (see ../shared/reference/training-landscape.md §6b).
 * The graph only computes mean_b(w_b · mean_chw((pred − target)²)).
 */
import { UserError } from '../util/errors.ts';
import { seededRandom, type Random } from './seeded-random.ts';

export type PredictionType = 'epsilon' | 'v_prediction';

export interface ObjectiveOptions {
  predictionType: PredictionType;
  /** Offset-noise strength (0: off): ε′ = ε + o·n with n ~ N(0,1) per sample and channel. */
  noiseOffset: number;
  /** Min-SNR-γ (0: off). */
  minSnrGamma: number;
}

export interface NoisedBatch {
  /** x_t [B, C, H, W]. */
  noisy: Float32Array;
  /** ε or v [B, C, H, W]. */
  target: Float32Array;
  /** Per-sample loss weight [B] (all 1 without min-SNR). */
  weights: Float32Array;
}

const f = Math.fround;

/** Standard normals by Box–Muller over a seeded uniform stream. */
export function gaussian(n: number, random: Random): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = 1 - random();
    const v = random();
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** Timesteps uniform over {0, …, numTimesteps − 1}. */
export function drawTimesteps(batch: number, numTimesteps: number, random: Random): number[] {
  return Array.from({ length: batch }, () => Math.min(numTimesteps - 1, Math.floor(random() * numTimesteps)));
}

export interface DrawnNoise {
  timesteps: number[];
  /** ε [B, C, H, W], offset noise included. */
  noise: Float32Array;
}

/**
 * Timesteps and noise of one micro-batch, derived from (seed, labels) alone: a resumed run draws exactly
 * what an uninterrupted one would at the same position, with no generator state to carry.
 */
export function drawNoise(shape: readonly number[], numTimesteps: number, noiseOffset: number, seed: number, ...labels: Array<string | number>): DrawnNoise {
  const [B, C, H, W] = shape as [number, number, number, number];
  const timesteps = drawTimesteps(B, numTimesteps, seededRandom(seed, 'timesteps', ...labels));
  const noise = gaussian(B * C * H * W, seededRandom(seed, 'noise', ...labels));
  if (noiseOffset > 0) {
    const off = gaussian(B * C, seededRandom(seed, 'noise-offset', ...labels));
    const plane = H * W;
    for (let bc = 0; bc < B * C; bc++) {
      const o = noiseOffset * off[bc]!;
      for (let i = 0; i < plane; i++) noise[bc * plane + i] = f(noise[bc * plane + i]! + o);
    }
  }
  return { timesteps, noise };
}

/** SNR_t = ᾱ_t / (1 − ᾱ_t). */
export function snr(alphasCumprod: Float32Array, t: number): number {
  const a = alphasCumprod[t]!;
  return a / (1 - a);
}

/** Min-SNR-γ weight (Hang et al. 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR + 1) for v; 1 when γ is 0. */
export function minSnrWeight(alphasCumprod: Float32Array, t: number, gamma: number, prediction: PredictionType): number {
  if (!(gamma > 0)) return 1;
  const s = snr(alphasCumprod, t);
  return Math.min(s, gamma) / (prediction === 'v_prediction' ? s + 1 : s);
}

/** x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε and the target, per sample, in float32 as diffusers computes them. */
export function noiseBatch(
  latents: Float32Array,
  noise: Float32Array,
  timesteps: readonly number[],
  alphasCumprod: Float32Array,
  opts: ObjectiveOptions,
): NoisedBatch {
  const B = timesteps.length;
  if (latents.length !== noise.length || latents.length % B !== 0)
    throw new Error(`noiseBatch: ${latents.length} latent values, ${noise.length} noise values, batch ${B}`);
  const per = latents.length / B;
  const noisy = new Float32Array(latents.length);
  const target = opts.predictionType === 'epsilon' ? noise : new Float32Array(latents.length);
  const weights = new Float32Array(B);
  for (let b = 0; b < B; b++) {
    const t = timesteps[b]!;
    if (!(Number.isInteger(t) && t >= 0 && t < alphasCumprod.length)) throw new UserError(`timestep ${t} is outside 0…${alphasCumprod.length - 1}`);
    const a = alphasCumprod[t]!;
    const sa = f(Math.sqrt(a));
    const sb = f(Math.sqrt(f(1 - a)));
    for (let i = b * per; i < (b + 1) * per; i++) {
      noisy[i] = f(f(sa * latents[i]!) + f(sb * noise[i]!));
      if (opts.predictionType === 'v_prediction') target[i] = f(f(sa * noise[i]!) - f(sb * latents[i]!));
    }
    weights[b] = minSnrWeight(alphasCumprod, t, opts.minSnrGamma, opts.predictionType);
  }
  return { noisy, target, weights };
}

/** x̂₀ from the model output at x_t (for measuring how close predictions get to the data). */
export function predictX0(noisy: Float32Array, pred: Float32Array, timesteps: readonly number[], alphasCumprod: Float32Array, prediction: PredictionType): Float32Array {
  const B = timesteps.length;
  const per = noisy.length / B;
  const out = new Float32Array(noisy.length);
  for (let b = 0; b < B; b++) {
    const a = alphasCumprod[timesteps[b]!]!;
    const sa = Math.sqrt(a);
    const sb = Math.sqrt(1 - a);
    for (let i = b * per; i < (b + 1) * per; i++) {
      out[i] = prediction === 'epsilon' ? (noisy[i]! - sb * pred[i]!) / sa : sa * noisy[i]! - sb * pred[i]!;
    }
  }
  return out;
}
