/**
 * Prompt text → context and pooled embedding for SDXL's refiner, as A1111 conditions it (`sd_models_xl` with
 * the refiner's one embedder, `FrozenOpenCLIPEmbedder2`): the prompt's 75-token chunks through the OpenCLIP
 * bigG tower padded with 0, its penultimate hidden state (no final LayerNorm) as the context with emphasis
 * applied (mean restored), the pooled projection of the first chunk; an empty negative prompt is all zeros.
 * Textual-inversion embeddings are not looked up here.
 */
import { compile, type CompiledGraph } from '../runtime/session.ts';
import { clipTextHidden, eosOneHot } from '../models/clip-text.ts';
import { chunkPrompt, type ChunkOptions } from '../text/chunker.ts';
import { applyEmphasis } from '../text/emphasis.ts';
import type { ClipTokenizer } from '../text/tokenizer.ts';
import { SDXL_PAD_ID, withPad, type Conditioner, type Conditioning, type EncodeOptions } from './conditioning.ts';
import type { StableDiffusion } from './model.ts';

export class SdxlRefinerConditioner implements Conditioner {
  private readonly cache = new Map<string, Conditioning>();
  private readonly tokenizer: ClipTokenizer;
  private graph: Promise<CompiledGraph> | undefined;

  constructor(
    private readonly model: StableDiffusion,
    tokenizer: ClipTokenizer,
    private readonly opts: ChunkOptions = {},
  ) {
    this.tokenizer = tokenizer.pad !== SDXL_PAD_ID ? withPad(tokenizer, SDXL_PAD_ID) : tokenizer;
  }

  /** The tower over the model's own weight buffers (fed, so a LoRA merged in place applies at once). */
  private tower(tokens: number): Promise<CompiledGraph> {
    this.graph ??= (() => {
      const r = clipTextHidden(this.model.context(), this.model.arch.textEncoder, { batch: 1, tokens, fromEnd: 2, pooled: true });
      return compile([r.hidden, r.pooled!]);
    })();
    return this.graph;
  }

  async encode(prompt: string, _clipSkip: number, o: EncodeOptions = {}): Promise<Conditioning> {
    const zero = !!o.negative && prompt === '';
    const key = `${zero}\u0000${prompt}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const te = this.model.arch.textEncoder;
    const chunks = chunkPrompt(this.tokenizer, prompt, this.opts);
    const T = chunks[0]!.ids.length;
    const data = new Float32Array(chunks.length * T * te.width);
    let pooled: Float32Array = new Float32Array(te.projection!.dim);
    if (!zero) {
      const g = await this.tower(T);
      for (const [i, c] of chunks.entries()) {
        const ids = BigInt64Array.from(c.ids, BigInt);
        const [hidden, p] = await g.run({ input_ids: ids, eos_onehot: eosOneHot(ids, 1, T) });
        data.set(applyEmphasis(hidden!.data as Float32Array, [T, te.width], c.multipliers, this.opts.emphasis), i * T * te.width);
        if (i === 0) pooled = p!.data as Float32Array;
      }
    }
    const out = { data, tokens: chunks.length * T, pooled };
    if (this.cache.size > 64) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(key, out);
    return out;
  }

  clear(): void {
    this.cache.clear();
  }
}
