/**
 * The contracts between the samplers and the generation pipeline.
 *
 * The pipeline owns the UNet and classifier-free guidance; the samplers own every other number. A sampler asks
 * the model for the guided eps at one point and gets back a Float32Array of the same length as the latent batch.
 */

/** What a model call is for: the sampler step it belongs to (several calls may share one index). */
export interface ModelCall {
  /** k-diffusion sigma of the point being evaluated (sqrt((1 - acp_t) / acp_t)), whatever the sampler family. */
  sigma: number;
  /** 0-based sampler step this call belongs to. */
  index: number;
  /** Number of sampler steps of this run. */
  total: number;
}

/**
 * The eps-prediction model with CFG already applied: `eps_uncond + cfg * (eps_cond - eps_uncond)`.
 *
 * `unetInput` is exactly what the UNet receives: the k-diffusion samplers pass x * c_in = x / sqrt(sigma^2 + 1),
 * the timestep samplers (DDIM, PLMS, UniPC) pass their variance-preserving latent unchanged. `t` is the UNet's
 * timestep as a float (0..999, fractional where a sigma falls between two training timesteps).
 */
export type EpsModel = (unetInput: Float32Array, t: number, call: ModelCall) => Promise<Float32Array>;

/** Standard normal draws; the pipeline passes A1111's per-image generator so ancestral noise matches A1111. */
export type Randn = (n: number) => Float32Array;

/** Noise for the step sigma -> sigmaNext, unit variance per element (k-diffusion's noise_sampler). */
export type NoiseSampler = (sigma: number, sigmaNext: number) => Float32Array;

/** Called after each sampler step with the current latent and the model's latest x0 estimate. */
export type StepCallback = (info: { index: number; total: number; x: Float32Array; denoised: Float32Array }) => void | Promise<void>;

/** The k-diffusion denoiser: x0 estimate at noise level sigma. */
export type Denoise = (x: Float32Array, sigma: number, index: number) => Promise<Float32Array>;

/** Arguments every k-diffusion-family sampler takes. */
export interface KSamplerArgs {
  denoise: Denoise;
  /** Starting latent, already at noise level sigmas[0] (noise * sigmas[0] for txt2img). Not modified. */
  x: Float32Array;
  /** Decreasing noise levels, usually ending in 0. */
  sigmas: readonly number[];
  /** Fresh N(0, 1) noise per ancestral step; A1111 draws it from the image's seed generator. */
  noise: NoiseSampler;
  /** Ancestral / SDE noise amount (A1111 "eta", default 1 for these samplers). */
  eta: number;
  /** Noise multiplier (A1111 s_noise, default 1). */
  sNoise: number;
  /** Karras churn (A1111 s_churn / s_tmin / s_tmax; Euler, Heun and DPM2 only). */
  sChurn: number;
  sTmin: number;
  sTmax: number;
  /** DPM fast / adaptive only: the sigma range and evaluation count A1111 hands them (default: from `sigmas`). */
  sigmaRange?: { sigmaMin: number; sigmaMax: number; n: number };
  onStep?: StepCallback;
}

export type KSampler = (args: KSamplerArgs) => Promise<Float32Array>;
