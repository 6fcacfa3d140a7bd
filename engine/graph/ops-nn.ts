import { UserError } from '../util/errors.ts';
import { arrayFrom, isFloat, type DType } from './dtype.ts';
import {
  add, concat, constant, div, equal, erf, less, maximum, mean, mul, mT, neg, pow, reshape, scalar, sigmoid, slice, sqrt, sub, sum, tanh, transpose, unsqueeze, where,
} from './ops-core.ts';
import { broadcastShapes, normAxis, ShapeError } from './shape.ts';
import { node, Tensor } from './tensor.ts';

// ---------- matmul / linear ----------

/** Batched matrix product with numpy broadcasting over leading axes; both operands need rank >= 2. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.rank < 2 || b.rank < 2) throw new ShapeError(`matmul: ${a} and ${b} need rank >= 2`);
  if (a.dtype !== b.dtype) throw new ShapeError(`matmul: dtype mismatch ${a} vs ${b}`);
  const k1 = a.shape[a.rank - 1]!;
  const k2 = b.shape[b.rank - 2]!;
  if (k1 !== k2) throw new ShapeError(`matmul: inner dims differ, ${a} @ ${b}`);
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), `matmul(${a}, ${b})`);
  return node('matmul', [a, b], {}, a.dtype, [...batch, a.shape[a.rank - 2]!, b.shape[b.rank - 1]!]);
}

/** PyTorch `nn.Linear`: `x @ w.T + b`, with `w` of shape [out, in]. */
export function linear(x: Tensor, w: Tensor, b?: Tensor): Tensor {
  if (w.rank !== 2) throw new ShapeError(`linear: weight ${w} must be [out, in]`);
  if (x.shape[x.rank - 1] !== w.shape[1])
    throw new UserError(`linear: weight ${w.name ?? w} expects ${w.shape[1]} input features, input ${x} has ${x.shape[x.rank - 1]}`);
  const y = matmul(x, mT(w));
  return b ? add(y, b) : y;
}

// ---------- convolution ----------

export interface Conv2dOptions {
  stride?: number | readonly [number, number];
  /** Symmetric [h, w], one number, or [top, left, bottom, right]. */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  dilation?: number | readonly [number, number];
  groups?: number;
  /** 'circular' wraps around (the seamless-tiling trick); 'zeros' is PyTorch's default. */
  paddingMode?: 'zeros' | 'circular';
}

const pair = (v: number | readonly number[] | undefined, d: number): [number, number] =>
  v === undefined ? [d, d] : typeof v === 'number' ? [v, v] : [v[0]!, v[1]!];

function pads4(p: Conv2dOptions['padding']): [number, number, number, number] {
  if (p === undefined) return [0, 0, 0, 0];
  if (typeof p === 'number') return [p, p, p, p];
  if (p.length === 2) return [p[0], p[1], p[0], p[1]];
  return [p[0]!, p[1]!, p[2]!, p[3]!];
}

export function convOutSize(n: number, k: number, s: number, p0: number, p1: number, d: number): number {
  return Math.floor((n + p0 + p1 - d * (k - 1) - 1) / s) + 1;
}

/** Wraps `x` [N, C, H, W] around by the given amounts (top, left, bottom, right). */
export function padCircular(x: Tensor, [t, l, b, r]: readonly number[]): Tensor {
  let y = x;
  if (t || b) y = concat([...(t ? [slice(y, 2, -t)] : []), y, ...(b ? [slice(y, 2, 0, b)] : [])], 2);
  if (l || r) y = concat([...(l ? [slice(y, 3, -l)] : []), y, ...(r ? [slice(y, 3, 0, r)] : [])], 3);
  return y;
}

