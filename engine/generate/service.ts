/**
 * The generation service: one loaded checkpoint (SdGenerator), the LoRA folder it reads `<lora:…>` tags from,
 * and the infotext rule, so that `lora-scripts generate`, the server's engine backend and the trainer's sample
 * images turn the same prompt and settings into the same pixels and the same infotext.
 *
 * A request goes: tags stripped from the prompt and resolved in the LoRA library (engine/lora/resolve.ts) with
 * their short hashes (engine/lora/hash.ts) → the stack merged and the batch sampled (SdGenerator) → RGB bytes
 * with their infotexts (engine/generate/infotext.ts) → PNGs carrying them (`encodePng`).
 */
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import sharp from 'sharp';
import { writePngText } from '../image/png-info.ts';
import { loraShortHash } from '../lora/hash.ts';
import type { StackItem } from '../lora/merge.ts';
import { extractPromptTags } from '../lora/prompt-tags.ts';
import type { LoraLibrary } from '../lora/resolve.ts';
import type { NoiseSource } from '../rng/noise.ts';
import { toRgbBytes, type GenerateHooks } from '../sd/pipeline.ts';
import { sha256File } from '../util/sha256-file.ts';
import { VERSION } from '../version.ts';
import type { SdGenerator } from './generator.ts';
import { generationInfotext, refinerParams, scheduleTypeLabel, type NamedHash } from './infotext.ts';

/** What the infotext says about the model: the checkpoint's file stem and short hash. */
export interface ModelIdentity {
  /** Checkpoint file stem (A1111 `Model`). */
  name: string;
  /** First 10 hex digits of the file's sha256 (A1111 `Model hash`), or null when not hashed. */
  shortHash: string | null;
}

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
export async function encodePng(img: { width: number; height: number; rgb: Uint8Array; channels?: 1 | 3 | 4 }, infotext: string | null): Promise<Buffer> {
  const raw = { width: img.width, height: img.height, channels: img.channels ?? 3 };
  const png = await sharp(Buffer.from(img.rgb.buffer, img.rgb.byteOffset, img.rgb.byteLength), { raw })
    .png()
    .toBuffer();
  return infotext ? writePngText(png, { parameters: infotext }) : png;
}

export class GenerationService {
  constructor(
    readonly generator: SdGenerator,
    readonly model: ModelIdentity,
    /** Where `<lora:…>` tags are looked up; null when the prompt may name none. */
    private readonly library: LoraLibrary | null,
  ) {}

  /** Tags → files (a name the library lacks is a UserError naming the closest ones) with their short hashes. */
  async resolveLoras(prompt: string): Promise<{ prompt: string; stack: StackItem[]; hashes: NamedHash[] }> {
    const tags = extractPromptTags(prompt);
    const stack: StackItem[] = [];
    const hashes: NamedHash[] = [];
    for (const t of tags.loras) {
      if (!this.library) throw new Error(`the prompt names <lora:${t.name}> but no LoRA folder was given`);
      const e = await this.library.resolve(t.name);
      stack.push({ path: e.path, te: t.te, unet: t.unet, name: t.name, ...(t.dyn !== undefined ? { dyn: t.dyn } : {}) });
      hashes.push({ name: t.name, hash: await loraShortHash(e) });
    }
    return { prompt: tags.prompt, stack, hashes };
  }

  async render(r: ImageRequest, hooks: GenerateHooks = {}): Promise<RenderResult> {
    const loras = await this.resolveLoras(r.prompt);
    const clipSkip = r.clipSkip ?? 1;
    const randnSource = r.randnSource ?? 'GPU';
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
        loras: [...loras.stack, ...(r.extraLoras ?? [])],
        ...(r.refiner ? { refiner: { generator: r.refiner.generator, name: shortTitle(r.refiner.model), switchAt: r.refiner.switchAt } } : {}),
      },
      hooks,
    );
    const refined = out.refined && r.refiner ? refinerParams(shortTitle(r.refiner.model), r.refiner.switchAt) : {};
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
        modelHash: this.model.shortHash,
        model: this.model.name,
        clipSkip,
        rng: randnSource,
        tiling: r.tiling ?? false,
        loraHashes: loras.hashes,
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

/** A checkpoint's identity for infotexts: its stem, and for a single file its sha256's first 10 hex digits. */
export async function modelIdentity(checkpoint: string): Promise<ModelIdentity> {
  const name = basename(checkpoint).replace(/\.safetensors$/i, '');
  const isFile = (await stat(checkpoint)).isFile();
  return { name, shortHash: isFile ? (await sha256File(checkpoint)).slice(0, 10) : null };
}
