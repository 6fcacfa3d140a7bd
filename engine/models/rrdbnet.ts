/**
 * RRDBNet, the generator of ESRGAN (Wang et al. 2018, "ESRGAN: Enhanced Super-Resolution Generative
 * Adversarial Networks", §3.1) and Real-ESRGAN. A first conv lifts the image to `nf` features; a trunk of
 * Residual-in-Residual Dense Blocks (each three dense blocks of five convs, every conv seeing the block input
 * and all earlier outputs, residuals scaled by β = 0.2) plus a trunk conv is added back to those features;
 * nearest-neighbour ×2 upsampling stages (each followed by a conv and LeakyReLU 0.2), an HR conv and a last
 * conv give the image. Real-ESRGAN's ×2/×1 variants pixel-unshuffle the input first. Names are BasicSR's
 * (see engine/upscale/esrgan-weights.ts for the other layouts).
 */
import { add, concat, input, maximum, mul, reshape, transpose } from '../graph/ops-core.ts';
import { upsampleNearest } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import type { RrdbArch } from '../upscale/esrgan-weights.ts';
import { conv, type ModuleContext } from './layers.ts';

/** The residual scaling β of the paper. */
const BETA = 0.2;
const lrelu = (x: Tensor): Tensor => maximum(x, mul(x, 0.2));
const conv3 = (ctx: ModuleContext, key: string, x: Tensor): Tensor => conv(ctx, key, x, { padding: 1 });

function denseBlock(ctx: ModuleContext, key: string, x: Tensor): Tensor {
  const seen = [x];
  for (let j = 1; j <= 4; j++) seen.push(lrelu(conv3(ctx, `${key}.conv${j}`, concat([...seen], 1))));
  return add(mul(conv3(ctx, `${key}.conv5`, concat([...seen], 1)), BETA), x);
}

function rrdb(ctx: ModuleContext, key: string, x: Tensor): Tensor {
  let h = x;
  for (let k = 1; k <= 3; k++) h = denseBlock(ctx, `${key}.rdb${k}`, h);
  return add(mul(h, BETA), x);
}

/** PyTorch's `pixel_unshuffle`: [B, C, H, W] → [B, C·r², H/r, W/r], channel c·r² + i·r + j from pixel (h·r + i, w·r + j). */
export function pixelUnshuffle(x: Tensor, r: number): Tensor {
  const [B, C, H, W] = x.shape as number[];
  const split = reshape(x, [B!, C!, H! / r, r, W! / r, r]);
  return reshape(transpose(split, [0, 1, 3, 5, 2, 4]), [B!, C! * r * r, H! / r, W! / r]);
}

/** Image [1, channels, height, width] in [0, 1] (height and width multiples of `unshuffle`) → [1, channels, scale·height, scale·width]. */
export function rrdbNet(ctx: ModuleContext, arch: RrdbArch, opts: { height: number; width: number }): { image: Tensor; output: Tensor } {
  const image = input('image', 'float32', [1, arch.channels, opts.height, opts.width]);
  const x = arch.unshuffle > 1 ? pixelUnshuffle(image, arch.unshuffle) : image;
  const feat = conv3(ctx, 'conv_first', x);
  let trunk = feat;
  for (let i = 0; i < arch.blocks; i++) trunk = rrdb(ctx, `body.${i}`, trunk);
  let h = add(feat, conv3(ctx, 'conv_body', trunk));
  for (let u = 1; u <= arch.upsamples; u++) h = lrelu(conv3(ctx, `conv_up${u}`, upsampleNearest(h, 2)));
  return { image, output: conv3(ctx, 'conv_last', lrelu(conv3(ctx, 'conv_hr', h))) };
}
