/**
 * One loaded checkpoint ready to generate: weights, tokenizer, the LoRA merger over those weights and the
 * pipeline. Both the CLI and the server's backend drive generation through this, so a LoRA stack is merged the
 * same way everywhere: W' = W + Σ mᵢ·(αᵢ/rᵢ)·ΔWᵢ, applied in place before sampling, restored on the next change.
 */
import { dirname, join } from 'node:path';
import { LoraMerger, type LoraMergerOptions, type MergeResult, type StackItem } from '../lora/merge.ts';
import { BUNDLED_CLIP_TOKENIZER, hasTokenizerFiles, loadClipTokenizer, type ClipTokenizer } from '../text/tokenizer.ts';
import { conditionerFor, type Conditioner } from '../sd/conditioning.ts';
import { StableDiffusion, type LoadOptions } from '../sd/model.ts';
import { Pipeline, resizeLatents, type GenerateHooks, type GenerateRequest, type GenerateResult } from '../sd/pipeline.ts';
import type { LatentUpscaleMode } from '../sd/hires.ts';
import { FAMILY_NAMES } from '../lora/family.ts';
import { checkRefinerFits, type RefinerRun } from '../sd/refiner.ts';

export interface GeneratorOptions extends LoadOptions {
  /** Folder with the CLIP tokenizer; searched for when not given (see `findTokenizerDir`). */
  tokenizer?: string;
  /**
   * Memory before speed: no merged-stack cache (going back to a LoRA stack merges it anew instead of copying a
   * cached one), and ONNX Runtime's memory arena off whatever `memArena` says. Measured in docs/benchmarks.md.
   */
  lowMemory?: boolean;
}

export { hasTokenizerFiles };

/**
 * Where the tokenizer for a checkpoint is: the explicit folder; a diffusers folder's own `tokenizer/`;
 * `tokenizer/` beside a single-file checkpoint; `models/tokenizer` (the folder above the checkpoint folder);
 * the caller's `fallbacks` (a server's own models/tokenizer, for checkpoints in subfolders); else the CLIP
 * vocabulary that ships with the project, which every SD 1.x / 2.x / SDXL text encoder uses.
 */
export async function findTokenizerDir(checkpoint: string, explicit?: string, fallbacks: readonly string[] = []): Promise<string> {
  if (explicit) return explicit;
  const candidates = [join(checkpoint, 'tokenizer'), join(dirname(checkpoint), 'tokenizer'), join(dirname(dirname(checkpoint)), 'tokenizer')];
  for (const c of [...candidates, ...fallbacks]) {
    if (await hasTokenizerFiles(c)) return c;
  }
  return BUNDLED_CLIP_TOKENIZER;
}

/** A refiner for `generate`: another loaded checkpoint that continues the sampler run part-way (engine/sd/refiner.ts). */
export interface RefinerChoice extends Omit<RefinerRun, 'pipeline' | 'switched'> {
  generator: SdGenerator;
  /** How messages name it (A1111's checkpoint title). */
  name: string;
}

export interface GenerateWithLoras extends Omit<GenerateRequest, 'refiner'> {
  loras?: StackItem[];
  refiner?: RefinerChoice;
}

export interface GeneratorResult extends GenerateResult {
  lora?: MergeResult;
  /** Whether a refiner took over (A1111 writes `Refiner` into the infotext only then). */
  refined?: boolean;
}

export class SdGenerator {
  private constructor(
    readonly model: StableDiffusion,
    readonly tokenizer: ClipTokenizer,
    readonly merger: LoraMerger,
    private readonly conditioner: Conditioner,
    readonly pipeline: Pipeline,
  ) {}

  static async load(checkpoint: string, opts: GeneratorOptions = {}): Promise<SdGenerator> {
    const tokenizer = await loadClipTokenizer(await findTokenizerDir(checkpoint, opts.tokenizer));
    // Fed weights by default, by measurement (docs/benchmarks.md): at SD 1.5 sizes a fed UNet step was faster
    // than a baked one (9.2 s vs 11.9 s at 512², quiet machine), and baking keeps a second, pre-packed copy of
    // the conv weights (bench peak 11.3 GiB vs 5.7 GiB); fed, a LoRA merge never rebuilds a session either.
    // ONNX Runtime's arena off by default, by measurement: with it off the SD 1.5 pipeline with a LoRA merged
    // peaks at 5.42 GiB (PyTorch's pipeline: 5.5 GiB); the arena keeps each session's largest run (+1.1 GiB with
    // the UNet's alone, +2.2 GiB with all) for steps 1.3x faster on a quiet machine (7.3-7.5 s vs 5.6 s at 512²,
    // within the 0.8x of PyTorch's 10.3 s either way). `memArena: true` or 'unet' takes the speed.
    const { lowMemory, ...load } = opts;
    const model = await StableDiffusion.load(checkpoint, { weights: 'inputs', memArena: false, ...load, ...(lowMemory ? { memArena: false } : {}) });
    tokenizer.checkFits(model.arch.textEncoder.vocabSize, checkpoint);
    return SdGenerator.over(model, tokenizer, lowMemory ? { cacheBytes: 0 } : {});
  }

