/**
 * Sample images during training: the LoRA as it stands is written to a scratch file and rendered through the
 * generation service (engine/generate/service.ts) over the training model — the same merger, pipeline and
 * infotext as `lora-scripts generate` and the server, so a sample shows what A1111 would render and its PNG
 * says how it was made. The weights are restored bit-exactly before training continues. PNGs go to
 * `<output_dir>/sample/` as kohya names them.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SdGenerator } from '../generate/generator.ts';
import { GenerationService, encodePng } from '../generate/service.ts';
import { modelIdentity, type ModelIdentity } from '../generate/identity.ts';
import { writeKohyaLora } from '../lora/write.ts';
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
  infotext: string;
}

export class TrainingSampler {
  private readonly generator: SdGenerator;
  private identity?: ModelIdentity;

  constructor(
    model: StableDiffusion,
    tokenizer: ClipTokenizer,
    private readonly network: LoraNetwork,
    private readonly dir: string,
    private readonly name: string,
    log: (m: string) => void,
    /** The base checkpoint the model was loaded from (the infotext's Model and Model hash). */
    private readonly checkpoint: string,
  ) {
    // No caches: the network changes between samples, and the training run needs the memory.
    this.generator = SdGenerator.over(model, tokenizer, { cacheBytes: 0, loraCacheBytes: 0, log });
  }

  async render(prompts: readonly SamplePrompt[], step: number, defaults: { seed: number; size: number }): Promise<RenderedSample[]> {
    this.identity ??= await modelIdentity(this.checkpoint);
    const service = new GenerationService(this.generator, this.identity, null);
    const scratch = join(this.dir, `.sample-lora-${process.pid}-${step}.safetensors`);
    await writeKohyaLora(scratch, this.network.toLoraModules());
    const out: RenderedSample[] = [];
    try {
      const stamp = new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14);
      for (const [i, p] of prompts.entries()) {
        const seed = p.seed ?? defaults.seed;
        const r = await service.render({
          prompt: p.prompt,
          negativePrompt: p.negative_prompt,
          seeds: [seed],
          width: p.width ?? defaults.size,
          height: p.height ?? defaults.size,
          steps: p.steps,
          cfgScale: p.cfg_scale,
          sampler: SAMPLE_SAMPLER,
          extraLoras: [{ path: scratch, te: 1, unet: 1, name: 'training' }],
        });
        const [image] = r.images;
        if (!image) throw new Error(`sample ${i}: the pipeline returned no image`);
        const png = new Uint8Array(await encodePng(image, image.infotext));
        const path = join(this.dir, `${this.name}_${String(step).padStart(6, '0')}_${String(i).padStart(2, '0')}_${stamp}_${seed}.png`);
        await writeBufferAtomic(path, png);
        out.push({ path, png, prompt: p.prompt, infotext: image.infotext });
      }
    } finally {
      await this.generator.restoreBase();
      await rm(scratch, { force: true });
    }
    return out;
  }
}
