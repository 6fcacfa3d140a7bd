/**
 * Which of a checkpoint's tensors the networks actually read. A checkpoint whose weights the inferred
 * architecture leaves unread is a model this loader does not understand (a new family, a refiner, an
 * unsupported block); running it half-loaded would return images from the wrong network, so it is refused.
 *
 * The answer comes from the model code itself: every network is built once as a symbolic graph over a
 * recording context (no data, no ONNX), and the weight names it asks for are the used set.
 */
import { input } from '../graph/ops-core.ts';
import type { Tensor } from '../graph/tensor.ts';
import { clipTextEncoder, clipTextHidden } from '../models/clip-text.ts';
import type { ModuleContext } from '../models/layers.ts';
import { unet } from '../models/unet.ts';
import { vaeDecoder, vaeEncoder } from '../models/vae.ts';
import { UserError } from '../util/errors.ts';
import type { SdArch, ShapeOf } from './arch.ts';

/**
 * Tensors real checkpoints carry that no network reads, by rule: EMA copies, LDM/SGM schedule buffers,
 * CLIP's `position_ids` and `logit_scale`, SD 2.x's unused last OpenCLIP block and projection, and SDXL's
 * CLIP ViT-L final LayerNorm (SDXL reads a hidden state of that tower, never its normed output).
 */
function ignorable(key: string, arch: SdArch): boolean {
  if (/^model_ema\./.test(key) || /^denoiser\./.test(key)) return true;
  if (/^(betas|alphas_cumprod(_prev)?|sqrt_(recip(m1)?_)?alphas_cumprod|sqrt_one_minus_alphas_cumprod|log_one_minus_alphas_cumprod|posterior_(variance|log_variance_clipped|mean_coef[12])|logvar)$/.test(key)) return true;
  if (/(^|\.)position_ids$/.test(key) || /(^|\.)logit_scale$/.test(key)) return true;
  const te = arch.textEncoder;
  if (arch.family === 'sdxl' && te.prefix && key.startsWith(`${te.prefix}final_layer_norm.`)) return true;
  if (arch.family === 'sd2' && te.layout === 'openclip') {
    const P = te.prefix ?? 'cond_stage_model.model.';
    if (key === `${P}text_projection`) return true;
    if (te.skipLastLayer && key.startsWith(`${P}transformer.resblocks.${te.layers - 1}.`)) return true;
  }
  return false;
}

/** A context that hands out symbolic inputs for every weight the model asks for, and remembers the names. */
function recordingContext(shapeOf: ShapeOf, used: Set<string>): ModuleContext {
  const made = new Map<string, Tensor>();
  const maybe = (key: string): Tensor | undefined => {
    const shape = shapeOf(key);
    if (!shape) return undefined;
    used.add(key);
    let t = made.get(key);
    if (!t) made.set(key, (t = input(key, 'float32', shape)));
    return t;
  };
  return {
    maybe,
    p(key) {
      const t = maybe(key);
      if (!t) throw new UserError(`checkpoint has no tensor '${key}'`);
      return t;
    },
  };
}

/** The keys among `keys` that the architecture's networks never read (and no rule excuses). */
export function unusedWeights(arch: SdArch, keys: Iterable<string>, shapeOf: ShapeOf): string[] {
  const used = new Set<string>();
  const ctx = recordingContext(shapeOf, used);
  const side = 2 ** arch.unet.channelMult.length;
  unet(ctx, arch.unet, { batch: 1, height: side, width: side, contextTokens: 77 });
  if (arch.textEncoder2) {
    clipTextHidden(ctx, arch.textEncoder, { batch: 1, tokens: 77, fromEnd: 1 });
    clipTextHidden(ctx, arch.textEncoder2, { batch: 1, tokens: 77, fromEnd: 1, pooled: true });
  } else if (arch.family === 'sdxl-refiner') {
    clipTextHidden(ctx, arch.textEncoder, { batch: 1, tokens: 77, fromEnd: 1, pooled: true });
  } else {
    clipTextEncoder(ctx, arch.textEncoder, { batch: 1, tokens: 77, clipSkip: 1 });
  }
  const px = 8 * 2 ** arch.vae.channelMult.length;
  vaeEncoder(ctx, arch.vae, { batch: 1, height: px, width: px });
  vaeDecoder(ctx, arch.vae, { batch: 1, height: px / 8, width: px / 8 });
  return [...keys].filter((k) => !used.has(k) && !ignorable(k, arch));
}

/** Refuses a checkpoint with weights the networks would not read, naming them (the first few, and how many). */
export function refuseUnusedWeights(path: string, arch: SdArch, unused: string[]): void {
  if (unused.length === 0) return;
  const shown = unused.slice(0, 8).map((k) => `'${k}'`).join(', ');
  const more = unused.length > 8 ? ` and ${unused.length - 8} more` : '';
  throw new UserError(
    `${path}: ${unused.length} tensor(s) that the ${arch.family} model built from this checkpoint would not use: ${shown}${more}. ` +
      'Refusing to run it half-loaded (an unsupported model variant or a damaged file).',
  );
}