  /** A generator over a model loaded elsewhere (the trainer's), merging LoRAs into its weights with `merger` options. */
  static over(model: StableDiffusion, tokenizer: ClipTokenizer, merger: Omit<LoraMergerOptions, 'family'> = {}): SdGenerator {
    const conditioner = conditionerFor(model, tokenizer);
    // Base weights come back from the checkpoint file rather than from copies kept in memory.
    const reload = (keys: string[]) => model.reloadWeights(keys);
    return new SdGenerator(model, tokenizer, new LoraMerger(model.weights, { reload, ...merger, family: model.arch.family }), conditioner, new Pipeline(model, conditioner));
  }

  /** Resizes a batch's latents from width × height to W × H pixels' worth (a hires pass with a latent upscaler). */
  upscaleLatents(latents: Float32Array, batch: number, width: number, height: number, W: number, H: number, mode: LatentUpscaleMode): Float32Array {
    return resizeLatents(latents, batch, this.model.arch.unet.inChannels, height / 8, width / 8, H / 8, W / 8, mode);
  }

  /** Puts the base weights back (after a stack that must not outlive its images, such as a training sample's). */
  async restoreBase(): Promise<void> {
    await this.model.weightsChanged(await this.merger.restore());
    this.conditioner.clear?.();
  }

  /** Makes `loras` the active stack (restoring the base weights first) and generates. */
  async generate(req: GenerateWithLoras, hooks: GenerateHooks = {}): Promise<GeneratorResult> {
    const lora = await this.merger.apply(req.loras ?? []);
    await this.model.weightsChanged(lora.changedKeys);
    if (lora.changedKeys.some((k) => k.startsWith('cond_stage_model.') || k.startsWith('conditioner.'))) this.conditioner.clear?.();
    const { refiner: choice, ...rest } = req;
    const refinerNotes: string[] = [];
    const refiner = choice ? await this.refinerRun(choice, req.loras ?? [], refinerNotes) : undefined;
    const out = await this.pipeline.generate({ ...rest, refiner }, hooks);
    const notes = [...out.notes, ...refinerNotes];
    for (const l of lora.loras) {
      if (l.unmatched.length) notes.push(`LoRA ${l.name}: ${l.unmatched.length} modules matched no weight (${l.unmatched.slice(0, 5).join(', ')}${l.unmatched.length > 5 ? ', …' : ''})`);
      for (const e of l.errors) notes.push(`LoRA ${l.name}: ${e}`);
    }
    return { ...out, notes, lora, refined: refiner?.switched ?? false };
  }

  /**
   * The refiner, ready: its latents must be the base's. A1111 applies the prompt's LoRAs to whichever model is
   * loaded, so on the refiner they change the layers whose names and shapes match: a refiner of the base's family
   * takes the same stack; in one of another family (SDXL's refiner) no layer matches and it runs unchanged.
   */
  private async refinerRun(c: RefinerChoice, loras: StackItem[], notes: string[]): Promise<RefinerRun> {
    const g = c.generator;
    checkRefinerFits(this.model, g.model, c.name);
    const same = g.model.arch.family === this.model.arch.family;
    const lora = await g.merger.apply(same ? loras : []);
    await g.model.weightsChanged(lora.changedKeys);
    if (lora.changedKeys.some((k) => k.startsWith('cond_stage_model.') || k.startsWith('conditioner.'))) g.conditioner.clear?.();
    if (!same && loras.length > 0) notes.push(`LoRAs apply to the base model only: the refiner ${c.name} is ${FAMILY_NAMES[g.model.arch.family]}`);
    return { pipeline: g.pipeline, switchAt: c.switchAt, bySteps: c.bySteps, hiresPass: c.hiresPass };
  }
}
