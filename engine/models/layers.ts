/**
 * Weight-bearing layers shared by the models. A model names each layer by its checkpoint key (LDM layout),
 * so the same names serve loading, LoRA merging and LoRA training: a trainer hooks `adapter` to add a
 * low-rank branch beside any Linear or Conv without the model knowing.
 */
import { add, cast, input, param, reshape } from '../graph/ops-core.ts';
import { conv2d, groupNorm, groupNormGiven, groupStats, layerNorm, linear, type Conv2dOptions } from '../graph/ops-nn.ts';
import type { Tensor } from '../graph/tensor.ts';
import { UserError } from '../util/errors.ts';

export interface WeightSource {
  shape(key: string): number[] | undefined;
  data(key: string): Float32Array;
  /** The key's float16 bits where the model holds that weight in half precision; graphs widen it where used. */
  half?(key: string): Uint16Array | undefined;
}

export interface ModuleContext {
  /** The weight tensor named `key`; an error naming the key if the checkpoint lacks it. */
  p(key: string): Tensor;
  /** The weight tensor named `key`, or undefined (optional biases). */
  maybe(key: string): Tensor | undefined;
  /**
   * Extra branch added to the output of the Linear/Conv `moduleKey` (its weight is `moduleKey.weight`),
   * given that layer's input: how LoRA training attaches without touching model code.
   */
  adapter?: (moduleKey: string, x: Tensor, kind: 'linear' | 'conv', conv?: Conv2dOptions) => Tensor | undefined;
  /** Whether dropout layers are active. */
  training?: boolean;
  /** Circular padding in every 3×3 conv (seamless tiling). */
  tiling?: boolean;
  /** GroupNorm statistics shared between separately run tiles of one image (tiled VAE). */
  normStats?: SharedNormStats;
}

/**
 * How GroupNorm layers get their statistics when an image runs as tiles. 'collect': each layer computes them
 * and records the tensors in `layers` (the caller makes them graph outputs); 'given': each layer reads them from
 * the graph inputs `<key>.mean` and `<key>.var`, [batch, groups, 1], and records those inputs.
 */
export interface SharedNormStats {
  mode: 'collect' | 'given';
  layers: Map<string, { mean: Tensor; variance: Tensor }>;
}

/** A context whose weights are graph parameters bound to the given buffers; each key becomes one parameter. */
export function weightContext(src: WeightSource, extra: Partial<ModuleContext> = {}): ModuleContext {
  const made = new Map<string, Tensor>();
  const maybe = (key: string): Tensor | undefined => {
    let t = made.get(key);
    if (t) return t;
    const shape = src.shape(key);
    if (!shape) return undefined;
    const bits = src.half?.(key);
    t = bits ? cast(param(key, shape, bits, 'float16'), 'float32') : param(key, shape, src.data(key));
    made.set(key, t);
    return t;
  };
  return {
    maybe,
    p(key) {
      const t = maybe(key);
      if (!t) throw new UserError(`checkpoint has no tensor '${key}'`);
      return t;
    },
    ...extra,
  };
}

export function dense(ctx: ModuleContext, key: string, x: Tensor): Tensor {
  const w = ctx.p(`${key}.weight`);
  // LDM stores some Linear layers as 1×1 convs ([out, in, 1, 1]); the values are the same matrix.
  const w2 = w.rank === 4 ? reshape(w, [w.shape[0]!, w.shape[1]!]) : w;
  const y = linear(x, w2, ctx.maybe(`${key}.bias`));
  const extra = ctx.adapter?.(key, x, 'linear');
  return extra ? add(y, extra) : y;
}

export function conv(ctx: ModuleContext, key: string, x: Tensor, opts: Conv2dOptions = {}): Tensor {
  const w = ctx.p(`${key}.weight`);
  const o: Conv2dOptions = ctx.tiling && (w.shape[2] as number) > 1 ? { ...opts, paddingMode: 'circular' } : opts;
  const y = conv2d(x, w, ctx.maybe(`${key}.bias`), o);
  const extra = ctx.adapter?.(key, x, 'conv', o);
  return extra ? add(y, extra) : y;
}

export function groupNormLayer(ctx: ModuleContext, key: string, x: Tensor, groups: number, eps: number): Tensor {
  const shared = ctx.normStats;
  if (!shared) return groupNorm(x, groups, ctx.p(`${key}.weight`), ctx.p(`${key}.bias`), eps);
  if (shared.layers.has(key)) throw new Error(`groupNormLayer: ${key} used twice in one graph with shared statistics`);
  const stats =
    shared.mode === 'collect'
      ? groupStats(x, groups)
      : { mean: input(`${key}.mean`, 'float32', [x.shape[0]!, groups, 1]), variance: input(`${key}.var`, 'float32', [x.shape[0]!, groups, 1]) };
  shared.layers.set(key, stats);
  return groupNormGiven(x, groups, stats, ctx.p(`${key}.weight`), ctx.p(`${key}.bias`), eps);
}

export function layerNormLayer(ctx: ModuleContext, key: string, x: Tensor, eps: number): Tensor {
  return layerNorm(x, ctx.p(`${key}.weight`), ctx.p(`${key}.bias`), eps);
}
