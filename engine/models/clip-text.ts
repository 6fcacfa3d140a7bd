/**
 * CLIP text transformer (Radford et al. 2021), the SD1 text encoder, in the transformers `CLIPTextModel`
 * layout: pre-LayerNorm blocks with causal self-attention and a quick-GELU MLP, then a final LayerNorm.
 * `clipSkip` is A1111's "Clip skip": stop `clipSkip - 1` layers early, then apply the final LayerNorm.
 */
import { add, input, slice } from '../graph/ops-core.ts';
import { attention, embedding, gelu, mergeHeads, quickGelu, splitHeads } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { ClipTextArch } from '../sd/arch.ts';
import { UserError } from '../util/errors.ts';
import { dense, layerNormLayer, type ModuleContext } from './layers.ts';

export interface ClipTextOptions {
  batch: number;
  /** Sequence length (77 for SD). */
  tokens: number;
  clipSkip?: number;
  /** Key prefix of the model, e.g. `cond_stage_model.transformer.text_model.`. */
  prefix: string;
}

export function clipTextEncoder(ctx: ModuleContext, arch: ClipTextArch, opts: ClipTextOptions): { ids: Tensor; hidden: Tensor } {
  const { prefix: P, batch: B, tokens: T } = opts;
  const skip = opts.clipSkip ?? 1;
  if (!(Number.isInteger(skip) && skip >= 1 && skip <= arch.layers)) {
    throw new UserError(`clip skip must be an integer between 1 and ${arch.layers}, got ${skip}`);
  }
  const ids = input('input_ids', 'int64', [B, T]);
  const pos = slice(ctx.p(`${P}embeddings.position_embedding.weight`), 0, 0, T);
  let x = add(embedding(ctx.p(`${P}embeddings.token_embedding.weight`), ids), pos);
  const act = arch.activation === 'gelu' ? (t: Tensor) => gelu(t) : quickGelu;
  for (let i = 0; i < arch.layers - (skip - 1); i++) {
    const L = `${P}encoder.layers.${i}.`;
    const h = layerNormLayer(ctx, `${L}layer_norm1`, x, arch.layerNormEps);
    const q = splitHeads(dense(ctx, `${L}self_attn.q_proj`, h), arch.heads);
    const k = splitHeads(dense(ctx, `${L}self_attn.k_proj`, h), arch.heads);
    const v = splitHeads(dense(ctx, `${L}self_attn.v_proj`, h), arch.heads);
    x = add(x, dense(ctx, `${L}self_attn.out_proj`, mergeHeads(attention(q, k, v, { causal: true }))));
    const m = layerNormLayer(ctx, `${L}layer_norm2`, x, arch.layerNormEps);
    x = add(x, dense(ctx, `${L}mlp.fc2`, act(dense(ctx, `${L}mlp.fc1`, m))));
  }
  const hidden = layerNormLayer(ctx, `${P}final_layer_norm`, x, arch.layerNormEps);
  return { ids, hidden };
}
