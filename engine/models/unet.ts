/**
 * The latent-diffusion UNet (Rombach et al. 2022, `openaimodel.py`), in its checkpoint's own block numbering:
 *
 *   input_blocks  0: conv_in; then per level `numResBlocks` × (ResBlock [+ SpatialTransformer]), and a
 *                 Downsample between levels
 *   middle_block  ResBlock, SpatialTransformer, ResBlock
 *   output_blocks per level, lowest first, `numResBlocks + 1` × (concat skip, ResBlock [+ SpatialTransformer]),
 *                 and an Upsample closing every level but the top one
 *   out           GroupNorm, SiLU, conv
 *
 * ResBlocks take the timestep embedding; SpatialTransformers take the text context (cross-attention).
 *
 * SDXL (Podell et al. 2023) adds `label_emb`: an MLP over the pooled text embedding and Fourier features of
 * the image's original size, crop and target size (`sizeConditionVector`), summed into the timestep embedding.
 * Its other differences are sizes the checkpoint shows: no attention at the first level, deeper transformers.
 */
import { add, concat, input, mul, reshape, split, transpose } from '../graph/ops-core.ts';
import { attention, gelu, mergeHeads, silu, splitHeads, upsampleNearest, dropout } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import { unetHeadsAt, type UnetArch } from '../sd/arch.ts';
import { conv, dense, groupNormLayer, layerNormLayer, type ModuleContext } from './layers.ts';

const P = 'model.diffusion_model.';

export interface UnetOptions {
  batch: number;
  /** Latent height and width (image size / 8). */
  height: number;
  width: number;
  /** Context tokens (77 per prompt chunk; a multiple of 77 for long prompts). */
  contextTokens: number;
}

/** Sinusoidal timestep features [cos | sin], computed on the host: the graph takes them as an input. */
export function timestepFeatures(timesteps: ArrayLike<number>, dim: number): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(timesteps.length * dim);
  for (let b = 0; b < timesteps.length; b++) {
    for (let i = 0; i < half; i++) {
      // float32 like torch: freqs = exp(-ln(10000) * i / half); angle = t * freq
      const freq = Math.fround(Math.exp(Math.fround((-Math.log(10000) * i) / half)));
      const ang = Math.fround(Math.fround(timesteps[b]!) * freq);
      out[b * dim + i] = Math.cos(ang);
      out[b * dim + half + i] = Math.sin(ang);
    }
  }
  return out;
}

/**
 * SDXL's `label_emb` input [B, pooledDim + 6·sizeEmbedDim]: each row's pooled text embedding, then the
 * sinusoids of its six size numbers [original h, w, crop top, left, target h, w] (sgm's
 * `ConcatTimestepEmbedderND`, the same [cos | sin] features as timesteps), in that order.
 */
export function sizeConditionVector(pooled: Float32Array, sizes: ArrayLike<number>, adm: NonNullable<UnetArch['adm']>): Float32Array {
  const B = sizes.length / adm.sizeConditions;
  if (!Number.isInteger(B) || pooled.length !== B * adm.pooledDim) {
    throw new Error(`size conditioning: ${pooled.length} pooled values and ${sizes.length} sizes do not make whole rows of ${adm.pooledDim} and ${adm.sizeConditions}`);
  }
  const out = new Float32Array(B * adm.inChannels);
  const fourier = sizeFeatures(sizes, adm);
  const perRow = adm.sizeConditions * adm.sizeEmbedDim;
  for (let b = 0; b < B; b++) {
    out.set(pooled.subarray(b * adm.pooledDim, (b + 1) * adm.pooledDim), b * adm.inChannels);
    out.set(fourier.subarray(b * perRow, (b + 1) * perRow), b * adm.inChannels + adm.pooledDim);
  }
  return out;
}

/** The Fourier features of rows of six size numbers [B, 6·sizeEmbedDim]: `sizeConditionVector` without the pooled part. */
export function sizeFeatures(sizes: ArrayLike<number>, adm: NonNullable<UnetArch['adm']>): Float32Array {
  return timestepFeatures(sizes, adm.sizeEmbedDim);
}

function resBlock(ctx: ModuleContext, key: string, x: Tensor, emb: Tensor, arch: UnetArch): Tensor {
  const g = arch.normGroups;
  let h = conv(ctx, `${key}.in_layers.2`, silu(groupNormLayer(ctx, `${key}.in_layers.0`, x, g, arch.normEps)), { padding: 1 });
  const e = dense(ctx, `${key}.emb_layers.1`, silu(emb));
  h = add(h, reshape(e, [e.shape[0]!, e.shape[1]!, 1, 1]));
  h = silu(groupNormLayer(ctx, `${key}.out_layers.0`, h, g, arch.normEps));
  h = conv(ctx, `${key}.out_layers.3`, dropout(h, 0, !!ctx.training), { padding: 1 });
  const skip = ctx.maybe(`${key}.skip_connection.weight`) ? conv(ctx, `${key}.skip_connection`, x) : x;
  return add(skip, h);
}

function crossAttention(ctx: ModuleContext, key: string, x: Tensor, context: Tensor, heads: number): Tensor {
  const q = splitHeads(dense(ctx, `${key}.to_q`, x), heads);
  const k = splitHeads(dense(ctx, `${key}.to_k`, context), heads);
  const v = splitHeads(dense(ctx, `${key}.to_v`, context), heads);
  return dense(ctx, `${key}.to_out.0`, mergeHeads(attention(q, k, v)));
}