/** 2-D convolution, NCHW; weight [C_out, C_in / groups, kH, kW]; bias [C_out]. */
export function conv2d(x: Tensor, w: Tensor, b?: Tensor, opts: Conv2dOptions = {}): Tensor {
  if (x.rank !== 4 || w.rank !== 4) throw new ShapeError(`conv2d: need NCHW input and 4-D weight, got ${x}, ${w}`);
  const groups = opts.groups ?? 1;
  const stride = pair(opts.stride, 1);
  const dilation = pair(opts.dilation, 1);
  let pads = pads4(opts.padding);
  let xin = x;
  if (opts.paddingMode === 'circular') {
    xin = padCircular(x, pads);
    pads = [0, 0, 0, 0];
  }
  const [N, C, H, W] = xin.shape;
  const [O, I, kh, kw] = w.shape as number[];
  if (typeof C !== 'number' || C !== I! * groups)
    throw new UserError(`conv2d: weight ${w.name ?? w} expects ${I! * groups} input channels, input ${x} has ${C}`);
  if (O! % groups !== 0) throw new ShapeError(`conv2d: ${O} output channels not divisible by groups ${groups}`);
  if (typeof H !== 'number' || typeof W !== 'number') throw new ShapeError(`conv2d: spatial dims of ${x} must be static`);
  const oh = convOutSize(H, kh!, stride[0], pads[0], pads[2], dilation[0]);
  const ow = convOutSize(W, kw!, stride[1], pads[1], pads[3], dilation[1]);
  if (b && (b.rank !== 1 || b.shape[0] !== O)) throw new UserError(`conv2d: bias ${b.name ?? b} must have shape [${O}]`);
  const attrs = { stride, pads, dilation, groups };
  return node('conv2d', b ? [xin, w, b] : [xin, w], attrs, x.dtype, [N!, O!, oh, ow]);
}

/**
 * Transposed 2-D convolution (the adjoint of conv2d); weight [C_in, C_out / groups, kH, kW].
 * `outputPadding` adds rows/cols at the bottom/right so the adjoint recovers odd input sizes.
 */
export function convTranspose2d(
  x: Tensor,
  w: Tensor,
  opts: { stride?: number | readonly [number, number]; pads?: readonly number[]; dilation?: number | readonly [number, number]; groups?: number; outputPadding?: readonly [number, number] } = {},
): Tensor {
  const groups = opts.groups ?? 1;
  const stride = pair(opts.stride, 1);
  const dilation = pair(opts.dilation, 1);
  const pads = opts.pads ? [...opts.pads] : [0, 0, 0, 0];
  const outputPadding = opts.outputPadding ? [...opts.outputPadding] : [0, 0];
  const [N, , H, W] = x.shape;
  const [, O, kh, kw] = w.shape as number[];
  if (typeof H !== 'number' || typeof W !== 'number') throw new ShapeError(`convTranspose2d: spatial dims of ${x} must be static`);
  const oh = stride[0] * (H - 1) + outputPadding[0]! + dilation[0] * (kh! - 1) + 1 - pads[0]! - pads[2]!;
  const ow = stride[1] * (W - 1) + outputPadding[1]! + dilation[1] * (kw! - 1) + 1 - pads[1]! - pads[3]!;
  return node('conv_transpose2d', [x, w], { stride, pads, dilation, groups, outputPadding }, x.dtype, [N!, O! * groups, oh, ow]);
}

// ---------- normalisation ----------

/** `(x - mean) / sqrt(var + eps)` over axes `axis..rank-1` (no affine). */
export function normalize(x: Tensor, axis: number, eps: number): Tensor {
  const a = normAxis(axis, x.rank, 'normalize');
  return node('normalize', [x], { axis: a, eps }, x.dtype, x.shape);
}

/** PyTorch `nn.LayerNorm` over the last `normalizedDims` axes (default 1). */
export function layerNorm(x: Tensor, gamma?: Tensor, beta?: Tensor, eps = 1e-5, normalizedDims = 1): Tensor {
  const D = x.shape[x.rank - 1];
  const vec = (t?: Tensor) => !t || (t.rank === 1 && t.shape[0] === D && t.dtype === x.dtype);
  if (normalizedDims === 1 && gamma && vec(gamma) && vec(beta)) {
    // One primitive with the affine inside: lowers to a single LayerNormalization instead of LN + Mul + Add.
    return node('layer_norm', beta ? [x, gamma, beta] : [x, gamma], { eps }, x.dtype, x.shape);
  }
  let y = normalize(x, x.rank - normalizedDims, eps);
  if (gamma) y = mul(y, gamma);
  if (beta) y = add(y, beta);
  return y;
}

