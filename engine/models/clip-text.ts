/**
 * CLIP text transformer (Radford et al. 2021), the SD text encoder, in either checkpoint layout:
 * - 'hf': transformers' `CLIPTextModel` names (SD1's ViT-L/14; SD2 text encoders in diffusers folders);
 * - 'openclip': OpenCLIP's names as in SD2 single-file checkpoints (`resblocks.N` with a fused q/k/v
 *   `in_proj_weight`, `ln_final`).
 * Both are pre-LayerNorm blocks with causal self-attention and an MLP, then a final LayerNorm.
 *
 * Which block's output is used: SD2's LDM config builds the OpenCLIP tower with `layer: penultimate`, so
 * the last resblock never runs (diffusers' conversions drop it, leaving 23 of ViT-H's 24). `clipSkip` then
 * stops `clipSkip - 1` further blocks early, the final LayerNorm applied to whatever block ended the run,
 * as A1111's clip skip does for SD1 and kohya's `--clip_skip` does for both.
 *
 * SDXL (`clipTextHidden`) uses its towers differently: the context is a hidden state with NO final LayerNorm
 * (`hidden_states[-2]`, sgm's `layer: penultimate` / `layer_idx`), and the OpenCLIP tower also returns its
 * pooled output: the final-LayerNormed last block at the first end token, through `text_projection`.
 */
import { add, input, reshape, slice, where } from '../graph/ops-core.ts';
import { attention, embedding, gelu, linear, matmul, mergeHeads, quickGelu, splitHeads } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { ClipTextArch } from '../sd/arch.ts';
import { UserError } from '../util/errors.ts';
import { dense, layerNormLayer, type ModuleContext } from './layers.ts';

export interface ClipTextOptions {
  batch: number;
  /** Sequence length (77 for SD). */
  tokens: number;
  clipSkip?: number;
  /** Key prefix of the model; default: where an LDM checkpoint keeps this layout (`clipTextPrefix`). */
  prefix?: string;
  /** Take textual-inversion vectors as inputs (`embeds`, `embeds_mask`; see `embed`). */
  embedOverride?: boolean;
}

/** Where an LDM checkpoint (and the loader's diffusers mapping) keeps the text encoder of this layout. */
export function clipTextPrefix(layout: ClipTextArch['layout']): string {
  return layout === 'openclip' ? 'cond_stage_model.model.' : 'cond_stage_model.transformer.text_model.';
}

/** Blocks that run at clip skip 1: all of them, except OpenCLIP (SD2) towers, which stop at the penultimate one. */
export function clipUsedLayers(arch: ClipTextArch): number {
  return arch.skipLastLayer ? arch.layers - 1 : arch.layers;
}

interface LayoutNames {
  tokenEmbedding: string;
  positionEmbedding: string;
  finalNorm: string;
  block(i: number): { norm1: string; norm2: string; out: string; fc1: string; fc2: string; qkv: { fused: string } | { q: string; k: string; v: string } };
}

function layoutNames(layout: ClipTextArch['layout'], P: string): LayoutNames {
  if (layout === 'openclip') {
    return {
      tokenEmbedding: `${P}token_embedding.weight`,
      positionEmbedding: `${P}positional_embedding`,
      finalNorm: `${P}ln_final`,
      block: (i) => {
        const L = `${P}transformer.resblocks.${i}.`;
        return { norm1: `${L}ln_1`, norm2: `${L}ln_2`, out: `${L}attn.out_proj`, fc1: `${L}mlp.c_fc`, fc2: `${L}mlp.c_proj`, qkv: { fused: `${L}attn.in_proj` } };
      },
    };
  }
  return {
    tokenEmbedding: `${P}embeddings.token_embedding.weight`,
    positionEmbedding: `${P}embeddings.position_embedding.weight`,
    finalNorm: `${P}final_layer_norm`,
    block: (i) => {
      const L = `${P}encoder.layers.${i}.`;
      return {
        norm1: `${L}layer_norm1`,
        norm2: `${L}layer_norm2`,
        out: `${L}self_attn.out_proj`,
        fc1: `${L}mlp.fc1`,
        fc2: `${L}mlp.fc2`,
        qkv: { q: `${L}self_attn.q_proj`, k: `${L}self_attn.k_proj`, v: `${L}self_attn.v_proj` },
      };
    },
  };
}

