/**
 * Prompt text → UNet context, as A1111's CLIP wrapper does it: weighted fragments packed into 77-token
 * chunks, each chunk through the text encoder, emphasis applied with the mean restored, chunks concatenated.
 *
 * SD 2.x follows A1111's OpenCLIP wrapper (`FrozenOpenCLIPEmbedderWithCustomWords`): ids after the first end
 * token are 0 whatever the tokenizer files say, and clip skip has no effect (the wrapper always takes the
 * penultimate layer and leaves `CLIP_stop_at_last_layers` unused).
 *
 * SDXL follows A1111's `sd_models_xl` and its two wrappers: the same chunks go through both encoders (the
 * OpenCLIP one padded with 0), each encoder's output gets the emphasis separately (its own mean restored),
 * the two are concatenated per token, and the pooled embedding is the OpenCLIP tower's for the first chunk.
 * An empty negative prompt is all zeros, context and pooled (sgm's `force_zero_embeddings`). The CLIP ViT-L
 * tower is read at its penultimate layer unless `sdxl_clip_l_skip` lets clip skip choose.
 */
import { compile, type CompiledGraph } from '../runtime/session.ts';
import { clipTextHidden, eosOneHot } from '../models/clip-text.ts';
import { chunkPrompt, type ChunkOptions } from '../text/chunker.ts';
import { applyEmphasis } from '../text/emphasis.ts';
import type { PromptChunk } from '../text/chunker.ts';
import type { ClipTokenizer } from '../text/tokenizer.ts';
import { towerVectors, type EmbeddingLibrary, type TextualInversion } from './embeddings.ts';
import type { StableDiffusion, TokenVectors } from './model.ts';

export interface Conditioning {
  /** [tokens, dim] */
  data: Float32Array;
  /** 77 × the number of chunks. */
  tokens: number;
  /** SDXL: the pooled text embedding [pooledDim] that joins the size conditioning. */
  pooled?: Float32Array;
  /** Names of the textual-inversion embeddings the prompt used. */
  embeddings?: string[];
}

export interface EncodeOptions {
  /** The prompt is a negative prompt (SDXL zeroes an empty one). */
  negative?: boolean;
  /** A1111 option `sdxl_clip_l_skip`: clip skip applies to SDXL's CLIP ViT-L tower (default: always its penultimate layer). */
  sdxlClipLSkip?: boolean;
}

export interface Conditioner {
  encode(prompt: string, clipSkip: number, opts?: EncodeOptions): Promise<Conditioning>;
  /** Drops cached contexts: needed when the text encoders' weights change (a LoRA stack switch). */
  clear?(): void;
  /** The textual-inversion embeddings prompts may name (null: none). */
  setEmbeddings?(library: EmbeddingLibrary | null): void;
  /** The embeddings used since the last call (for the infotext), and resets the record. */
  takeUsedEmbeddings?(): TextualInversion[];
}

/** The width of a token embedding for this model: A1111's expected embedding shape (SDXL: both towers' widths). */
export function embeddingWidth(model: StableDiffusion): number {
  return model.arch.textEncoder.width + (model.arch.textEncoder2?.width ?? 0);
}

/** A conditioner's view of the embedding library: its matcher (rebuilt when the library changes) and the embeddings used. */
class EmbeddingUse {
  private library: EmbeddingLibrary | null = null;
  private cached: { key: string; matcher: ReturnType<EmbeddingLibrary['matcher']> } | null = null;
  private readonly used = new Map<string, TextualInversion>();

  constructor(
    private readonly model: StableDiffusion,
    private readonly tokenizer: ClipTokenizer,
  ) {}

  set(library: EmbeddingLibrary | null): void {
    this.library = library;
    this.cached = null;
    if (library) library.expectedShape = embeddingWidth(this.model);
  }

  matcher(): ReturnType<EmbeddingLibrary['matcher']> | undefined {
    const lib = this.library;
    if (!lib) return undefined;
    const key = `${lib.version}:${lib.expectedShape}`;
    if (this.cached?.key !== key) this.cached = { key, matcher: lib.matcher(this.tokenizer) };
    return this.cached.matcher;
  }

  record(c: Conditioning): Conditioning {
    const lib = this.library;
    for (const name of c.embeddings ?? []) {
      const e = lib?.split().loaded.find((x) => x.name === name);
      if (e && !this.used.has(name)) this.used.set(name, e);
    }
    return c;
  }

  take(): TextualInversion[] {
    const out = [...this.used.values()];
    this.used.clear();
    return out;
  }
}

