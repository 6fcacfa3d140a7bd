/**
 * Sample images during training: the LoRA as it stands is written to a scratch file, merged into the model's
 * weights through the same merger the `<lora:…>` prompt tags use (so samples show what A1111 would render),
 * the prompts are rendered with the generation pipeline, and the weights are restored bit-exactly before
 * training continues. PNGs go to `<output_dir>/sample/` as kohya names them.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeKohyaLora } from '../lora/write.ts';
import { LoraMerger } from '../lora/merge.ts';
import { conditionerFor, type Conditioner } from '../sd/conditioning.ts';
import { Pipeline, toRgbBytes } from '../sd/pipeline.ts';
import type { StableDiffusion } from '../sd/model.ts';
import type { ClipTokenizer } from '../text/tokenizer.ts';
import type { SamplePrompt } from './config.ts';
import type { LoraNetwork } from './lora-network.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';

/** kohya's sample_sampler default. */
export const SAMPLE_SAMPLER = 'DDIM';

export interface RenderedSample {
  path: string;
  png: Uint8Array;
  prompt: string;
}

export class TrainingSampler {
  private readonly merger: LoraMerger;
  private readonly pipeline: Pipeline;
  private readonly conditioner: Conditioner;

  constructor(
    private readonly model: StableDiffusion,
    tokenizer: ClipTokenizer,
    private readonly network: LoraNetwork,
    private readonly dir: string,
    private readonly name: string,
    log: (m: string) => void,
  ) {
    this.merger = new LoraMerger(model.weights, { cacheBytes: 0, loraCacheBytes: 0, log, family: model.arch.family });
    this.conditioner = conditionerFor(model, tokenizer);
    this.pipeline = new Pipeline(model, this.conditioner);
  }

  async render(prompts: readonly SamplePrompt[], step: number, defaults: { seed: number; size: number }): Promise<RenderedSample[]> {
    const scratch = join(this.dir, `.sample-lora-${process.pid}-${step}.safetensors`);
    await writeKohyaLora(scratch, this.network.toLoraModules());
    const out: RenderedSample[] = [];
    try {
      await this.merger.apply([{ path: scratch, te: 1, unet: 1, name: 'training' }]);
      // The text encoder may carry the LoRA now: contexts cached before would be stale.
      this.conditioner.clear?.();
      const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
      for (const [i, p] of prompts.entries()) {
        const seed = p.seed ?? defaults.seed;
        const width = p.width ?? defaults.size;
        const height = p.height ?? defaults.size;
        const r = await this.pipeline.generate({
          prompt: p.prompt,
          negativePrompt: p.negative_prompt,
          seeds: [seed],
          width,
          height,
          steps: p.steps,
          cfgScale: p.cfg_scale,
          sampler: SAMPLE_SAMPLER,
        });
        const [rgb] = toRgbBytes(r.images, 1, r.width, r.height);
        const png = new Uint8Array(await sharp(Buffer.from(rgb!), { raw: { width: r.width, height: r.height, channels: 3 } }).png().toBuffer());
        const path = join(this.dir, `${this.name}_${String(step).padStart(6, '0')}_${String(i).padStart(2, '0')}_${stamp}_${seed}.png`);
        await writeBufferAtomic(path, png);
        out.push({ path, png, prompt: p.prompt });
      }
    } finally {
      await this.merger.restore();
      this.conditioner.clear?.();
      await rm(scratch, { force: true });
    }
    return out;
  }
}
