/**
 * The backend `serve` uses: the engine's SdGenerator (engine/generate/generator.ts) behind GenerationBackend.
 * Only conversions live here: RawImage bytes ↔ the pipeline's [3, H, W] floats in [-1, 1], LoraRef → the
 * merger's stack items, and the pipeline's report (sampler actually used, notes) → infotext entries.
 */
import { SdGenerator, findTokenizerDir, type GenerateWithLoras } from '../engine/generate/generator.ts';
import { toRgbBytes, type GenerateHooks } from '../engine/sd/pipeline.ts';
import { toChw } from '../engine/image/load.ts';
import { SAMPLERS as ENGINE_SAMPLERS } from '../engine/sampling/registry.ts';
import type { NoiseSource } from '../engine/rng/noise.ts';
import type { Device } from '../engine/runtime/providers.ts';
import type { EmbeddingLibrary } from '../engine/sd/embeddings.ts';
import { namedHashes, refinerParams } from '../engine/generate/infotext.ts';
import { usedEmbeddingHashes } from '../engine/generate/service.ts';
import type { CheckpointRef, RefinerParams, GenerationBackend, GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, RawImage } from './backend.ts';

export interface EngineBackendOptions {
  /** `cpu` (default), `cuda`, `dml`, `coreml`: the ONNX Runtime execution provider. */
  device: string;
  /** CLIP tokenizer folder; by default searched beside the checkpoint (see engine/generate/generator.ts). */
  tokenizer?: string;
  /** Folders tried when none is found beside the checkpoint (the server passes `models/tokenizer`, so checkpoints in subfolders work). */
  fallbackTokenizerDirs?: string[];
  /** ONNX Runtime intra-op threads; default all cores. */
  threads?: number;
  /** Feed all weights instead of baking conv weights into the sessions (less memory, a little slower). */
  lowMemory?: boolean;
  /** Textual-inversion embeddings the loaded model uses in prompts. */
  embeddings?: EmbeddingLibrary;
}

function request(p: GenerationParams): GenerateWithLoras {
  return {
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    seeds: p.seeds,
    subseeds: p.subseeds,
    subseedStrength: p.subseedStrength,
    seedResizeFromW: p.seedResizeFromW,
    seedResizeFromH: p.seedResizeFromH,
    width: p.width,
    height: p.height,
    steps: p.steps,
    cfgScale: p.cfgScale,
    sampler: p.sampler,
    scheduler: p.scheduler,
    clipSkip: p.clipSkip,
    eta: p.eta,
    sChurn: p.sChurn,
    sTmin: p.sTmin,
    sTmax: p.sTmax,
    sNoise: p.sNoise,
    randnSource: p.randnSource as NoiseSource,
    etaNoiseSeedDelta: p.etaNoiseSeedDelta,
    tiling: p.tiling,
    // SDXL's size conditioning and CLIP-L layer (A1111 options; other families ignore them).
    sdxlCropTop: Number(p.options['sdxl_crop_top'] ?? 0),
    sdxlCropLeft: Number(p.options['sdxl_crop_left'] ?? 0),
    sdxlClipLSkip: p.options['sdxl_clip_l_skip'] === true,
    aestheticScore: Number(p.options['sdxl_refiner_high_aesthetic_score'] ?? 6),
    negativeAestheticScore: Number(p.options['sdxl_refiner_low_aesthetic_score'] ?? 2.5),
  };
}

function hooksFor(h: GenerationHooks): GenerateHooks {
  return {
    onStep: (step, total, preview) =>
      h.onStep(step, total, async () => {
        const im = preview();
        return { width: im.width, height: im.height, channels: 3, data: im.data } satisfies RawImage;
      }),
    shouldStop: () => h.shouldStop(),
  };
}

