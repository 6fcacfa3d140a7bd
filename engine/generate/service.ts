/**
 * The generation service: one loaded checkpoint (SdGenerator), the LoRA folder it reads `<lora:…>` tags from,
 * and the infotext rule, so that `lora-scripts generate`, the server's engine backend and the trainer's sample
 * images turn the same prompt and settings into the same pixels and the same infotext.
 *
 * A request goes: tags stripped from the prompt and resolved in the LoRA library (engine/lora/resolve.ts) with
 * their short hashes (engine/lora/hash.ts, kept in A1111's cache.json when the caller has one) → the stack
 * merged and the batch sampled (SdGenerator), textual-inversion embeddings from the service's folder → RGB
 * bytes with their infotexts (engine/generate/infotext.ts) → PNGs carrying them (`encodePng`).
 */
import { encodeImage } from '../image/encode.ts';
import { cachedLoraShortHash } from '../lora/hash.ts';
import type { StackItem } from '../lora/merge.ts';
import { extractPromptTags } from '../lora/prompt-tags.ts';
import type { LoraLibrary } from '../lora/resolve.ts';
import type { NoiseSource } from '../rng/noise.ts';
import type { Conditioner } from '../sd/conditioning.ts';
import type { EmbeddingLibrary } from '../sd/embeddings.ts';
import { toRgbBytes, type GenerateHooks } from '../sd/pipeline.ts';
import type { HashCache } from '../util/hash-cache.ts';
import { VERSION } from '../version.ts';
import type { SdGenerator } from './generator.ts';
import { modelInfotextFields, type ModelIdentity, type VaeIdentity } from './identity.ts';
import { generationInfotext, refinerParams, scheduleTypeLabel, type NamedHash } from './infotext.ts';

export interface ImageRequest {
  /** The prompt as written; `<lora:name:te:unet>` tags are resolved in the service's LoRA library. */
  prompt: string;
  negativePrompt: string;
  /** One seed per image of the batch. */
  seeds: number[];
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  sampler: string;
  scheduler?: string | null;
  clipSkip?: number;
  tiling?: boolean;
  randnSource?: NoiseSource;
  /** null or absent: the sampler's default (A1111 eta_ancestral 1, eta_ddim 0). */
  eta?: number | null;
  /** A1111 option eta_noise_seed_delta: seeds the sampler's later noise draws with seed + this. */
  etaNoiseSeedDelta?: number;
  /** LoRAs applied beside the prompt's tags and not named in the infotext (a training sample's own network). */
  extraLoras?: StackItem[];
  /** A second checkpoint that takes over the sampler run from `switchAt` (A1111's refiner, engine/sd/refiner.ts). */
  refiner?: RefinerRequest;
}

export interface RefinerRequest {
  generator: SdGenerator;
  /** The refiner's identity: the infotext names it by its short title once it took over. */
  model: ModelIdentity;
  /** Progress 0..1 (A1111 `refiner_switch_at`); null switches at the first call, as A1111. */
  switchAt: number | null;
}

export interface RenderedImage {
  seed: number;
  width: number;
  height: number;
  /** RGB bytes, row-major. */
  rgb: Uint8Array;
  infotext: string;
}

export interface RenderResult {
  images: RenderedImage[];
  notes: string[];
}

/** A PNG of the image (RGB unless `channels` says otherwise) with its infotext in the `parameters` text chunk, as A1111 saves it. */
export function encodePng(img: { width: number; height: number; rgb: Uint8Array; channels?: 1 | 3 | 4 }, infotext: string | null): Promise<Buffer> {
  return encodeImage({ width: img.width, height: img.height, channels: img.channels ?? 3, data: img.rgb }, 'png', infotext);
}

export interface ServiceOptions {
  /** The separate VAE loaded with the checkpoint (the infotext names it), if any. */
  vae?: VaeIdentity | null;
  /** Textual-inversion embeddings the prompts may use by name. */
  embeddings?: EmbeddingLibrary | null;
  /** A1111's cache.json for the LoRA hashes the infotext carries. */
  hashCache?: HashCache | null;
}