/** PyTorch `nn.GroupNorm` on [N, C, ...]: statistics per (sample, group of C/groups channels); per-channel affine. */
export function groupNorm(x: Tensor, groups: number, gamma?: Tensor, beta?: Tensor, eps = 1e-5): Tensor {
  const C = x.shape[1];
  if (typeof C !== 'number' || C % groups !== 0) throw new ShapeError(`groupNorm: ${x} channels not divisible by ${groups}`);
  const y = reshape(normalize(reshape(x, [x.shape[0]!, groups, -1]), 2, eps), x.shape);
  const cshape = [C, ...x.shape.slice(2).map(() => 1)];
  let out = y;
  if (gamma) out = mul(out, reshape(gamma, cshape));
  if (beta) out = add(out, reshape(beta, cshape));
  return out;
}

/**
 * GroupNorm's statistics on [N, C, ...]: per (sample, group) mean and (biased) variance, each [N, groups, 1].
 * With `groupNormGiven` they split `groupNorm` in two, so tiles of one image can share its statistics.
 */
export function groupStats(x: Tensor, groups: number): { mean: Tensor; variance: Tensor } {
  const C = x.shape[1];
  if (typeof C !== 'number' || C % groups !== 0) throw new ShapeError(`groupStats: ${x} channels not divisible by ${groups}`);
  const g = reshape(x, [x.shape[0]!, groups, -1]);
  const m = mean(g, 2, true);
  const d = sub(g, m);
  return { mean: m, variance: mean(mul(d, d), 2, true) };
}

/** `groupNorm` with statistics from elsewhere (`groupStats` of the whole image), mean and variance [N, groups, 1]. */
export function groupNormGiven(x: Tensor, groups: number, stats: { mean: Tensor; variance: Tensor }, gamma?: Tensor, beta?: Tensor, eps = 1e-5): Tensor {
  const C = x.shape[1];
  if (typeof C !== 'number' || C % groups !== 0) throw new ShapeError(`groupNormGiven: ${x} channels not divisible by ${groups}`);
  const g = reshape(x, [x.shape[0]!, groups, -1]);
  const y = reshape(div(sub(g, stats.mean), sqrt(add(stats.variance, eps))), x.shape);
  const cshape = [C, ...x.shape.slice(2).map(() => 1)];
  let out = y;
  if (gamma) out = mul(out, reshape(gamma, cshape));
  if (beta) out = add(out, reshape(beta, cshape));
  return out;
}

/** RMSNorm (Llama): `x / sqrt(mean(x^2, -1) + eps) * weight`. */
export function rmsNorm(x: Tensor, weight?: Tensor, eps = 1e-6): Tensor {
  // Written as Pow/ReduceMean/Add/Sqrt/Div so ORT fuses it into SimplifiedLayerNormalization.
  const y = div(x, sqrt(add(mean(pow(x, 2), -1, true), eps)));
  return weight ? mul(y, weight) : y;
}

// ---------- softmax / activations ----------

export function softmax(x: Tensor, axis = -1): Tensor {
  return node('softmax', [x], { axis: normAxis(axis, x.rank, 'softmax') }, x.dtype, x.shape);
}

export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return node('log_softmax', [x], { axis: normAxis(axis, x.rank, 'logSoftmax') }, x.dtype, x.shape);
}

/**
 * GELU; `approximate: 'tanh'` is the tanh formula (PyTorch `approximate='tanh'`). The exact form is one
 * primitive: its gradient needs only x, so training keeps one tensor instead of the formula's four
 * intermediates, and ORT still fuses the forward into one Gelu kernel (`geluComposite`).
 */
