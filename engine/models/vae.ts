/**
 * The KL autoencoder of latent diffusion (`ldm/modules/diffusionmodules/model.py`), in the checkpoint's
 * `first_stage_model.*` layout. Encoder: conv_in, per level `numResBlocks` ResnetBlocks then a stride-2
 * Downsample (not after the last level), a middle ResnetBlock–Attention–ResnetBlock, norm, conv_out to the
 * Gaussian's mean and log-variance, then quant_conv. Decoder: post_quant_conv, conv_in, the same middle,
 * per level (deepest first, `decoder.up.{L-1..0}`) `numResBlocks + 1` ResnetBlocks then an Upsample, norm, conv_out.
 */
import { add, input, reshape, slice, transpose } from '../graph/ops-core.ts';
import { attention, silu, upsampleNearest } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { VaeArch } from '../sd/arch.ts';
import { conv, groupNormLayer, type ModuleContext } from './layers.ts';

const P = 'first_stage_model.';

function resnet(ctx: ModuleContext, key: string, x: Tensor, arch: VaeArch): Tensor {
  let h = conv(ctx, `${key}.conv1`, silu(groupNormLayer(ctx, `${key}.norm1`, x, arch.normGroups, arch.normEps)), { padding: 1 });
  h = conv(ctx, `${key}.conv2`, silu(groupNormLayer(ctx, `${key}.norm2`, h, arch.normGroups, arch.normEps)), { padding: 1 });
  const skip = ctx.maybe(`${key}.nin_shortcut.weight`) ? conv(ctx, `${key}.nin_shortcut`, x) : x;
  return add(skip, h);
}

/** Single-head self-attention over all pixels; q, k, v and the output projection are 1×1 convs. */
function attnBlock(ctx: ModuleContext, key: string, x: Tensor, arch: VaeArch): Tensor {
  const [B, C, H, W] = x.shape as number[];
  const n = groupNormLayer(ctx, `${key}.norm`, x, arch.normGroups, arch.normEps);
  const tokens = (t: Tensor) => reshape(transpose(reshape(t, [B!, C!, H! * W!]), [0, 2, 1]), [B!, 1, H! * W!, C!]);
  const q = tokens(conv(ctx, `${key}.q`, n));
  const k = tokens(conv(ctx, `${key}.k`, n));
  const v = tokens(conv(ctx, `${key}.v`, n));
  const a = reshape(transpose(reshape(attention(q, k, v), [B!, H! * W!, C!]), [0, 2, 1]), [B!, C!, H!, W!]);
  return add(x, conv(ctx, `${key}.proj_out`, a));
}

function middle(ctx: ModuleContext, key: string, x: Tensor, arch: VaeArch): Tensor {
  let h = resnet(ctx, `${key}.block_1`, x, arch);
  h = attnBlock(ctx, `${key}.attn_1`, h, arch);
  return resnet(ctx, `${key}.block_2`, h, arch);
}

/** Image [B, 3, H, W] in [-1, 1] → the latent distribution's mean [B, embedDim, H/8, W/8] (unscaled). */
export function vaeEncoder(ctx: ModuleContext, arch: VaeArch, opts: { batch: number; height: number; width: number }): { image: Tensor; mean: Tensor } {
  const image = input('image', 'float32', [opts.batch, 3, opts.height, opts.width]);
  return { image, mean: encoderMid(ctx, arch, encoderDown(ctx, arch, image)) };
}

/** The encoder up to its middle: conv_in and the down levels, purely local (convolutions and GroupNorms). */
export function encoderDown(ctx: ModuleContext, arch: VaeArch, image: Tensor): Tensor {
  const E = `${P}encoder`;
  const levels = arch.channelMult.length;
  let h = conv(ctx, `${E}.conv_in`, image, { padding: 1 });
  for (let level = 0; level < levels; level++) {
    for (let r = 0; r < arch.numResBlocks; r++) h = resnet(ctx, `${E}.down.${level}.block.${r}`, h, arch);
    // LDM pads only right and bottom before its stride-2 conv, so odd phases line up with the decoder.
    if (level < levels - 1) h = conv(ctx, `${E}.down.${level}.downsample.conv`, h, { stride: 2, padding: [0, 0, 1, 1] });
  }
  return h;
}

/** The rest of the encoder at latent resolution: the middle (its attention sees every pixel), norm, conv_out, quant_conv. */
export function encoderMid(ctx: ModuleContext, arch: VaeArch, h: Tensor): Tensor {
  const E = `${P}encoder`;
  h = middle(ctx, `${E}.mid`, h, arch);
  h = conv(ctx, `${E}.conv_out`, silu(groupNormLayer(ctx, `${E}.norm_out`, h, arch.normGroups, arch.normEps)), { padding: 1 });
  const moments = conv(ctx, `${P}quant_conv`, h);
  return slice(moments, 1, 0, arch.embedDim);
}

/** Latent [B, embedDim, h, w] (already divided by the scaling factor) → image [B, 3, 8h, 8w], raw (about [-1, 1]). */
export function vaeDecoder(ctx: ModuleContext, arch: VaeArch, opts: { batch: number; height: number; width: number }): { latent: Tensor; image: Tensor } {
  const latent = input('latent', 'float32', [opts.batch, arch.embedDim, opts.height, opts.width]);
  return { latent, image: decoderUp(ctx, arch, decoderMid(ctx, arch, latent)) };
}

/** The decoder at latent resolution: post_quant_conv, conv_in and the middle (its attention sees every pixel). */
export function decoderMid(ctx: ModuleContext, arch: VaeArch, latent: Tensor): Tensor {
  const D = `${P}decoder`;
  let h = conv(ctx, `${P}post_quant_conv`, latent);
  h = conv(ctx, `${D}.conv_in`, h, { padding: 1 });
  return middle(ctx, `${D}.mid`, h, arch);
}

/** The rest of the decoder, purely local: the up levels, norm and conv_out. */
export function decoderUp(ctx: ModuleContext, arch: VaeArch, h: Tensor): Tensor {
  const D = `${P}decoder`;
  const levels = arch.channelMult.length;
  for (let level = levels - 1; level >= 0; level--) {
    for (let r = 0; r <= arch.numResBlocks; r++) h = resnet(ctx, `${D}.up.${level}.block.${r}`, h, arch);
    if (level > 0) h = conv(ctx, `${D}.up.${level}.upsample.conv`, upsampleNearest(h, 2), { padding: 1 });
  }
  return conv(ctx, `${D}.conv_out`, silu(groupNormLayer(ctx, `${D}.norm_out`, h, arch.normGroups, arch.normEps)), { padding: 1 });
}
