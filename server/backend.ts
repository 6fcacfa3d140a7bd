/**
 * The one seam between the HTTP server and the Stable Diffusion engine.
 *
 * The server owns everything that is not math: folder scanning, name → file resolution (checkpoints, VAEs,
 * LoRAs: request names never reach the file system), seeds, sampler-name resolution, `<lora:…>` tag parsing,
 * the job queue, progress, PNG encoding and infotext. A backend only loads weights and turns fully resolved
 * parameters into pixels. `server/engine-backend.ts` implements it with the engine's SdGenerator;
 * `server/backend-thread.ts` runs that implementation on a worker thread, which is what `serve` uses (the
 * engine's ONNX Runtime calls are synchronous and must not hold the HTTP loop); the server tests also use a
 * fixture implementation (tests/server-fixture-backend.ts).
 *
 * Contract:
 * - Calls never overlap: the server runs every backend call from its single job queue, one at a time.
 * - `txt2img` / `img2img` make `seeds.length` images (one batch). The server calls them once per `n_iter`.
 * - Hooks are called on the server's thread; a backend running elsewhere relays them (steps as they happen,
 *   a stop request read before every model call, a preview rendered only when asked for).
 * - Before each sampling step the backend calls `hooks.shouldStop()`. On `'interrupt'` or `'skip'` it stops
 *   sampling, decodes the latents it has and returns them (A1111 returns the partly denoised images); the
 *   server then stops (`interrupt`) or moves on to the next batch (`skip`).
 * - After each sampling step it calls `hooks.onStep(stepDone, totalSteps, preview)`. `preview`, if given,
 *   must capture that step's latents (not a live reference) and is only called when a client wants an image.
 * - Errors caused by the request (e.g. a size the model cannot do) throw `UserError` (message names the field);
 *   anything else is a bug and is reported as HTTP 500 without a stack trace.
 */
import type { LatentUpscaleMode } from '../engine/sd/hires.ts';

/** 8-bit pixels, row-major, interleaved channels (1 = grey, 3 = RGB, 4 = RGBA). */
export interface RawImage {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  data: Uint8Array;
}

/** A checkpoint file found in the checkpoint folder. */
export interface CheckpointRef {
  /** Path relative to the checkpoint folder, `/`-separated (A1111 `name`), e.g. `sub/model.safetensors`. */
  name: string;
  /** A1111 title: `"<name> [<shorthash>]"`, or `name` while the file is not hashed yet. */
  title: string;
  /** Name without extension, `/` and `\` replaced by `_` (A1111 `model_name`). */
  modelName: string;
  /** Absolute path: a `.safetensors` file or a diffusers folder. */
  path: string;
  /** Full-file sha256 (hex), or null when not hashed yet. */
  sha256: string | null;
  /** First 10 hex characters of sha256 (A1111 "Model hash"), or null. */
  shortHash: string | null;
}

/** A standalone VAE file chosen by option `sd_vae`. */
export interface VaeRef {
  name: string;
  path: string;
}

/** One `<lora:NAME:TE:UNET:DYN>` tag, already resolved to a file. */
export interface LoraRef {
  /** The name as written in the prompt. */
  name: string;
  /** Absolute path of the LoRA file (always inside the LoRA folder). */
  path: string;
  teMultiplier: number;
  unetMultiplier: number;
  /** DyLoRA rank truncation, or null. */
  dynDim: number | null;
}

/** A1111's refiner for one backend call, already resolved: another checkpoint continues the sampler run part-way. */
export interface RefinerParams {
  checkpoint: CheckpointRef;
  /** What the infotext calls it: A1111's short title `<file stem> [<short hash>]`. */
  title: string;
  /** `refiner_switch_at`: the share of the run after which the refiner answers; null: from the start. */
  switchAt: number | null;
  /** Option `refiner_switch_by_sample_steps`: the share counts sampler steps instead of the noise level. */
  bySteps: boolean;
}

