/**
 * txt2img and img2img (with inpainting masks) as A1111 runs them: per-image seeded noise, per-step prompt
 * schedules, classifier-free guidance, any registered sampler, VAE decode. Pixels in and out are float
 * [batch, 3, H, W] in [-1, 1]; PNG encoding and infotext are the caller's.
 */
import { BatchNoise, type NoiseSource } from '../rng/noise.ts';
import { sample, type SampleResult } from '../sampling/sample.ts';
import { samplerFallbackNote } from '../sampling/registry.ts';
import { DiscreteSchedule } from '../sampling/training-schedule.ts';
import type { EpsModel, StepCallback } from '../sampling/types.ts';
import { getPromptSchedules, promptAtStep, type ScheduledPrompt } from '../text/prompt-schedule.ts';
import { UserError } from '../util/errors.ts';
import type { Conditioner, Conditioning } from './conditioning.ts';
import type { StableDiffusion } from './model.ts';
import { planHires, type HiresPlan, type LatentUpscaleMode } from './hires.ts';
import { parsePrediction, type Prediction } from './prediction.ts';
import { RefinerStage, type RefinerRun } from './refiner.ts';
import { sizeConditionRows } from './size-conditioning.ts';
import { decodeTiled, encodeTiled, tilesNeeded, type VaeTilingMode } from './tiled-vae.ts';

export interface GenerateRequest {
  prompt: string;
  negativePrompt: string;
  /** One seed per image; the batch size. */
  seeds: number[];
  subseeds?: number[];
  subseedStrength?: number;
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string | null;
  scheduler?: string | null;
  clipSkip?: number;
  eta?: number | null;
  sChurn?: number | null;
  sTmin?: number | null;
  sTmax?: number | null;
  sNoise?: number | null;
  randnSource?: NoiseSource;
  etaNoiseSeedDelta?: number;
  /** Seamless tiling: circular padding in every 3×3 conv of the UNet and VAE. */
  tiling?: boolean;
  /**
   * Tiled VAE decode/encode (tiled-vae.ts): 'auto' (default) when the latent is larger than one tile (512² for
   * SD), 'on', 'off'. Seamless `tiling` needs the whole image and turns it off.
   */
  vaeTiling?: VaeTilingMode;
  img2img?: Img2ImgInput;
  /** Replaces the seeded initial noise [batch, C, h, w] (as diffusers' `latents=`); later draws still follow the seeds. */
  initialNoise?: Float32Array;
  /** A1111's hires fix (txt2img): upscale the first pass, then a second img2img pass at the larger size. */
  hires?: HiresOptions;
  /** What the UNet predicts; default: the model's own (`StableDiffusion.prediction`). */
  prediction?: Prediction;
  /**
   * SDXL size conditioning, as A1111: original size = target size = the size being sampled; the crop from
   * its options `sdxl_crop_top` / `sdxl_crop_left` (default 0). The negative prompt gets the same sizes.
   */
  sdxlCropTop?: number;
  sdxlCropLeft?: number;
  /** A1111 option `sdxl_clip_l_skip`: clip skip also applies to SDXL's CLIP ViT-L tower. */
  sdxlClipLSkip?: boolean;
  /** SDXL refiner checkpoints: A1111's options `sdxl_refiner_high_aesthetic_score` / `…_low_…` (default 6.0 / 2.5). */
  aestheticScore?: number;
  negativeAestheticScore?: number;
  /** A1111's refiner: another checkpoint continues this sampler run part-way (engine/sd/refiner.ts). */
  refiner?: RefinerRun;
}

export interface HiresOptions {
  /** Upscale factor (A1111 hr_scale); ignored when resizeX/resizeY are set. */
  scale?: number;
  resizeX?: number;
  resizeY?: number;
  /** A1111 upscaler name: "Latent", "Latent (nearest)", "Latent (bilinear)", … or an image upscaler. */
  upscaler: string;
  /** Second-pass steps; 0 or undefined = the first pass's steps. */
  steps?: number;
  denoisingStrength: number;
  sampler?: string;
  prompt?: string;
  negativePrompt?: string;
}

