/**
 * Prompt text → UNet context, as A1111's CLIP wrapper does it: weighted fragments packed into 77-token
 * chunks, each chunk through the text encoder, emphasis applied with the mean restored, chunks concatenated.
 *
 * SD 2.x follows A1111's OpenCLIP wrapper (`FrozenOpenCLIPEmbedderWithCustomWords`): ids after the first end
 * token are 0 whatever the tokenizer files say, and clip skip has no effect (the wrapper always takes the
 * penultimate layer and leaves `CLIP_stop_at_last_layers` unused).
 */
import { chunkPrompt, type ChunkOptions } from '../text/chunker.ts';
import { applyEmphasis } from '../text/emphasis.ts';
import type { ClipTokenizer } from '../text/tokenizer.ts';
import type { StableDiffusion } from './model.ts';

export interface Conditioning {
  /** [tokens, dim] */
  data: Float32Array;
  /** 77 × the number of chunks. */
  tokens: number;
}

export interface Conditioner {
  encode(prompt: string, clipSkip: number): Promise<Conditioning>;
}

/** SD 2.x's padding id (A1111's OpenCLIP wrapper sets `id_pad = 0`, the tokenizer's "!"). */
export const SD2_PAD_ID = 0;

/** The same tokenizer with another padding id (the chunker writes `pad` after the first end token). */
function withPad(tokenizer: ClipTokenizer, pad: number): ClipTokenizer {
  return Object.create(tokenizer, { pad: { value: pad } }) as ClipTokenizer;
}

export class ClipConditioner implements Conditioner {
  private readonly cache = new Map<string, Conditioning>();
  private readonly tokenizer: ClipTokenizer;
  private readonly sd2: boolean;

  constructor(
    private readonly model: StableDiffusion,
    tokenizer: ClipTokenizer,
    private readonly opts: ChunkOptions = {},
  ) {
    this.sd2 = model.arch.family === 'sd2';
    this.tokenizer = this.sd2 && tokenizer.pad !== SD2_PAD_ID ? withPad(tokenizer, SD2_PAD_ID) : tokenizer;
  }

  /** The tokenizer as this model's conditioning uses it (SD2: padding id 0). */
  get effectiveTokenizer(): ClipTokenizer {
    return this.tokenizer;
  }

  async encode(prompt: string, requestedClipSkip: number): Promise<Conditioning> {
    const clipSkip = this.sd2 ? 1 : requestedClipSkip;
    const key = `${clipSkip}\u0000${prompt}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const chunks = chunkPrompt(this.tokenizer, prompt, this.opts);
    const T = chunks[0]!.ids.length;
    const dim = this.model.arch.textEncoder.width;
    const data = new Float32Array(chunks.length * T * dim);
    for (const [i, c] of chunks.entries()) {
      const z = await this.model.encodeText(BigInt64Array.from(c.ids, BigInt), 1, T, clipSkip);
      data.set(applyEmphasis(z, [T, dim], c.multipliers, this.opts.emphasis), i * T * dim);
    }
    const out = { data, tokens: chunks.length * T };
    // Prompts repeat across batches and n_iter; a small cache spares the text encoder.
    if (this.cache.size > 64) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, out);
    return out;
  }

  /** Drops cached contexts: needed when the text encoder's weights change (a LoRA stack switch). */
  clear(): void {
    this.cache.clear();
  }
}