export interface GenerationParams {
  /** Positive prompt with every `<…:…>` extra-network tag removed (A1111 strips them before tokenizing). */
  prompt: string;
  negativePrompt: string;
  /** One seed per image of this batch; `seeds.length` is the batch size. */
  seeds: number[];
  subseeds: number[];
  subseedStrength: number;
  seedResizeFromW: number;
  seedResizeFromH: number;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  /** A1111 sampler name as listed by /sdapi/v1/samplers, e.g. `Euler a`, `DPM++ 2M`. */
  sampler: string;
  /** A1111 scheduler name (`automatic`, `karras`, `exponential`, …). */
  scheduler: string;
  /** A1111 `CLIP_stop_at_last_layers` (1 = last layer). */
  clipSkip: number;
  /** LoRAs to apply, in prompt order (the same file may appear twice; multipliers then add). */
  loras: LoraRef[];
  eta: number | null;
  sChurn: number | null;
  sTmin: number | null;
  sTmax: number | null;
  sNoise: number | null;
  /** A1111 `randn_source`: `GPU`, `CPU` or `NV`. */
  randnSource: string;
  /** A1111 `eta_noise_seed_delta`. */
  etaNoiseSeedDelta: number;
  /** Seamless tiling (circular padding). */
  tiling: boolean;
  /** The effective options for this job (global options with `override_settings` applied), read-only. */
  options: Readonly<Record<string, unknown>>;
  /**
   * The refiner for this call, or absent. When it took over, the output's `extraParams` carry `Refiner` (the
   * title) and `Refiner switch at`; a backend without refiners leaves them out.
   */
  refiner?: RefinerParams | null;
}

/** A batch's final latents, [batch, channels, height/8, width/8], as a backend returned them for a hires pass. */
export interface LatentBatch {
  width: number;
  height: number;
  data: Float32Array;
}

export interface Img2ImgParams extends GenerationParams {
  /** Init images, already resized to width × height by the request's `resize_mode` (RGB). */
  initImages: RawImage[];
  /**
   * A hires pass with a latent upscaler: start from these first-pass latents resized to width × height with
   * `mode` (engine/sd/hires.ts) instead of encoding `initImages`, which is then empty.
   */
  initLatents?: { batch: LatentBatch; mode: LatentUpscaleMode } | null;
  /** Inpainting mask at width × height (1 channel, 255 = repaint), inverted and blurred as requested; or null. */
  mask: RawImage | null;
  denoisingStrength: number;
  inpaintingFill: number;
  inpaintFullRes: boolean;
  inpaintFullResPadding: number;
  initialNoiseMultiplier: number;
  imageCfgScale: number | null;
}

export type StopRequest = 'interrupt' | 'skip';

export interface GenerationHooks {
  onStep(step: number, total: number, preview?: () => Promise<RawImage>): void;
  shouldStop(): StopRequest | null;
}

export interface GenerationOutput {
  /** `seeds.length` images at width × height. */
  images: RawImage[];
  /** Extra infotext entries, e.g. `{ 'ENSD': 31337 }`; null values are left out. */
  extraParams?: Record<string, string | number | boolean | null>;
  /** Things the backend could not honour, shown to the client in `info.notes`. */
  notes?: string[];
  /** The batch's final latents, for a hires pass in latent space; a backend without latents leaves it out. */
  latents?: LatentBatch;
}

export interface GenerationBackend {
  /** Short description for logs and /sdapi/v1/cmd-flags, e.g. `onnxruntime cpu`. */
  readonly description: string;
  /** Sampler names (A1111 spelling) the backend implements; undefined = all of /sdapi/v1/samplers. */
  readonly samplers?: readonly string[];
  /** Loads a checkpoint (and optional standalone VAE), replacing the current one. */
  loadCheckpoint(ckpt: CheckpointRef, vae: VaeRef | null): Promise<void>;
  /** Frees the loaded model; `currentCheckpoint()` then returns null. */
  unload(): Promise<void>;
  currentCheckpoint(): CheckpointRef | null;
  txt2img(params: GenerationParams, hooks: GenerationHooks): Promise<GenerationOutput>;
  img2img(params: Img2ImgParams, hooks: GenerationHooks): Promise<GenerationOutput>;
}