export function createEngineBackend(opts: EngineBackendOptions): GenerationBackend {
  let gen: SdGenerator | null = null;
  let current: CheckpointRef | null = null;
  // One refiner stays loaded beside the base between requests (A1111 swaps them; keeping it spares a reload per image).
  let refiner: { path: string; gen: SdGenerator } | null = null;

  /** The refiner's generator, or null when it is the loaded checkpoint itself (A1111 then never switches). */
  const refinerFor = async (r: RefinerParams): Promise<SdGenerator | null> => {
    if (!current || r.checkpoint.path === current.path) return null;
    if (refiner?.path !== r.checkpoint.path) {
      refiner = null;
      const gen = await SdGenerator.load(r.checkpoint.path, { device: opts.device as Device, tokenizer: await tokenizerFor(r.checkpoint.path), threads: opts.threads, lowMemory: opts.lowMemory });
      refiner = { path: r.checkpoint.path, gen };
    }
    return refiner.gen;
  };

  const tokenizerFor = (path: string): Promise<string> => findTokenizerDir(path, opts.tokenizer, opts.fallbackTokenizerDirs);

  const run = async (p: GenerationParams, hooks: GenerationHooks, img2img?: Img2ImgParams): Promise<GenerationOutput> => {
    if (!gen) throw new Error('no checkpoint loaded');
    const req = request(p);
    if (img2img) {
      const lat = img2img.initLatents;
      req.img2img = {
        images: img2img.initImages.map((im) => toChw(im.data, im.width, im.height, false, im.channels)),
        ...(lat ? { latents: gen.upscaleLatents(lat.batch.data, p.seeds.length, lat.batch.width, lat.batch.height, p.width, p.height, lat.mode) } : {}),
        denoisingStrength: img2img.denoisingStrength,
        mask: img2img.mask ? Float32Array.from(img2img.mask.data, (v) => v / 255) : null,
        inpaintingFill: img2img.inpaintingFill,
        initialNoiseMultiplier: img2img.initialNoiseMultiplier,
      };
    }
    const refinerGen = p.refiner ? await refinerFor(p.refiner) : null;
    if (p.refiner && refinerGen) req.refiner = { generator: refinerGen, name: p.refiner.title, switchAt: p.refiner.switchAt, bySteps: p.refiner.bySteps };
    const conditioner = gen.pipeline.conditioner;
    conditioner.takeUsedEmbeddings?.();
    const out = await gen.generate({ ...req, loras: p.loras.map((l) => ({ path: l.path, te: l.teMultiplier, unet: l.unetMultiplier, name: l.name, ...(l.dynDim !== null ? { dyn: l.dynDim } : {}) })) }, hooksFor(hooks));
    // A1111 writes the hashes of the embeddings the prompts used (option textual_inversion_add_hashes_to_infotext).
    const used = await usedEmbeddingHashes(conditioner, opts.embeddings);
    const tiHashes = p.options['textual_inversion_add_hashes_to_infotext'] !== false ? used : [];
    const images = toRgbBytes(out.images, p.seeds.length, p.width, p.height).map((data) => ({ width: p.width, height: p.height, channels: 3 as const, data }));
    return {
      images,
      latents: { width: out.width, height: out.height, data: out.latents },
      // What the sampler really used wins over the server's reading of the request.
      // 'Automatic' from the pipeline means "the sampler's default"; the server names that default itself.
      extraParams: { Sampler: out.sampler, ...(out.scheduleType && out.scheduleType !== 'Automatic' ? { 'Schedule type': out.scheduleType } : {}), ...(tiHashes.length ? { 'TI hashes': namedHashes(tiHashes) } : {}), ...(out.refined && p.refiner ? refinerParams(p.refiner.title, p.refiner.switchAt) : {}) },
      notes: out.notes,
    };
  };

  return {
    description: `onnxruntime ${opts.device}`,
    samplers: ENGINE_SAMPLERS.map((s) => s.name),
    async loadCheckpoint(ckpt, vae) {
      gen = null;
      current = null;
      gen = await SdGenerator.load(ckpt.path, { vae: vae?.path, device: opts.device as Device, tokenizer: await tokenizerFor(ckpt.path), threads: opts.threads, lowMemory: opts.lowMemory });
      gen.pipeline.conditioner.setEmbeddings?.(opts.embeddings ?? null);
      current = ckpt;
    },
    async unload() {
      gen = null;
      current = null;
      refiner = null;
    },
    currentCheckpoint: () => current,
    txt2img: (p, hooks) => run(p, hooks),
    img2img: (p, hooks) => run(p, hooks, p),
  };
}