export interface Img2ImgInput {
  /** One image per seed (or one shared), [3, H, W] in [-1, 1] at width × height; empty when `latents` are given. */
  images: Float32Array[];
  /** Init latents [batch, C, height/8, width/8] instead of encoding `images` (a hires pass with a latent upscaler). */
  latents?: Float32Array;
  denoisingStrength: number;
  /** Repaint mask at width × height, values in [0, 1] (1 = repaint); null for plain img2img. */
  mask?: Float32Array | null;
  /** A1111 inpainting_fill: 0 fill, 1 original, 2 latent noise, 3 latent nothing. */
  inpaintingFill?: number;
  /** A1111 initial_noise_multiplier. */
  initialNoiseMultiplier?: number;
}

export interface GenerateHooks {
  /** After each sampler step; `preview` makes a cheap RGB preview of that step's x0 estimate. */
  onStep?(step: number, total: number, preview: () => PreviewImage): void;
  /** Asked before each model call; a truthy answer ends sampling and decodes what there is. */
  shouldStop?(): 'interrupt' | 'skip' | null;
}

export interface PreviewImage {
  width: number;
  height: number;
  /** RGB bytes, row-major. */
  data: Uint8Array;
}

export interface GenerateResult {
  /** [batch, 3, H, W] in about [-1, 1]. */
  images: Float32Array;
  /** The final latents [batch, C, H/8, W/8] the images were decoded from. */
  latents: Float32Array;
  /** Size of the images (larger than requested after a hires fix). */
  width: number;
  height: number;
  sampler: string;
  scheduleType: string;
  stopped: 'interrupt' | 'skip' | null;
  notes: string[];
}

class Stop extends Error {
  constructor(readonly reason: 'interrupt' | 'skip', readonly latent: Float32Array | undefined) {
    super(reason);
  }
}

function checkRequest(model: StableDiffusion, r: GenerateRequest): void {
  if (r.seeds.length < 1) throw new UserError('batch_size must be at least 1');
  for (const [k, v] of [['width', r.width], ['height', r.height]] as const) {
    if (!Number.isInteger(v) || v < 64 || v > 4096 || v % 8 !== 0) throw new UserError(`${k} must be a multiple of 8 between 64 and 4096, got ${v}`);
  }
  if (!Number.isFinite(r.cfgScale)) throw new UserError(`cfg_scale must be a number, got ${r.cfgScale}`);
  if (r.img2img?.latents) {
    const n = r.seeds.length * model.arch.unet.inChannels * (r.width / 8) * (r.height / 8);
    if (r.img2img.latents.length !== n) throw new UserError(`init latents must be ${r.seeds.length}×${model.arch.unet.inChannels}×${r.height / 8}×${r.width / 8}, got ${r.img2img.latents.length} values`);
  } else if (r.img2img) {
    const n = 3 * r.width * r.height;
    if (r.img2img.images.length !== 1 && r.img2img.images.length !== r.seeds.length) {
      throw new UserError(`init_images: give one image or one per batch item (${r.seeds.length}), got ${r.img2img.images.length}`);
    }
    for (const im of r.img2img.images) if (im.length !== n) throw new UserError(`init_images must be resized to ${r.width}x${r.height} first`);
    const s = r.img2img.denoisingStrength;
    if (!(s >= 0 && s <= 1)) throw new UserError(`denoising_strength must be between 0 and 1, got ${s}`);
    if (r.img2img.mask && r.img2img.mask.length !== r.width * r.height) throw new UserError(`mask must be ${r.width}x${r.height}`);
  }
  void model;
}

