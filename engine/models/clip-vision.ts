/**
 * CLIP vision transformer (Radford et al. 2021, §2.4; Dosovitskiy et al. 2020), in either checkpoint layout:
 * - 'hf': transformers' `CLIPVisionModel` names under `vision_model.` plus `visual_projection.weight` (a Linear);
 * - 'openclip': OpenCLIP's names under `visual.` (`conv1`, `ln_pre`, `transformer.resblocks.N` with a fused
 *   `in_proj_weight`, `ln_post`, and `proj`, a matrix applied as x @ proj).
 *
 * The image is cut into P×P patches by a stride-P convolution without bias, a learned class token is put in
 * front, learned position embeddings are added, and a LayerNorm (`pre_layrnorm`, HF's spelling) precedes the
 * pre-LayerNorm blocks. The class token's output, LayerNormed (`post_layernorm`) and projected, is the image
 * embedding that CLIP compares with text embeddings by cosine similarity.
 */
import { add, concat, expand, input, reshape, slice, transpose, unsqueeze } from '../graph/ops-core.ts';
import { conv2d, linear, matmul } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import { clipBlock, clipBlockNames } from './clip-text.ts';
import { layerNormLayer, type ModuleContext } from './layers.ts';

export interface ClipVisionArch {
  layout: 'hf' | 'openclip';
  /** Key prefix: `vision_model.` (hf) or `visual.` (openclip), after any file-level prefix. */
  prefix: string;
  /** Key of the projection: `visual_projection.weight` [D, W] (hf) or `visual.proj` [W, D] (openclip). */
  projectionKey: string;
  imageSize: number;
  patchSize: number;
  width: number;
  layers: number;
  heads: number;
  activation: 'quick_gelu' | 'gelu';
  layerNormEps: number;
  projectionDim: number;
}

export interface ClipVisionOutputs {
  pixels: Tensor;
  /** Output of the last block [B, 1 + patches, W] (not LayerNormed). */
  lastHidden: Tensor;
  /** Output of the second-to-last block (`hidden_states[-2]`). */
  penultimate: Tensor;
  /** `post_layernorm` of the class token [B, W]. */
  pooled: Tensor;
  /** Projected, not normalised [B, D] (= `get_image_features`). */
  embeds: Tensor;
}

interface Names {
  patch: string;
  classEmbedding: string;
  positionEmbedding: string;
  preNorm: string;
  postNorm: string;
}

function names(arch: ClipVisionArch): Names {
  const P = arch.prefix;
  if (arch.layout === 'openclip') {
    return {
      patch: `${P}conv1`,
      classEmbedding: `${P}class_embedding`,
      positionEmbedding: `${P}positional_embedding`,
      preNorm: `${P}ln_pre`,
      postNorm: `${P}ln_post`,
    };
  }
  return {
    patch: `${P}embeddings.patch_embedding`,
    classEmbedding: `${P}embeddings.class_embedding`,
    positionEmbedding: `${P}embeddings.position_embedding.weight`,
    preNorm: `${P}pre_layrnorm`,
    postNorm: `${P}post_layernorm`,
  };
}

/** `pixel_values` [B, 3, S, S] → the tower's hidden states, pooled output and image embedding. */
export function clipVisionEncoder(ctx: ModuleContext, arch: ClipVisionArch, opts: { batch: number | string }): ClipVisionOutputs {
  const { imageSize: S, patchSize: P, width: W } = arch;
  const B = opts.batch;
  const n = names(arch);
  const grid = Math.floor(S / P);
  const pixels = input('pixel_values', 'float32', [B, 3, S, S]);
  // [B, W, g, g] → [B, g², W]: patches in row-major order, as the position embeddings expect.
  const patches = transpose(reshape(conv2d(pixels, ctx.p(`${n.patch}.weight`), ctx.maybe(`${n.patch}.bias`), { stride: P }), [B, W, grid * grid]), [0, 2, 1]);
  const cls = expand(reshape(ctx.p(n.classEmbedding), [1, 1, W]), [B, 1, W]);
  let x = add(concat([cls, patches], 1), unsqueeze(ctx.p(n.positionEmbedding), 0));
  x = layerNormLayer(ctx, n.preNorm, x, arch.layerNormEps);
  let penultimate = x;
  for (let i = 0; i < arch.layers; i++) {
    penultimate = x;
    x = clipBlock(ctx, clipBlockNames(arch.layout, arch.prefix, i), x, arch, false);
  }
  const pooled = layerNormLayer(ctx, n.postNorm, reshape(slice(x, 1, 0, 1), [B, W]), arch.layerNormEps);
  const proj = ctx.p(arch.projectionKey);
  const embeds = arch.layout === 'openclip' ? matmul(pooled, proj) : linear(pooled, proj);
  return { pixels, lastHidden: x, penultimate, pooled, embeds };
}