export function gelu(x: Tensor, approximate: 'none' | 'tanh' = 'none'): Tensor {
  if (!isFloat(x.dtype)) throw new ShapeError(`gelu: needs a float tensor, got ${x}`);
  if (approximate === 'none') return node('gelu', [x], {}, x.dtype, x.shape);
  const inner = mul(add(x, mul(mul(mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(mul(x, 0.5), add(tanh(inner), 1));
}

/** The standard-op form of exact GELU; dividing by sqrt(2) (not multiplying) is the form ORT's GeluFusion recognises. */
export const geluComposite = (x: Tensor): Tensor => mul(mul(x, 0.5), add(erf(div(x, Math.SQRT2)), 1));

/** CLIP's `x * sigmoid(1.702 x)`. */
export const quickGelu = (x: Tensor): Tensor => mul(x, sigmoid(mul(x, 1.702)));

/**
 * SiLU `x * sigmoid(x)` as one primitive: its gradient recomputes sigmoid from x, so training keeps x alone
 * (not x and sigmoid(x)), and the forward stays fusable (ORT's QuickGelu with alpha 1).
 */
export function silu(x: Tensor): Tensor {
  if (!isFloat(x.dtype)) throw new ShapeError(`silu: needs a float tensor, got ${x}`);
  return node('silu', [x], {}, x.dtype, x.shape);
}

// ---------- attention ----------

/**
 * Sets x[..., i, j] to -inf where j > i + offset; the default offset S - T aligns the mask to the end of the
 * keys (a query chunk starting at row r of T uses r + S - T). Its gradient is the same mask filled with 0.
 */
export function causalMask(x: Tensor, offset?: number): Tensor {
  const T = x.shape[x.rank - 2]!;
  const S = x.shape[x.rank - 1]!;
  const static_ = typeof T === 'number' && typeof S === 'number';
  if (!static_ && (T !== S || (offset !== undefined && offset !== 0)))
    throw new ShapeError(`causalMask: ${x} needs static dims, or equal named query/key lengths and offset 0`);
  const off = offset ?? (static_ ? (S as number) - (T as number) : 0);
  return node('causal_mask', [x], { fill: '-inf', offset: off }, x.dtype, x.shape);
}

export interface AttentionOptions {
  causal?: boolean;
  /** Additive mask broadcast onto the [..., T, S] scores (0 keeps, -inf drops). */
  mask?: Tensor;
  /** Defaults to 1/sqrt(head dim). */
  scale?: number;
  /**
   * Process queries in chunks of this many rows (static T only): peak memory of the [T, S] scores drops to
   * [chunk, S] per head, since ORT runs the chunks one after another. Same result.
   */
  queryChunk?: number;
}

/** Attention from MatMul/Softmax/MatMul only. */
function attentionCore(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const D = q.shape[q.rank - 1]!;
  if (typeof D !== 'number') throw new ShapeError(`attention: head dim of ${q} must be static`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const T = q.shape[q.rank - 2]!;
  const S = k.shape[k.rank - 2]!;
  const kt = mT(k);
  const rows = (qc: Tensor, r0: number): Tensor => {
    // Scaling q (T x D) instead of the scores (T x S) touches fewer elements.
    let s = matmul(mul(qc, scale), kt);
    if (opts.mask) {
      const m = opts.mask;
      const full = m.rank >= 2 && m.shape[m.rank - 2] === T && T !== 1 && qc.shape[qc.rank - 2] !== T;
      s = add(s, full ? slice(m, m.rank - 2, r0, r0 + (qc.shape[qc.rank - 2] as number)) : m);
    }
    if (opts.causal) s = typeof T === 'number' && typeof S === 'number' ? causalMask(s, r0 + S - T) : causalMask(s);
    return matmul(softmax(s, -1), v);
  };
  const chunk = opts.queryChunk;
  if (!chunk || typeof T !== 'number' || chunk >= T) return rows(q, 0);
  const parts: Tensor[] = [];
  for (let r0 = 0; r0 < T; r0 += chunk) parts.push(rows(slice(q, q.rank - 2, r0, Math.min(T, r0 + chunk)), r0));
  return concat(parts, q.rank - 2);
}

/** If `x` is `splitHeads(p, H)` of a packed [B, T, H*D] tensor, that tensor and H. */
function packedHeads(x: Tensor): { packed: Tensor; heads: number } | undefined {
  if (x.op !== 'transpose' || (x.attrs['perm'] as number[]).join() !== '0,2,1,3') return undefined;
  const r = x.inputs[0]!;
  if (r.op !== 'reshape' || r.rank !== 4) return undefined;
  const p = r.inputs[0]!;
  if (p.rank !== 3 || p.shape[0] !== r.shape[0] || p.shape[1] !== r.shape[1]) return undefined;
  return { packed: p, heads: r.shape[2] as number };
}

/**
 * Scaled dot-product attention: q [..., T, D], k [..., S, D], v [..., S, Dv] -> [..., T, Dv].
 * Heads made by `splitHeads` (or plain [B, T, C] single-head tensors) without mask or chunking become one
 * fused multi-head attention node, so `mergeHeads(attention(splitHeads(q), ...))` gets the fast kernel.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  if (!opts.mask && !opts.queryChunk) {
    const [pq, pk, pv] = [q, k, v].map(packedHeads);
    if (pq && pk && pv && pq.heads === pk.heads && pk.heads === pv.heads)
      return splitHeads(multiHeadAttention(pq.packed, pk.packed, pv.packed, pq.heads, opts), pq.heads);
    if (q.rank === 3 && k.rank === 3 && v.rank === 3 && typeof q.shape[2] === 'number' && q.shape[2] === k.shape[2])
      return multiHeadAttention(q, k, v, 1, opts);
  }
  return attentionCore(q, k, v, opts);
}

/**
 * Multi-head attention on packed heads: q [B, T, H*D], k [B, S, H*D], v [B, S, H*Dv] -> [B, T, H*Dv].
 * One primitive, so lowering can use ORT's fused kernel (no [B, H, T, S] score tensor: 15x less peak memory at
 * SD sizes, same speed) and fall back to
 * MatMul/Softmax/MatMul; with a `mask` or `queryChunk` it is built from the standard ops directly.
 */
export function multiHeadAttention(q: Tensor, k: Tensor, v: Tensor, heads: number, opts: AttentionOptions = {}): Tensor {
  if (q.rank !== 3 || k.rank !== 3 || v.rank !== 3) throw new ShapeError(`multiHeadAttention: q, k, v must be [B, T, C], got ${q}, ${k}, ${v}`);
  const C = q.shape[2]!;
  const Cv = v.shape[2]!;
  if (typeof C !== 'number' || C % heads !== 0 || k.shape[2] !== C || typeof Cv !== 'number' || Cv % heads !== 0)
    throw new ShapeError(`multiHeadAttention: channels of ${q}, ${k}, ${v} do not split into ${heads} heads`);
  if (k.shape[1] !== v.shape[1]) throw new ShapeError(`multiHeadAttention: key ${k} and value ${v} lengths differ`);
  const scale = opts.scale ?? 1 / Math.sqrt(C / heads);
  if (opts.mask || opts.queryChunk)
    return mergeHeads(attentionCore(splitHeads(q, heads), splitHeads(k, heads), splitHeads(v, heads), { ...opts, scale }));
  return node('mha', [q, k, v], { heads, scale, causal: opts.causal === true }, q.dtype, [q.shape[0]!, q.shape[1]!, Cv]);
}

/** The standard-op expansion of an 'mha' node (used by lowering's fallback and by its gradient rule). */
export function mhaComposite(t: Tensor): Tensor {
  const [q, k, v] = t.inputs as [Tensor, Tensor, Tensor];
  const heads = t.attrs['heads'] as number;
  const o = attentionCore(splitHeads(q, heads), splitHeads(k, heads), splitHeads(v, heads), { scale: t.attrs['scale'] as number, causal: t.attrs['causal'] === true });
  return mergeHeads(o);
}

/** Splits [B, T, H*D] into heads [B, H, T, D]. */
export function splitHeads(x: Tensor, heads: number): Tensor {
  const [B, T, C] = x.shape;
  if (typeof C !== 'number' || C % heads !== 0) throw new ShapeError(`splitHeads: ${x} not divisible into ${heads} heads`);
  return transpose(reshape(x, [B!, T!, heads, C / heads]), [0, 2, 1, 3]);
}

/** Merges heads [B, H, T, D] back into [B, T, H*D]. */
export function mergeHeads(x: Tensor): Tensor {
  const [B, H, T, D] = x.shape;
  return reshape(transpose(x, [0, 2, 1, 3]), [B!, T!, (H as number) * (D as number)]);
}

// ---------- rotary embedding ----------

/** cos/sin tables [T, dim] for rotary embedding (HF Llama layout: frequencies repeated twice), as constants. */
export function ropeTables(positions: number | readonly number[], dim: number, theta = 10000, dtype: DType = 'float32'): { cos: Tensor; sin: Tensor } {
  const pos = typeof positions === 'number' ? Array.from({ length: positions }, (_, i) => i) : positions;
  const half = dim / 2;
  const cos = new Float64Array(pos.length * dim);
  const sin = new Float64Array(pos.length * dim);
  for (let t = 0; t < pos.length; t++)
    for (let i = 0; i < half; i++) {
      // Frequencies are computed in float32 like transformers does, so angles match its tables bit for bit.
      const inv = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / dim)));
      const ang = Math.fround(pos[t]! * inv);
      cos[t * dim + i] = cos[t * dim + i + half] = Math.cos(ang);
      sin[t * dim + i] = sin[t * dim + i + half] = Math.sin(ang);
    }
  return { cos: constant(arrayFrom(dtype, cos), [pos.length, dim], dtype), sin: constant(arrayFrom(dtype, sin), [pos.length, dim], dtype) };
}

/** Rotary position embedding (rotate-half form): `x * cos + rotate_half(x) * sin`; cos/sin broadcast onto x [..., T, D]. */
export function rotary(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const D = x.shape[x.rank - 1] as number;
  const x1 = slice(x, -1, 0, D / 2);
  const x2 = slice(x, -1, D / 2);
  return add(mul(x, cos), mul(concat([neg(x2), x1], -1), sin));
}

// ---------- misc ----------

/** Nearest-neighbour upsampling of [N, C, H, W] by an integer factor. */
export function upsampleNearest(x: Tensor, scale = 2): Tensor {
  if (x.rank !== 4 || !Number.isInteger(scale)) throw new ShapeError(`upsampleNearest: ${x}, scale ${scale}`);
  const [N, C, H, W] = x.shape;
  if (typeof H !== 'number' || typeof W !== 'number') throw new ShapeError(`upsampleNearest: ${x} spatial dims must be static`);
  return node('upsample_nearest', [x], { scale }, x.dtype, [N!, C!, H * scale, W * scale]);
}

let dropoutCounter = 0;

/** Inverted dropout; identity unless `training`. A fresh mask is drawn at every run. */
export function dropout(x: Tensor, p: number, training: boolean): Tensor {
  if (!training || p === 0) return x;
  if (!(p > 0 && p < 1)) throw new UserError(`dropout: probability ${p} must be in [0, 1)`);
  // uid keeps two dropouts on the same tensor from being merged into one mask.
  const u = node('rand_like', [x], { uid: ++dropoutCounter }, x.dtype, x.shape);
  return where(less(u, p), scalar(0, x.dtype), div(x, 1 - p));
}

/** Embedding lookup: `table` [V, D], integer `ids` [...] -> [..., D]. */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  if (table.rank !== 2) throw new ShapeError(`embedding: table ${table} must be [V, D]`);
  return node('gather', [table, ids], { axis: 0 }, table.dtype, [...ids.shape, table.shape[1]!]);
}

/** Mean cross-entropy of `logits` [..., V] against a float one-hot / soft `target` of the same shape. */
export function crossEntropy(logits: Tensor, target: Tensor): Tensor {
  return neg(mean(reduceLast(mul(logSoftmax(logits, -1), target))));
}

/**
 * Mean token cross-entropy of `logits` [..., V] against integer class ids [...] (int64), like
 * `F.cross_entropy(ignore_index=...)`: positions whose id equals `ignoreIndex` count neither in the sum nor
 * in the mean. The one-hot is built in the graph (no [.., V] host tensor to feed).
 */
export function crossEntropyWithIds(logits: Tensor, ids: Tensor, ignoreIndex = -100): Tensor {
  const V = logits.shape[logits.rank - 1];
  if (typeof V !== 'number') throw new ShapeError(`crossEntropyWithIds: vocabulary axis of ${logits} must be static`);
  if (ids.dtype !== 'int64') throw new ShapeError(`crossEntropyWithIds: ids ${ids} must be int64`);
  const classes = constant(BigInt64Array.from({ length: V }, (_, i) => BigInt(i)), [V], 'int64');
  const onehot = where(equal(unsqueeze(ids, -1), classes), scalar(1, logits.dtype), scalar(0, logits.dtype));
  const nll = neg(reduceLast(mul(logSoftmax(logits, -1), onehot)));
  const keep = where(equal(ids, scalar(ignoreIndex, 'int64')), scalar(0, logits.dtype), scalar(1, logits.dtype));
  return div(sum(mul(nll, keep)), maximum(sum(keep), 1));
}

function reduceLast(x: Tensor): Tensor {
  return node('reduce_sum', [x], { axes: [x.rank - 1], keepdims: false }, x.dtype, x.shape.slice(0, -1));
}

export function mse(a: Tensor, b: Tensor): Tensor {
  const d = sub(a, b);
  return mean(mul(d, d));
}