/** `TI hashes` of the embeddings the last conditioning used (A1111 option textual_inversion_add_hashes_to_infotext). */
export async function usedEmbeddingHashes(conditioner: Conditioner, library: EmbeddingLibrary | null | undefined): Promise<NamedHash[]> {
  const used = conditioner.takeUsedEmbeddings?.() ?? [];
  if (!library) return [];
  return Promise.all(used.map(async (e) => ({ name: e.name, hash: await library.shortHash(e) })));
}

export class GenerationService {
  constructor(
    readonly generator: SdGenerator,
    readonly model: ModelIdentity,
    /** Where `<lora:…>` tags are looked up; null when the prompt may name none. */
    private readonly library: LoraLibrary | null,
    private readonly opts: ServiceOptions = {},
  ) {
    if (opts.embeddings) generator.pipeline.conditioner.setEmbeddings?.(opts.embeddings);
  }

  /** Tags → files (a name the library lacks is a UserError naming the closest ones) with their short hashes. */
  async resolveLoras(prompt: string): Promise<{ prompt: string; stack: StackItem[]; hashes: NamedHash[] }> {
    const tags = extractPromptTags(prompt);
    const stack: StackItem[] = [];
    const hashes: NamedHash[] = [];
    for (const t of tags.loras) {
      if (!this.library) throw new Error(`the prompt names <lora:${t.name}> but no LoRA folder was given`);
      const e = await this.library.resolve(t.name);
      stack.push({ path: e.path, te: t.te, unet: t.unet, name: t.name, ...(t.dyn !== undefined ? { dyn: t.dyn } : {}) });
      hashes.push({ name: t.name, hash: await cachedLoraShortHash(e, this.opts.hashCache ?? null) });
    }
    return { prompt: tags.prompt, stack, hashes };
  }

  async render(r: ImageRequest, hooks: GenerateHooks = {}): Promise<RenderResult> {
    const loras = await this.resolveLoras(r.prompt);
    const clipSkip = r.clipSkip ?? 1;
    const randnSource = r.randnSource ?? 'GPU';
    const conditioner = this.generator.pipeline.conditioner;
    conditioner.takeUsedEmbeddings?.();
    const out = await this.generator.generate(
      {
        prompt: loras.prompt,
        negativePrompt: r.negativePrompt,
        seeds: r.seeds,
        width: r.width,
        height: r.height,
        steps: r.steps,
        cfgScale: r.cfgScale,
        sampler: r.sampler,
        scheduler: r.scheduler ?? null,
        clipSkip,
        tiling: r.tiling ?? false,
        randnSource,
        eta: r.eta ?? null,
        etaNoiseSeedDelta: r.etaNoiseSeedDelta ?? 0,
        loras: [...loras.stack, ...(r.extraLoras ?? [])],
        ...(r.refiner ? { refiner: { generator: r.refiner.generator, name: shortTitle(r.refiner.model), switchAt: r.refiner.switchAt } } : {}),
      },
      hooks,
    );
    const refined = out.refined && r.refiner ? refinerParams(shortTitle(r.refiner.model), r.refiner.switchAt) : {};
    const tiHashes = await usedEmbeddingHashes(conditioner, this.opts.embeddings);
    const pixels = toRgbBytes(out.images, r.seeds.length, out.width, out.height);
    const images = pixels.map((rgb, i): RenderedImage => {
      const seed = r.seeds[i] ?? 0;
      const infotext = generationInfotext({
        prompt: r.prompt,
        negativePrompt: r.negativePrompt,
        steps: r.steps,
        sampler: out.sampler,
        scheduleType: scheduleTypeLabel(out.sampler, r.scheduler),
        cfgScale: r.cfgScale,
        seed,
        width: r.width,
        height: r.height,
        ...modelInfotextFields(this.model, this.opts.vae ?? null),
        clipSkip,
        ensd: r.etaNoiseSeedDelta ?? 0,
        eta: r.eta ?? null,
        rng: randnSource,
        tiling: r.tiling ?? false,
        loraHashes: loras.hashes,
        tiHashes,
        extra: refined,
        version: VERSION,
      });
      return { seed, width: out.width, height: out.height, rgb, infotext };
    });
    return { images, notes: out.notes };
  }
}

/** A1111's short title of a checkpoint (`<stem> [<short hash>]`), or the stem when it has no hash. */
export function shortTitle(m: ModelIdentity): string {
  return m.shortHash ? `${m.name} [${m.shortHash}]` : m.name;
}