/** Mean-pools a pixel mask by 8 into the latent grid: the fraction of each latent cell to repaint. */
function latentMask(mask: Float32Array, width: number, height: number): Float32Array {
  const w = width / 8;
  const h = height / 8;
  const out = new Float32Array(w * h);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) out[((y / 8) | 0) * w + ((x / 8) | 0)]! += mask[y * width + x]! / 64;
  // A1111 rounds the latent mask so a cell is either kept or repainted.
  for (let i = 0; i < out.length; i++) out[i] = Math.round(out[i]!);
  return out;
}

export class Pipeline {
  readonly schedule: DiscreteSchedule;

  constructor(
    readonly model: StableDiffusion,
    readonly conditioner: Conditioner,
  ) {
    this.schedule = DiscreteSchedule.fromTrainSchedule();
  }

  async generate(r: GenerateRequest, hooks: GenerateHooks = {}): Promise<GenerateResult> {
    checkRequest(this.model, r);
    const B = r.seeds.length;
    const notes: string[] = [];
    const hr = r.hires ? hiresTarget(r) : undefined;
    const totalSteps = r.steps + (hr ? hr.steps : 0);
    const offsetHooks = (offset: number): GenerateHooks => ({
      shouldStop: hooks.shouldStop,
      onStep: hooks.onStep ? (s, _t, preview) => hooks.onStep!(s + offset, totalSteps, preview) : undefined,
    });

    let init: Float32Array | undefined;
    let keep: Float32Array | undefined;
    if (r.img2img) {
      init = r.img2img.latents ? r.img2img.latents.slice() : await this.encodeImages(r.img2img.images, B, r.width, r.height, r);
      if (r.img2img.mask) {
        const m = latentMask(r.img2img.mask, r.width, r.height);
        const C = this.model.arch.unet.inChannels;
        keep = new Float32Array(B * C * m.length);
        for (let i = 0; i < keep.length; i++) keep[i] = 1 - m[i % m.length]!;
      }
    }
    // With a hires fix the refiner joins the pass(es) A1111's `hires_fix_refiner_pass` names.
    const refinerIn = (pass: 'first pass' | 'second pass') => (!hr || [pass, 'both passes'].includes(r.refiner?.hiresPass ?? 'second pass') ? r.refiner : undefined);
    const first = await this.pass({ ...r, refiner: refinerIn('first pass') }, { width: r.width, height: r.height, steps: r.steps, init, keep, strength: r.img2img?.denoisingStrength }, offsetHooks(0), notes);
    let latent = first.latent;
    let width = r.width;
    let height = r.height;
    let stopped = first.stopped;
    if (hr && !stopped) {
      // Hires fix: upscale the first pass, then img2img it at the target size with fresh seeded noise.
      let upscaled: Float32Array;
      notes.push(...hr.notes);
      if (hr.latentMode) {
        upscaled = resizeLatents(latent, B, this.model.arch.unet.inChannels, r.height / 8, r.width / 8, hr.height / 8, hr.width / 8, hr.latentMode);
      } else {
        const small = await this.decodeLatents(latent, B, r.height / 8, r.width / 8, r);
        const big = resizeImages(small, B, r.width, r.height, hr.width, hr.height);
        const per = 3 * hr.width * hr.height;
        upscaled = await this.encodeImages(Array.from({ length: B }, (_, b) => big.subarray(b * per, (b + 1) * per)), B, hr.width, hr.height, r);
      }
      const second = await this.pass(
        { ...r, refiner: refinerIn('second pass'), prompt: r.hires!.prompt ?? r.prompt, negativePrompt: r.hires!.negativePrompt ?? r.negativePrompt, sampler: r.hires!.sampler ?? r.sampler, initialNoise: undefined },
        { width: hr.width, height: hr.height, steps: hr.steps, init: upscaled, strength: hr.denoising },
        offsetHooks(r.steps),
        notes,
      );
      latent = second.latent;
      width = hr.width;
      height = hr.height;
      stopped = second.stopped;
    }
    if (keep && init && !hr) for (let i = 0; i < latent.length; i++) latent[i] = latent[i]! * (1 - keep[i]!) + init[i]! * keep[i]!;

    const images = await this.decodeLatents(latent, B, height / 8, width / 8, r);
    if (r.img2img?.mask && !hr) overlayOriginal(images, r.img2img.images, r.img2img.mask, B);
    return { images, latents: latent, width, height, sampler: first.sampler, scheduleType: first.scheduleType, stopped, notes };
  }