/**
 * q, k, v from OpenCLIP's `nn.MultiheadAttention` weights: one GEMM over the fused [3W, W] matrix, rows q | k | v.
 * A trainer's adapter sees the three projections as modules `<key>.q`, `<key>.k`, `<key>.v` (`fusedQkvModule`).
 */
function fusedQkv(ctx: ModuleContext, key: string, h: Tensor, width: number): [Tensor, Tensor, Tensor] {
  const w = ctx.p(`${key}_weight`);
  if (w.shape[0] !== 3 * width || w.shape[1] !== width) {
    throw new UserError(`tensor '${key}_weight' has shape [${w.shape.join(', ')}], expected [${3 * width}, ${width}] (q, k, v stacked)`);
  }
  const qkv = linear(h, w, ctx.maybe(`${key}_bias`));
  const last = qkv.rank - 1;
  return (['q', 'k', 'v'] as const).map((part, i) => {
    const y = slice(qkv, last, i * width, (i + 1) * width);
    const extra = ctx.adapter?.(fusedQkvModule(key, part), h, 'linear');
    return extra ? add(y, extra) : y;
  }) as [Tensor, Tensor, Tensor];
}

/** The module key an adapter sees for one projection of a fused OpenCLIP in_proj (`…attn.in_proj` → `…attn.in_proj.q`). */
export function fusedQkvModule(inProjKey: string, part: 'q' | 'k' | 'v'): string {
  return `${inProjKey}.${part}`;
}

/** Blocks [from, to) of the text tower (causal attention). */
function runBlocks(ctx: ModuleContext, arch: ClipTextArch, names: LayoutNames, x: Tensor, from: number, to: number): Tensor {
  for (let i = from; i < to; i++) x = clipBlock(ctx, names.block(i), x, arch, true);
  return x;
}

export type ClipBlockNames = ReturnType<LayoutNames['block']>;

/** Names of block `i` of a CLIP tower of this layout under `prefix` (the vision tower: `vision_model.` / `visual.`). */
export function clipBlockNames(layout: ClipTextArch['layout'], prefix: string, i: number): ClipBlockNames {
  return layoutNames(layout, prefix).block(i);
}

/**
 * One CLIP transformer block, pre-LayerNorm: x + attention(ln_1(x)), then x + mlp(ln_2(x)). The text tower's
 * attention is causal, the vision tower's is not; everything else is the same in both towers.
 */
export function clipBlock(
  ctx: ModuleContext,
  n: ClipBlockNames,
  x: Tensor,
  shape: Pick<ClipTextArch, 'width' | 'heads' | 'activation' | 'layerNormEps'>,
  causal: boolean,
): Tensor {
  const act = shape.activation === 'gelu' ? (t: Tensor) => gelu(t) : quickGelu;
  const h = layerNormLayer(ctx, n.norm1, x, shape.layerNormEps);
  const [q, k, v] = 'fused' in n.qkv ? fusedQkv(ctx, n.qkv.fused, h, shape.width) : [dense(ctx, n.qkv.q, h), dense(ctx, n.qkv.k, h), dense(ctx, n.qkv.v, h)];
  const heads = [q, k, v].map((t) => splitHeads(t, shape.heads)) as [Tensor, Tensor, Tensor];
  x = add(x, dense(ctx, n.out, mergeHeads(attention(...heads, { causal }))));
  const m = layerNormLayer(ctx, n.norm2, x, shape.layerNormEps);
  return add(x, dense(ctx, n.fc2, act(dense(ctx, n.fc1, m))));
}

/**
 * Token plus position embeddings. With `override`, the graph also takes `embeds` [B, T, width] and
 * `embeds_mask` [B, T, 1]: where the mask is set, those vectors replace the token embedding (textual
 * inversion, A1111's `EmbeddingsWithFixes`); position embeddings are added to them all the same.
 */
function embed(ctx: ModuleContext, names: LayoutNames, ids: Tensor, T: number, override?: { width: number }): Tensor {
  const pos = slice(ctx.p(names.positionEmbedding), 0, 0, T);
  let tok = embedding(ctx.p(names.tokenEmbedding), ids);
  if (override) {
    const B = ids.shape[0]!;
    tok = where(input('embeds_mask', 'bool', [B, T, 1]), input('embeds', 'float32', [B, T, override.width]), tok);
  }
  return add(tok, pos);
}

