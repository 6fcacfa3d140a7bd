/**
 * Prompt text → UNet context, as A1111's CLIP wrapper does it: weighted fragments packed into 77-token
 * chunks, each chunk through the text encoder, emphasis applied with the mean restored, chunks concatenated.
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

export class ClipConditioner implements Conditioner {
  private readonly cache = new Map<string, Conditioning>();

  constructor(
    private readonly model: StableDiffusion,
    private readonly tokenizer: ClipTokenizer,
    private readonly opts: ChunkOptions = {},
  ) {}

  async encode(prompt: string, clipSkip: number): Promise<Conditioning> {
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