  /** One sampling pass at width × height: txt2img from seeded noise, or img2img from `init` at `strength`. */
  private async pass(
    r: GenerateRequest,
    p: { width: number; height: number; steps: number; init?: Float32Array; keep?: Float32Array; strength?: number },
    hooks: GenerateHooks,
    notes: string[],
  ): Promise<{ latent: Float32Array; sampler: string; scheduleType: string; stopped: 'interrupt' | 'skip' | null }> {
    const B = r.seeds.length;
    const h = p.height / 8;
    const w = p.width / 8;
    const C = this.model.arch.unet.inChannels;
    const clipSkip = r.clipSkip ?? 1;
    const prediction = r.prediction === undefined ? this.model.prediction : parsePrediction(r.prediction, 'prediction');

    // Conditioning for every distinct prompt text the schedules reach, encoded once each.
    const [posSched, negSched] = getPromptSchedules([r.prompt, r.negativePrompt], p.steps) as [ScheduledPrompt[], ScheduledPrompt[]];
    const conds = new Map<string, Conditioning>();
    const condKey = (negative: boolean, prompt: string) => `${negative ? '-' : '+'}${prompt}`;
    for (const [negative, sched] of [[false, posSched], [true, negSched]] as const) {
      for (const s of sched) {
        const k = condKey(negative, s.prompt);
        if (!conds.has(k)) conds.set(k, await this.conditioner.encode(s.prompt, clipSkip, { negative, sdxlClipLSkip: r.sdxlClipLSkip }));
      }
    }
    // SDXL: each row's size numbers (a refiner checkpoint's end in an aesthetic score, lower for the negative half).
    const sizes = sizeConditionRows(this.model.arch.unet.adm, B, p.height, p.width, r, false);
    const uncondSizes = sizeConditionRows(this.model.arch.unet.adm, B, p.height, p.width, r, true);
    const refiner = r.refiner
      ? new RefinerStage(r.refiner, this.schedule, prediction, { ...r, clipSkip, tiling: !!r.tiling, batch: B, width: p.width, height: p.height })
      : undefined;

    const noise = new BatchNoise({
      source: r.randnSource ?? 'GPU',
      seeds: r.seeds,
      subseeds: r.subseeds,
      subseedStrength: r.subseedStrength ?? 0,
      seedResizeFromW: r.seedResizeFromW ?? 0,
      seedResizeFromH: r.seedResizeFromH ?? 0,
      etaNoiseSeedDelta: r.etaNoiseSeedDelta ?? 0,
      shape: [C, h, w],
    });
    const seeded = noise.next();
    if (r.initialNoise && r.initialNoise.length !== seeded.length) {
      throw new UserError(`initial noise has ${r.initialNoise.length} values, the latent batch needs ${seeded.length}`);
    }
    const first = r.initialNoise ?? seeded;
    const { init, keep } = p;
    if (init && keep) {
      const fill = r.img2img?.inpaintingFill ?? 1;
      if (fill === 2 || fill === 3) {
        for (let i = 0; i < init.length; i++) init[i] = init[i]! * keep[i]! + (fill === 2 ? first[i]! * (1 - keep[i]!) : 0);
      }
    }
    const noiseMult = r.img2img?.initialNoiseMultiplier ?? 1;
    const startNoise = noiseMult === 1 ? first : first.map((v) => v * noiseMult);

    const stepLatent = { x: undefined as Float32Array | undefined };
    const eps: EpsModel = async (unetInput, t, call) => {
      const stop = hooks.shouldStop?.();
      if (stop) throw new Stop(stop, stepLatent.x);
      const cond = conds.get(condKey(false, promptAtStep(posSched, call.index)))!;
      const uncond = conds.get(condKey(true, promptAtStep(negSched, call.index)))!;
      let guided = refiner?.takesOver(call)
        ? await refiner.eps(unetInput, t, call, promptAtStep(posSched, call.index), promptAtStep(negSched, call.index))
        : await this.guidedEps(unetInput, t, cond, uncond, r.cfgScale, { batch: B, height: h, width: w, tiling: !!r.tiling, sizes, uncondSizes });
      if (keep && init) guided = maskPrediction(guided, prediction, unetInput, init, keep, call.sigma);
      return guided;
    };

    const onStep: StepCallback = (info) => {
      stepLatent.x = info.x;
      hooks.onStep?.(info.index + 1, info.total, () => cheapPreview(info.denoised, B, C, h, w, this.model.arch.family === 'sdxl' || this.model.arch.family === 'sdxl-refiner'));
    };

    try {
      const result: SampleResult = await sample({
        sampler: r.sampler,
        scheduler: r.scheduler ?? null,
        steps: p.steps,
        model: eps,
        prediction,
        schedule: this.schedule,
        noise: startNoise,
        randn: () => noise.next(),
        eta: r.eta ?? null,
        sChurn: r.sChurn ?? null,
        sTmin: r.sTmin ?? null,
        sTmax: r.sTmax ?? null,
        sNoise: r.sNoise ?? null,
        img2img: init ? { init, denoisingStrength: p.strength ?? 0.75 } : undefined,
        onStep,
      });
      if (result.fallbackFrom !== undefined) notes.push(samplerFallbackNote(result.fallbackFrom, result.sampler));
      return { latent: result.latent, sampler: result.sampler, scheduleType: result.scheduleType, stopped: null };
    } catch (e) {
      if (!(e instanceof Stop)) throw e;
      return { latent: e.latent ?? init ?? startNoise.map((v) => v * this.schedule.sigmaMax), sampler: r.sampler ?? '', scheduleType: 'Automatic', stopped: e.reason };
    }
  }