/** The embeddings named in these chunks, in order of first use. */
function chunkEmbeddings(chunks: PromptChunk[]): string[] {
  const names: string[] = [];
  for (const c of chunks) for (const f of c.fixes ?? []) if (!names.includes(f.embedding.name)) names.push(f.embedding.name);
  return names;
}

/** One tower's replacement vectors for a chunk's embedding positions, or undefined when the chunk has none. */
function chunkVectors(chunk: PromptChunk, width: number, tower?: 'clip_l' | 'clip_g'): TokenVectors | undefined {
  if (!chunk.fixes?.length) return undefined;
  const T = chunk.ids.length;
  const embeds = new Float32Array(T * width);
  const mask = new Uint8Array(T);
  for (const f of chunk.fixes) {
    const vec = towerVectors(f.embedding as TextualInversion, width, tower);
    const n = Math.min(f.embedding.vectors, T - 1 - f.offset);
    embeds.set(vec.subarray(0, n * width), f.offset * width);
    mask.fill(1, f.offset, f.offset + n);
  }
  return { embeds, mask };
}

/** SD 2.x's padding id (A1111's OpenCLIP wrapper sets `id_pad = 0`, the tokenizer's "!"). */
export const SD2_PAD_ID = 0;
/** SDXL's OpenCLIP tower pads with the same id (A1111, sgm, and sd-scripts' `tokenizer_2`). */
export const SDXL_PAD_ID = SD2_PAD_ID;

/** The same tokenizer with another padding id (the chunker writes `pad` after the first end token). */
function withPad(tokenizer: ClipTokenizer, pad: number): ClipTokenizer {
  return Object.create(tokenizer, { pad: { value: pad } }) as ClipTokenizer;
}

export class ClipConditioner implements Conditioner {
  private readonly cache = new Map<string, Conditioning>();
  private readonly tokenizer: ClipTokenizer;
  private readonly sd2: boolean;
  private readonly ti: EmbeddingUse;

  constructor(
    private readonly model: StableDiffusion,
    tokenizer: ClipTokenizer,
    private readonly opts: ChunkOptions = {},
  ) {
    this.sd2 = model.arch.family === 'sd2';
    this.tokenizer = this.sd2 && tokenizer.pad !== SD2_PAD_ID ? withPad(tokenizer, SD2_PAD_ID) : tokenizer;
    this.ti = new EmbeddingUse(model, this.tokenizer);
  }

  setEmbeddings(library: EmbeddingLibrary | null): void {
    this.ti.set(library);
  }

  takeUsedEmbeddings(): TextualInversion[] {
    return this.ti.take();
  }

  /** The tokenizer as this model's conditioning uses it (SD2: padding id 0). */
  get effectiveTokenizer(): ClipTokenizer {
    return this.tokenizer;
  }

  async encode(prompt: string, requestedClipSkip: number, _opts: EncodeOptions = {}): Promise<Conditioning> {
    const clipSkip = this.sd2 ? 1 : requestedClipSkip;
    const embeddings = this.ti.matcher();
    const key = `${clipSkip}\u0000${embeddings?.version ?? ''}\u0000${prompt}`;
    const hit = this.cache.get(key);
    if (hit) return this.ti.record(hit);
    const chunks = chunkPrompt(this.tokenizer, prompt, { ...this.opts, embeddings });
    const T = chunks[0]!.ids.length;
    const dim = this.model.arch.textEncoder.width;
    const data = new Float32Array(chunks.length * T * dim);
    for (const [i, c] of chunks.entries()) {
      const z = await this.model.encodeText(BigInt64Array.from(c.ids, BigInt), 1, T, clipSkip, chunkVectors(c, dim));
      data.set(applyEmphasis(z, [T, dim], c.multipliers, this.opts.emphasis), i * T * dim);
    }
    const out = { data, tokens: chunks.length * T, embeddings: chunkEmbeddings(chunks) };
    this.ti.record(out);
    // Prompts repeat across batches and n_iter; a small cache spares the text encoder.
    remember(this.cache, key, out);
    return out;
  }

  clear(): void {
    this.cache.clear();
  }
}

function remember(cache: Map<string, Conditioning>, key: string, value: Conditioning): void {
  if (cache.size > 64) cache.delete(cache.keys().next().value!);
  cache.set(key, value);
}

/** SDXL's CLIP ViT-L layer by default: sgm's `layer: hidden, layer_idx: -2`. */
const SDXL_CLIP_L_FROM_END = 2;

export class SdxlConditioner implements Conditioner {
  private readonly cache = new Map<string, Conditioning>();
  private readonly tokenizer2: ClipTokenizer;
  private readonly ti: EmbeddingUse;

