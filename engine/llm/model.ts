/**
 * The Llama decoder (Touvron et al. 2023) as transformers' `LlamaForCausalLM` computes it, and its
 * relatives by flag (config.ts): token embedding, then per layer
 *   h = x + o_proj(attention(rotary(q_proj(rms(x))), rotary(k_proj(rms(x))), v_proj(rms(x))))
 *   x = h + down_proj(silu(gate_proj(rms(h))) · up_proj(rms(h)))
 * then a final RMSNorm and the LM head (the embedding matrix itself when tied).
 *
 * Grouped-query attention (Ainslie et al. 2023): query head h reads key/value head ⌊h / (H/KV)⌋; the
 * queries are viewed as [B, KV, H/KV, T, D] against keys [B, KV, 1, S, D], so no key is copied.
 *
 * Positions and visibility come in as data: rotary tables per token (rope.ts) and an additive mask
 * [B, 1, T, S] (0 visible, −inf hidden), so one graph serves plain causal batches, packed sequences with
 * block-diagonal masks and cached generation, where S = past + T.
 */
import { checkpoint } from '../autodiff/checkpoint.ts';
import { add, concat, input, mul, reshape, slice, unsqueeze } from '../graph/ops-core.ts';
import { attention, embedding, linear, mergeHeads, rmsNorm, rotary, silu, splitHeads } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import { dense, type ModuleContext } from '../models/layers.ts';
import type { LlmArch } from './config.ts';

export interface LlmGraphOptions {
  /** Take past keys/values per layer and return the present ones (generation with a KV cache). */
  cache?: boolean;
  /** Logits of the last position only (generation): [B, 1, V]. */
  lastOnly?: boolean;
  /** Recompute each decoder layer in the backward pass instead of keeping its activations. */
  checkpointLayers?: boolean;
}

export interface LlmGraph {
  ids: Tensor;
  cos: Tensor;
  sin: Tensor;
  mask: Tensor;
  past: { key: Tensor; value: Tensor }[];
  logits: Tensor;
  present: { key: Tensor; value: Tensor }[];
}

/** Graph input names, for feeding. */
export const LLM_INPUTS = { ids: 'input_ids', cos: 'rope_cos', sin: 'rope_sin', mask: 'attention_mask' } as const;
export const pastName = (layer: number, kind: 'key' | 'value') => `past_${kind}_${layer}`;

/** Module key (weight key without `.weight`) of a decoder layer's linear; what LoRA hooks see. */
export const layerPrefix = (i: number) => `model.layers.${i}.`;

function norm(ctx: ModuleContext, key: string, x: Tensor, eps: number): Tensor {
  return rmsNorm(x, ctx.p(`${key}.weight`), eps);
}

function selfAttention(
  ctx: ModuleContext,
  arch: LlmArch,
  P: string,
  x: Tensor,
  rope: { cos: Tensor; sin: Tensor },
  mask5: Tensor,
  past?: { key: Tensor; value: Tensor },
): { out: Tensor; key: Tensor; value: Tensor } {
  const { heads: H, kvHeads: KV, headDim: D } = arch;
  const [B, T] = x.shape as [string | number, string | number];
  let q = splitHeads(dense(ctx, `${P}q_proj`, x), H);
  let k = splitHeads(dense(ctx, `${P}k_proj`, x), KV);
  let v = splitHeads(dense(ctx, `${P}v_proj`, x), KV);
  if (arch.qkNorm) {
    q = norm(ctx, `${P}q_norm`, q, arch.rmsEps);
    k = norm(ctx, `${P}k_norm`, k, arch.rmsEps);
  }
  q = rotary(q, rope.cos, rope.sin);
  k = rotary(k, rope.cos, rope.sin);
  if (past) {
    k = concat([past.key, k], 2);
    v = concat([past.value, v], 2);
  }
  const q5 = reshape(q, [B, KV, H / KV, T, D]);
  const o = attention(q5, unsqueeze(k, 2), unsqueeze(v, 2), { mask: mask5 });
  const out = dense(ctx, `${P}o_proj`, mergeHeads(reshape(o, [B, H, T, D])));
  return { out, key: k, value: v };
}

function mlp(ctx: ModuleContext, P: string, x: Tensor): Tensor {
  return dense(ctx, `${P}down_proj`, mul(silu(dense(ctx, `${P}gate_proj`, x)), dense(ctx, `${P}up_proj`, x)));
}

/** Builds the causal LM graph over the context's weights (transformers key names). */
export function llamaForCausalLM(ctx: ModuleContext, arch: LlmArch, opts: LlmGraphOptions = {}): LlmGraph {
  const S = opts.cache ? 'P+T' : 'T';
  const ids = input(LLM_INPUTS.ids, 'int64', ['B', 'T']);
  const cos = input(LLM_INPUTS.cos, 'float32', ['B', 'T', arch.headDim]);
  const sin = input(LLM_INPUTS.sin, 'float32', ['B', 'T', arch.headDim]);
  const mask = input(LLM_INPUTS.mask, 'float32', ['B', 1, 'T', S]);
  const rope = { cos: unsqueeze(cos, 1), sin: unsqueeze(sin, 1) };
  const mask5 = unsqueeze(mask, 1);
  const past = opts.cache
    ? Array.from({ length: arch.layers }, (_, i) => ({
        key: input(pastName(i, 'key'), 'float32', ['B', arch.kvHeads, 'P', arch.headDim]),
        value: input(pastName(i, 'value'), 'float32', ['B', arch.kvHeads, 'P', arch.headDim]),
      }))
    : [];
  const present: { key: Tensor; value: Tensor }[] = [];
  let x = embedding(ctx.p('model.embed_tokens.weight'), ids);
  for (let i = 0; i < arch.layers; i++) {
    const P = layerPrefix(i);
    const layer = (h: Tensor) => {
      const a = selfAttention(ctx, arch, `${P}self_attn.`, norm(ctx, `${P}input_layernorm`, h, arch.rmsEps), rope, mask5, past[i]);
      const r = add(h, a.out);
      return { x: add(r, mlp(ctx, `${P}mlp.`, norm(ctx, `${P}post_attention_layernorm`, r, arch.rmsEps))), key: a.key, value: a.value };
    };
    const out = opts.checkpointLayers ? checkpoint(() => layer(x)) : layer(x);
    x = out.x;
    present.push({ key: out.key, value: out.value });
  }
  let h = norm(ctx, 'model.norm', x, arch.rmsEps);
  if (opts.lastOnly) h = slice(h, 1, -1);
  const head = arch.tieEmbeddings ? ctx.p('model.embed_tokens.weight') : ctx.p('lm_head.weight');
  const logits = linear(h, head);
  return { ids, cos, sin, mask, past, logits, present: opts.cache ? present : [] };
}