export function clipTextEncoder(ctx: ModuleContext, arch: ClipTextArch, opts: ClipTextOptions): { ids: Tensor; hidden: Tensor } {
  const { batch: B, tokens: T } = opts;
  const N = clipUsedLayers(arch);
  const skip = opts.clipSkip ?? 1;
  if (!(Number.isInteger(skip) && skip >= 1 && skip <= N)) {
    throw new UserError(`clip skip must be an integer between 1 and ${N}, got ${skip}`);
  }
  const names = layoutNames(arch.layout, opts.prefix ?? arch.prefix ?? clipTextPrefix(arch.layout));
  const ids = input('input_ids', 'int64', [B, T]);
  const x = runBlocks(ctx, arch, names, embed(ctx, names, ids, T, opts.embedOverride ? arch : undefined), 0, N - (skip - 1));
  const hidden = layerNormLayer(ctx, names.finalNorm, x, arch.layerNormEps);
  return { ids, hidden };
}

export interface ClipHiddenOptions {
  batch: number;
  tokens: number;
  /** Which hidden state: `hidden_states[-fromEnd]` (1 = the last block's output, 2 = the penultimate). No final LayerNorm. */
  fromEnd: number;
  /** Also the pooled projection; the graph then takes `eos_onehot` [batch, 1, tokens] marking each row's first end token. */
  pooled?: boolean;
  /** Name of the token-id input (default `input_ids`): two towers in one graph need two. */
  idsName?: string;
  /** Take textual-inversion vectors as inputs (`embeds`, `embeds_mask`; see `embed`). */
  embedOverride?: boolean;
}

/** SDXL's use of a CLIP tower (see the file comment): a raw hidden state, and optionally the pooled projection. */
export function clipTextHidden(ctx: ModuleContext, arch: ClipTextArch, opts: ClipHiddenOptions): { ids: Tensor; hidden: Tensor; eos?: Tensor; pooled?: Tensor } {
  const { batch: B, tokens: T, fromEnd } = opts;
  const N = arch.layers;
  if (!(Number.isInteger(fromEnd) && fromEnd >= 1 && fromEnd <= N)) {
    throw new UserError(`clip skip must be an integer between 1 and ${N}, got ${fromEnd}`);
  }
  const names = layoutNames(arch.layout, arch.prefix ?? clipTextPrefix(arch.layout));
  const ids = input(opts.idsName ?? 'input_ids', 'int64', [B, T]);
  const hidden = runBlocks(ctx, arch, names, embed(ctx, names, ids, T, opts.embedOverride ? arch : undefined), 0, N - (fromEnd - 1));
  if (!opts.pooled) return { ids, hidden };
  if (!arch.projection) throw new UserError('this text encoder has no text_projection, so it has no pooled output');
  const last = layerNormLayer(ctx, names.finalNorm, fromEnd === 1 ? hidden : runBlocks(ctx, arch, names, hidden, N - (fromEnd - 1), N), arch.layerNormEps);
  // The end token's row, picked by a one-hot matmul (its position is found on the host: the first maximal id).
  const eos = input('eos_onehot', 'float32', [B, 1, T]);
  const atEos = reshape(matmul(eos, last), [B, arch.width]);
  const p = ctx.p(arch.projection.key);
  const pooled = arch.projection.transposed ? matmul(atEos, p) : linear(atEos, p);
  return { ids, hidden, eos, pooled };
}

/** One-hot rows [batch, 1, tokens] at each row's first end token: the position of the first maximal id, as CLIP's argmax pooling. */
export function eosOneHot(ids: ArrayLike<bigint | number>, batch: number, tokens: number): Float32Array {
  const out = new Float32Array(batch * tokens);
  for (let b = 0; b < batch; b++) {
    let best = 0;
    for (let t = 1; t < tokens; t++) if (Number(ids[b * tokens + t]!) > Number(ids[b * tokens + best]!)) best = t;
    out[b * tokens + best] = 1;
  }
  return out;
}