  /**
   * eps_uncond + cfg · (eps_cond − eps_uncond), batching both halves into one UNet call when their lengths agree.
   * `sizes` (SDXL): each row's size numbers, for both halves as A1111 does; `uncondSizes` replaces them for the
   * negative half where they differ (the refiner's aesthetic score).
   */
  async guidedEps(
    x: Float32Array,
    t: number,
    cond: Conditioning,
    uncond: Conditioning,
    cfg: number,
    dims: { batch: number; height: number; width: number; tiling: boolean; sizes?: number[]; uncondSizes?: number[] },
  ): Promise<Float32Array> {
    const { sizes, uncondSizes, ...d } = dims;
    const B = d.batch;
    const dim = this.model.arch.unet.contextDim;
    const repeat = (c: Conditioning) => {
      const out = new Float32Array(B * c.tokens * dim);
      for (let b = 0; b < B; b++) out.set(c.data, b * c.tokens * dim);
      return out;
    };
    // SDXL's pooled embedding per row, with the rows' size numbers.
    const added = (...halves: [Conditioning, 'cond' | 'uncond'][]) => {
      if (!sizes) return undefined;
      const P = halves[0]![0].pooled!.length;
      const pooled = new Float32Array(halves.length * B * P);
      halves.forEach(([c], i) => {
        for (let b = 0; b < B; b++) pooled.set(c.pooled!, (i * B + b) * P);
      });
      return { pooled, sizes: halves.flatMap(([, half]) => (half === 'uncond' && uncondSizes) || sizes) };
    };
    if (cfg === 1) return this.model.predict(x, Array(B).fill(t), repeat(cond), { ...d, tokens: cond.tokens }, added([cond, 'cond']));
    let ec: Float32Array;
    let eu: Float32Array;
    if (cond.tokens === uncond.tokens) {
      const xx = new Float32Array(2 * x.length);
      xx.set(x, 0);
      xx.set(x, x.length);
      const ctx = new Float32Array(2 * B * cond.tokens * dim);
      ctx.set(repeat(cond), 0);
      ctx.set(repeat(uncond), B * cond.tokens * dim);
      const both = await this.model.predict(xx, Array(2 * B).fill(t), ctx, { ...d, batch: 2 * B, tokens: cond.tokens }, added([cond, 'cond'], [uncond, 'uncond']));
      ec = both.subarray(0, x.length);
      eu = both.subarray(x.length);
    } else {
      // Different chunk counts: two calls, as A1111 does unless pad_cond_uncond is set.
      ec = await this.model.predict(x, Array(B).fill(t), repeat(cond), { ...d, tokens: cond.tokens }, added([cond, 'cond']));
      eu = await this.model.predict(x, Array(B).fill(t), repeat(uncond), { ...d, tokens: uncond.tokens }, added([uncond, 'uncond']));
    }
    const out = new Float32Array(x.length);
    for (let i = 0; i < out.length; i++) out[i] = eu[i]! + cfg * (ec[i]! - eu[i]!);
    return out;
  }