/** GEGLU feed-forward (Shazeer 2020): a GELU-gated linear unit, then a projection back. */
function feedForward(ctx: ModuleContext, key: string, x: Tensor): Tensor {
  const [a, gate] = split(dense(ctx, `${key}.net.0.proj`, x), 2, -1);
  return dense(ctx, `${key}.net.2`, mul(a!, gelu(gate!)));
}

function spatialTransformer(ctx: ModuleContext, key: string, x: Tensor, context: Tensor, arch: UnetArch, level: number): Tensor {
  const [B, C, H, W] = x.shape as number[];
  const heads = unetHeadsAt(arch, level);
  // The transformer's GroupNorm uses eps 1e-6, unlike the ResBlocks' 1e-5.
  const n = groupNormLayer(ctx, `${key}.norm`, x, arch.normGroups, 1e-6);
  const toTokens = (t: Tensor) => reshape(transpose(reshape(t, [B!, t.shape[1]!, H! * W!]), [0, 2, 1]), [B!, H! * W!, t.shape[1]!]);
  let h = arch.useLinearProjection ? dense(ctx, `${key}.proj_in`, toTokens(n)) : toTokens(conv(ctx, `${key}.proj_in`, n));
  for (let d = 0; ; d++) {
    const T = `${key}.transformer_blocks.${d}`;
    if (!ctx.maybe(`${T}.norm1.weight`)) break;
    const n1 = layerNormLayer(ctx, `${T}.norm1`, h, 1e-5);
    h = add(h, crossAttention(ctx, `${T}.attn1`, n1, n1, heads));
    h = add(h, crossAttention(ctx, `${T}.attn2`, layerNormLayer(ctx, `${T}.norm2`, h, 1e-5), context, heads));
    h = add(h, feedForward(ctx, `${T}.ff`, layerNormLayer(ctx, `${T}.norm3`, h, 1e-5)));
  }
  const toImage = (t: Tensor) => reshape(transpose(t, [0, 2, 1]), [B!, t.shape[2]!, H!, W!]);
  const out = arch.useLinearProjection ? toImage(dense(ctx, `${key}.proj_out`, h)) : conv(ctx, `${key}.proj_out`, toImage(h));
  return add(x, out);
}

export interface UnetGraph {
  /** Latents [B, C, H, W]. */
  x: Tensor;
  /** Sinusoidal timestep features [B, modelChannels], from `timestepFeatures`. */
  tEmb: Tensor;
  /** Text context [B, tokens, contextDim]. */
  context: Tensor;
  /** SDXL: `label_emb`'s input [B, adm.inChannels], from `sizeConditionVector`. */
  y?: Tensor;
  /** Predicted noise (or v) [B, outChannels, H, W]. */
  out: Tensor;
}

/** SDXL's `label_emb` (diffusers' `add_embedding`): Linear, SiLU, Linear over `sizeConditionVector`'s rows. */
export function labelEmbedding(ctx: ModuleContext, y: Tensor): Tensor {
  return dense(ctx, `${P}label_emb.0.2`, silu(dense(ctx, `${P}label_emb.0.0`, y)));
}

export function unet(ctx: ModuleContext, arch: UnetArch, opts: UnetOptions): UnetGraph {
  const B = opts.batch;
  const x = input('x', 'float32', [B, arch.inChannels, opts.height, opts.width]);
  const tEmb = input('t_emb', 'float32', [B, arch.modelChannels]);
  const context = input('context', 'float32', [B, opts.contextTokens, arch.contextDim]);
  let emb = dense(ctx, `${P}time_embed.2`, silu(dense(ctx, `${P}time_embed.0`, tEmb)));
  const y = arch.adm ? input('y', 'float32', [B, arch.adm.inChannels]) : undefined;
  if (y) emb = add(emb, labelEmbedding(ctx, y));

  const levels = arch.channelMult.length;
  let h = conv(ctx, `${P}input_blocks.0.0`, x, { padding: 1 });
  const skips: Tensor[] = [h];
  let n = 1;
  for (let level = 0; level < levels; level++) {
    for (let r = 0; r < arch.numResBlocks; r++, n++) {
      h = resBlock(ctx, `${P}input_blocks.${n}.0`, h, emb, arch);
      if (arch.attentionLevels[level]) h = spatialTransformer(ctx, `${P}input_blocks.${n}.1`, h, context, arch, level);
      skips.push(h);
    }
    if (level < levels - 1) {
      h = conv(ctx, `${P}input_blocks.${n}.0.op`, h, { stride: 2, padding: 1 });
      skips.push(h);
      n++;
    }
  }

  h = resBlock(ctx, `${P}middle_block.0`, h, emb, arch);
  h = spatialTransformer(ctx, `${P}middle_block.1`, h, context, arch, levels - 1);
  h = resBlock(ctx, `${P}middle_block.2`, h, emb, arch);

  n = 0;
  for (let level = levels - 1; level >= 0; level--) {
    for (let r = 0; r <= arch.numResBlocks; r++, n++) {
      h = resBlock(ctx, `${P}output_blocks.${n}.0`, concat([h, skips.pop()!], 1), emb, arch);
      let sub = 1;
      if (arch.attentionLevels[level]) h = spatialTransformer(ctx, `${P}output_blocks.${n}.${sub++}`, h, context, arch, level);
      if (level > 0 && r === arch.numResBlocks) {
        h = conv(ctx, `${P}output_blocks.${n}.${sub}.conv`, upsampleNearest(h, 2), { padding: 1 });
      }
    }
  }
  const out = conv(ctx, `${P}out.2`, silu(groupNormLayer(ctx, `${P}out.0`, h, arch.normGroups, arch.normEps)), { padding: 1 });
  return { x, tEmb, context, out, ...(y ? { y } : {}) };
}