  constructor(
    private readonly model: StableDiffusion,
    private readonly tokenizer: ClipTokenizer,
    private readonly opts: ChunkOptions = {},
  ) {
    this.tokenizer2 = tokenizer.pad !== SDXL_PAD_ID ? withPad(tokenizer, SDXL_PAD_ID) : tokenizer;
    this.ti = new EmbeddingUse(model, tokenizer);
  }

  setEmbeddings(library: EmbeddingLibrary | null): void {
    this.ti.set(library);
  }

  takeUsedEmbeddings(): TextualInversion[] {
    return this.ti.take();
  }

  async encode(prompt: string, clipSkip: number, o: EncodeOptions = {}): Promise<Conditioning> {
    const fromEnd = o.sdxlClipLSkip ? clipSkip : SDXL_CLIP_L_FROM_END;
    const zero = !!o.negative && prompt === '';
    const embeddings = this.ti.matcher();
    const key = `${fromEnd}\u0000${zero}\u0000${embeddings?.version ?? ''}\u0000${prompt}`;
    const hit = this.cache.get(key);
    if (hit) return this.ti.record(hit);
    const te1 = this.model.arch.textEncoder;
    const te2 = this.model.arch.textEncoder2!;
    const chunks1 = chunkPrompt(this.tokenizer, prompt, { ...this.opts, embeddings });
    const chunks2 = chunkPrompt(this.tokenizer2, prompt, { ...this.opts, embeddings });
    const T = chunks1[0]!.ids.length;
    const [w1, w2] = [te1.width, te2.width];
    const dim = w1 + w2;
    const data = new Float32Array(chunks1.length * T * dim);
    let pooled: Float32Array = new Float32Array(te2.projection!.dim);
    if (!zero) {
      for (const [i, c] of chunks1.entries()) {
        const c2 = chunks2[i]!;
        const v1 = chunkVectors(c, w1, 'clip_l');
        const v2 = chunkVectors(c2, w2, 'clip_g');
        const r = await this.model.encodeTextSdxl(BigInt64Array.from(c.ids, BigInt), BigInt64Array.from(c2.ids, BigInt), 1, T, fromEnd, v1 && v2 ? { te1: v1, te2: v2 } : undefined);
        const h1 = applyEmphasis(r.hidden1, [T, w1], c.multipliers, this.opts.emphasis);
        const h2 = applyEmphasis(r.hidden2, [T, w2], c2.multipliers, this.opts.emphasis);
        data.set(concatFeatures(h1, h2, T), i * T * dim);
        if (i === 0) pooled = r.pooled;
      }
    }
    const out = { data, tokens: chunks1.length * T, pooled, embeddings: zero ? [] : chunkEmbeddings(chunks1) };
    this.ti.record(out);
    remember(this.cache, key, out);
    return out;
  }

  clear(): void {
    this.cache.clear();
  }
}

/**
 * Prompt text → context and pooled embedding for SDXL's refiner, as A1111 conditions it (`sd_models_xl` with
 * the refiner's one embedder, `FrozenOpenCLIPEmbedder2`): the prompt's 75-token chunks through the OpenCLIP
 * bigG tower padded with 0, its penultimate hidden state (no final LayerNorm) as the context with emphasis
 * applied (mean restored), the pooled projection of the first chunk; an empty negative prompt is all zeros.
 * Textual-inversion embeddings are not looked up here.
 */
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
    remember(this.cache, key, out);
    return out;
  }

  clear(): void {
    this.cache.clear();
  }
}

/** Per row, `a`'s features then `b`'s: SDXL's context is the two encoders' hidden states side by side. */
export function concatFeatures(a: Float32Array, b: Float32Array, rows: number): Float32Array {
  const wa = a.length / rows;
  const wb = b.length / rows;
  const out = new Float32Array(rows * (wa + wb));
  for (let r = 0; r < rows; r++) {
    out.set(a.subarray(r * wa, (r + 1) * wa), r * (wa + wb));
    out.set(b.subarray(r * wb, (r + 1) * wb), r * (wa + wb) + wa);
  }
  return out;
}

/** The conditioner for this model's family. */
export function conditionerFor(model: StableDiffusion, tokenizer: ClipTokenizer, opts: ChunkOptions = {}): Conditioner {
  if (model.arch.family === 'sdxl-refiner') return new SdxlRefinerConditioner(model, tokenizer, opts);
  return model.arch.family === 'sdxl' ? new SdxlConditioner(model, tokenizer, opts) : new ClipConditioner(model, tokenizer, opts);
}