  /** Whether the VAE runs in tiles for a latent of h × w cells. */
  private vaeTiles(r: Pick<GenerateRequest, 'tiling' | 'vaeTiling'>, h: number, w: number): boolean {
    return !r.tiling && tilesNeeded(r.vaeTiling ?? 'auto', h, w);
  }

  private async encodeImages(images: Float32Array[], B: number, width: number, height: number, r: Pick<GenerateRequest, 'tiling' | 'vaeTiling'>): Promise<Float32Array> {
    const tiling = !!r.tiling;
    const tiles = this.vaeTiles(r, height / 8, width / 8);
    const scale = this.model.arch.vae.scalingFactor;
    const per = this.model.arch.vae.embedDim * (height / 8) * (width / 8);
    const out = new Float32Array(B * per);
    const encoded = new Map<Float32Array, Float32Array>();
    for (let b = 0; b < B; b++) {
      const im = images[images.length === 1 ? 0 : b]!;
      let z = encoded.get(im);
      if (!z) {
        z = tiles ? await encodeTiled(this.model, im, height, width) : await this.model.encode(im, { batch: 1, height, width, tiling });
        encoded.set(im, z);
      }
      for (let i = 0; i < per; i++) out[b * per + i] = z[i]! * scale;
    }
    return out;
  }

  /** Decodes one image at a time: the VAE decoder's activations at 512² dominate peak memory. */
  private async decodeLatents(latent: Float32Array, B: number, h: number, w: number, r: Pick<GenerateRequest, 'tiling' | 'vaeTiling'>): Promise<Float32Array> {
    const tiling = !!r.tiling;
    const tiles = this.vaeTiles(r, h, w);
    const scale = this.model.arch.vae.scalingFactor;
    const per = latent.length / B;
    const pix = 3 * h * 8 * w * 8;
    const out = new Float32Array(B * pix);
    for (let b = 0; b < B; b++) {
      const z = latent.slice(b * per, (b + 1) * per).map((v) => v / scale);
      out.set(tiles ? await decodeTiled(this.model, z, h, w) : await this.model.decode(z, { batch: 1, height: h, width: w, tiling }), b * pix);
    }
    return out;
  }
}

/**
 * Inpainting as A1111's denoiser does it: the x0 estimate is replaced by the original latent where the mask
 * keeps the image. Expressed on eps so every sampler family gets it: with x = unetInput·√(σ²+1),
 * x0 = x − σ·eps, hence eps' = eps·repaint + (x − init)/σ·keep.
 */
/** `maskEps` for either prediction: a v output is masked as the eps it stands for (same x0), then turned back into v. */
function maskPrediction(out: Float32Array, prediction: Prediction, unetInput: Float32Array, init: Float32Array, keep: Float32Array, sigma: number): Float32Array {
  if (prediction === 'epsilon') return maskEps(out, unetInput, init, keep, sigma);
  // x_t = unetInput is variance preserving: eps = alpha * v + sigma_vp * x_t, with alpha = 1 / sqrt(sigma^2 + 1).
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaVp = sigma * alpha;
  const eps = out.map((v, i) => alpha * v + sigmaVp * unetInput[i]!);
  return maskEps(eps, unetInput, init, keep, sigma).map((e, i) => (e - sigmaVp * unetInput[i]!) / alpha);
}

function maskEps(eps: Float32Array, unetInput: Float32Array, init: Float32Array, keep: Float32Array, sigma: number): Float32Array {
  const s = Math.sqrt(sigma * sigma + 1);
  const out = new Float32Array(eps.length);
  for (let i = 0; i < eps.length; i++) {
    const k = keep[i]!;
    out[i] = k === 0 ? eps[i]! : eps[i]! * (1 - k) + ((unetInput[i]! * s - init[i]!) / sigma) * k;
  }
  return out;
}

/** The hires fix plan for a request (engine/sd/hires.ts: A1111's target size, upscale space, second-pass steps). */
function hiresTarget(r: GenerateRequest): HiresPlan {
  const o = r.hires!;
  return planHires(
    { scale: o.scale ?? 2, resizeX: o.resizeX ?? 0, resizeY: o.resizeY ?? 0, upscaler: o.upscaler, secondPassSteps: o.steps ?? 0, denoisingStrength: o.denoisingStrength },
    r.width,
    r.height,
    r.steps,
  );
}

/** Bilinear (align_corners false, as torch), nearest or nearest-exact resize of [B, C, h, w] latents. */
export function resizeLatents(x: Float32Array, B: number, C: number, h: number, w: number, H: number, W: number, mode: LatentUpscaleMode): Float32Array {
  const out = new Float32Array(B * C * H * W);
  const sy = h / H;
  const sx = w / W;
  for (let bc = 0; bc < B * C; bc++) {
    const src = bc * h * w;
    const dst = bc * H * W;
    for (let y = 0; y < H; y++) {
      for (let xo = 0; xo < W; xo++) {
        if (mode === 'nearest') {
          out[dst + y * W + xo] = x[src + Math.min(h - 1, Math.floor(y * sy)) * w + Math.min(w - 1, Math.floor(xo * sx))]!;
          continue;
        }
        if (mode === 'nearest-exact') {
          // torch 'nearest-exact' samples at pixel centres.
          out[dst + y * W + xo] = x[src + Math.min(h - 1, Math.floor((y + 0.5) * sy)) * w + Math.min(w - 1, Math.floor((xo + 0.5) * sx))]!;
          continue;
        }
        const fy = Math.max(0, (y + 0.5) * sy - 0.5);
        const fx = Math.max(0, (xo + 0.5) * sx - 0.5);
        const y0 = Math.min(h - 1, Math.floor(fy));
        const x0 = Math.min(w - 1, Math.floor(fx));
        const y1 = Math.min(h - 1, y0 + 1);
        const x1 = Math.min(w - 1, x0 + 1);
        const ty = fy - y0;
        const tx = fx - x0;
        const top = x[src + y0 * w + x0]! * (1 - tx) + x[src + y0 * w + x1]! * tx;
        const bot = x[src + y1 * w + x0]! * (1 - tx) + x[src + y1 * w + x1]! * tx;
        out[dst + y * W + xo] = top * (1 - ty) + bot * ty;
      }
    }
  }
  return out;
}

/** Lanczos-3 resize of [B, 3, H, W] images, separable, for hires fix with an image upscaler. */
export function resizeImages(x: Float32Array, B: number, w: number, h: number, W: number, H: number): Float32Array {
  const lanczos = (t: number) => (t === 0 ? 1 : Math.abs(t) >= 3 ? 0 : (3 * Math.sin(Math.PI * t) * Math.sin((Math.PI * t) / 3)) / (Math.PI * Math.PI * t * t));
  const resample1d = (src: Float32Array, n: number, N: number, stride: number, count: number, lineStride: number, outStride: number, outLine: number, dst: Float32Array) => {
    const scale = n / N;
    const support = 3 * Math.max(1, scale);
    for (let i = 0; i < N; i++) {
      const c = (i + 0.5) * scale - 0.5;
      const lo = Math.max(0, Math.ceil(c - support));
      const hi = Math.min(n - 1, Math.floor(c + support));
      const wts: number[] = [];
      let sum = 0;
      for (let j = lo; j <= hi; j++) {
        const v = lanczos((j - c) / Math.max(1, scale));
        wts.push(v);
        sum += v;
      }
      for (let l = 0; l < count; l++) {
        let acc = 0;
        for (let j = lo; j <= hi; j++) acc += src[l * lineStride + j * stride]! * wts[j - lo]!;
        dst[l * outLine + i * outStride] = acc / sum;
      }
    }
  };
  const out = new Float32Array(B * 3 * H * W);
  const tmp = new Float32Array(h * W);
  for (let p = 0; p < B * 3; p++) {
    const src = x.subarray(p * h * w, (p + 1) * h * w);
    resample1d(src, w, W, 1, h, w, 1, W, tmp);
    const dst = out.subarray(p * H * W, (p + 1) * H * W);
    resample1d(tmp, h, H, W, W, 1, W, 1, dst);
  }
  return out;
}

/**
 * A1111 pastes the original pixels back outside the mask after decoding (its overlay images), so the kept
 * region is untouched even though the VAE's receptive field spans the seam.
 */
function overlayOriginal(images: Float32Array, originals: Float32Array[], mask: Float32Array, B: number): void {
  const plane = mask.length;
  for (let b = 0; b < B; b++) {
    const orig = originals[originals.length === 1 ? 0 : b]!;
    for (let c = 0; c < 3; c++) {
      for (let p = 0; p < plane; p++) {
        const i = b * 3 * plane + c * plane + p;
        const m = mask[p]!;
        images[i] = orig[c * plane + p]! * (1 - m) + images[i]! * m;
      }
    }
  }
}

/**
 * A1111's "Approx cheap" live preview: a fixed linear map from the four SD latent channels to RGB, for the
 * first image of the batch. No network runs, so previews cost nothing next to a sampler step.
 */
const LATENT_RGB = [
  [0.298, 0.207, 0.208],
  [0.187, 0.286, 0.173],
  [-0.158, 0.189, 0.264],
  [-0.184, -0.271, -0.473],
];
/** A1111's coefficients for SDXL's latent space (`sd_vae_approx.cheap_approximation`). */
const LATENT_RGB_SDXL = [
  [0.3448, 0.4168, 0.4395],
  [-0.1953, -0.029, 0.025],
  [0.1074, 0.0886, -0.0163],
  [-0.373, -0.2499, -0.2088],
];

export function cheapPreview(latent: Float32Array, _B: number, C: number, h: number, w: number, sdxl = false): PreviewImage {
  const coeffs = sdxl ? LATENT_RGB_SDXL : LATENT_RGB;
  const data = new Uint8Array(h * w * 3);
  for (let p = 0; p < h * w; p++) {
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let l = 0; l < Math.min(C, 4); l++) v += latent[l * h * w + p]! * coeffs[l]![c]!;
      data[p * 3 + c] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
    }
  }
  return { width: w, height: h, data };
}

/** [batch, 3, H, W] floats in [-1, 1] → 8-bit RGB images, clamped as A1111 does. */
export function toRgbBytes(images: Float32Array, batch: number, width: number, height: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  const plane = width * height;
  for (let b = 0; b < batch; b++) {
    const px = new Uint8Array(plane * 3);
    const base = b * 3 * plane;
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) {
        const v = (images[base + c * plane + p]! + 1) / 2;
        px[p * 3 + c] = Math.round(255 * Math.min(1, Math.max(0, v)));
      }
    }
    out.push(px);
  }
  return out;
}
