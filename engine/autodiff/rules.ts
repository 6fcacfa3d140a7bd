import * as g from '../graph/index.ts';
import { node, type Dim, type Shape, Tensor } from '../graph/tensor.ts';
import { ShapeError } from '../graph/shape.ts';

/**
 * A vector-Jacobian product: given node `t` and the gradient `dy` of the loss w.r.t. `t`, the gradients
 * w.r.t. each input (undefined where not needed or not differentiable). `fwd` maps a forward tensor to
 * the tensor the backward graph should read (itself, or a recomputed copy under checkpointing).
 */
export type VjpRule = (t: Tensor, dy: Tensor, need: readonly boolean[], fwd: (x: Tensor) => Tensor) => (Tensor | undefined)[];

/**
 * One element of `t` times 0: a value that is 0 but can only be computed once `t` has been. Added to a
 * tensor, it orders work for ORT's scheduler without changing any value (gradient checkpointing's gates,
 * weight gradients first, attention chunks one at a time).
 */
export function zeroAfter(t: Tensor): Tensor {
  // The last element: a negative start also works on a dynamic (batch) axis.
  return g.mul(g.reshape(g.slice(g.reshape(t, [-1]), 0, -1), []), 0);
}

/** Sums a broadcast gradient back down to `shape`. */
export function sumToShape(dy: Tensor, shape: Shape): Tensor {
  if (dy.rank === shape.length && dy.shape.every((d, i) => d === shape[i])) return dy;
  const lead = dy.rank - shape.length;
  let r = lead > 0 ? g.sum(dy, Array.from({ length: lead }, (_, i) => i)) : dy;
  const axes: number[] = [];
  shape.forEach((d, i) => {
    if (d === 1 && r.shape[i] !== 1) axes.push(i);
  });
  if (axes.length) r = g.sum(r, axes, true);
  return g.reshape(r, shape);
}

const keepShape = (t: Tensor): Dim[] => {
  const axes = t.attrs['axes'] as number[];
  return t.inputs[0]!.shape.map((d, i) => (axes.includes(i) ? 1 : d));
};

/** 1 / (number of elements reduced), as a graph value when an axis is dynamic. */
function inverseCount(x: Tensor, axes: readonly number[]): Tensor | number {
  let n = 1;
  let dyn: Tensor | undefined;
  for (const a of axes) {
    const d = x.shape[a]!;
    if (typeof d === 'number') n *= d;
    else dyn = dyn ? g.mul(dyn, g.dimSize(x, a, x.dtype)) : g.dimSize(x, a, x.dtype);
  }
  return dyn ? g.div(1 / n, dyn) : 1 / n;
}

/**
 * dL/dW of a convolution as one batched GEMM over explicit patches (im2col): dW[g] = sum_n dy[n, g] @
 * cols[n, g]^T. The patches come from a depthwise convolution with one-hot kernels (one output channel per
 * input channel and tap), which ORT runs in one pass; 9 Slices + a Concat measured 1.3-1.6x slower, and
 * correlating input and gradient as a batch-as-channels convolution about 2x slower.
 */
function convWeightGrad(x: Tensor, dy: Tensor, w: Tensor, attrs: g.Attrs): Tensor {
  const stride = attrs['stride'] as [number, number];
  const dilation = attrs['dilation'] as [number, number];
  const pads = attrs['pads'] as [number, number, number, number];
  const groups = attrs['groups'] as number;
  const [O, I, kh, kw] = w.shape as number[];
  const [N, , oh, ow] = dy.shape as [Dim, number, number, number];
  const C = I! * groups;
  const taps = kh! * kw!;
  let cols: Tensor;
  if (taps === 1 && stride[0] === 1 && stride[1] === 1 && pads.every((p) => p === 0)) cols = x;
  else {
    const eye = new Array<number>(C * taps * taps).fill(0);
    for (let c = 0; c < C; c++) for (let k = 0; k < taps; k++) eye[(c * taps + k) * taps + k] = 1;
    const kernel = g.constant(g.arrayFrom(x.dtype, eye), [C * taps, 1, kh!, kw!], x.dtype);
    cols = g.conv2d(x, kernel, undefined, { stride, dilation, padding: pads, groups: C });
  }
  const colsG = g.reshape(cols, [N, groups, I! * taps, oh * ow]);
  const dyg = g.reshape(dy, [N, groups, O! / groups, oh * ow]);
  return g.reshape(g.sum(g.matmul(dyg, g.mT(colsG)), 0), [O!, I!, kh!, kw!]);
}

function sliceGrad(t: Tensor, dy: Tensor): Tensor {
  const x = t.inputs[0]!;
  const axis = t.attrs['axis'] as number;
  const start = t.attrs['start'] as number;
  const step = t.attrs['step'] as number;
  const dim = x.shape[axis];
  const n = dy.shape[axis] as number;
  if (typeof dim !== 'number' || typeof n !== 'number') throw new ShapeError(`grad of slice on dynamic axis ${axis} of ${x}`);
  let spread = dy;
  let len = n;
  if (step > 1) {
    // Interleave step-1 zeros after each element, so element k lands at k*step.
    const u = g.unsqueeze(dy, axis + 1);
    const pads = new Array(2 * u.rank).fill(0);
    pads[u.rank + axis + 1] = step - 1;
    const merged = [...dy.shape];
    merged[axis] = n * step;
    spread = g.reshape(g.pad(u, pads), merged);
    len = n * step;
  }
  const after = dim - start - len;
  if (after < 0) {
    spread = g.slice(spread, axis, 0, len + after);
    len += after;
  }
  const pads = new Array(2 * x.rank).fill(0);
  pads[axis] = start;
  pads[x.rank + axis] = Math.max(0, dim - start - len);
  return g.pad(spread, pads);
}

const R: Record<string, VjpRule> = {};

R['add'] = (t, dy) => [sumToShape(dy, t.inputs[0]!.shape), sumToShape(dy, t.inputs[1]!.shape)];
R['sub'] = (t, dy, need) => [sumToShape(dy, t.inputs[0]!.shape), need[1] ? sumToShape(g.neg(dy), t.inputs[1]!.shape) : undefined];
R['mul'] = (t, dy, need, f) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  return [need[0] ? sumToShape(g.mul(dy, f(b)), a.shape) : undefined, need[1] ? sumToShape(g.mul(dy, f(a)), b.shape) : undefined];
};
R['div'] = (t, dy, need, f) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  const da = need[0] || need[1] ? g.div(dy, f(b)) : undefined;
  return [need[0] ? sumToShape(da!, a.shape) : undefined, need[1] ? sumToShape(g.neg(g.mul(da!, f(t))), b.shape) : undefined];
};
R['pow'] = (t, dy, need, f) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  const c = g.constValue(b);
  const local = c === 2 ? g.mul(f(a), 2) : c !== undefined ? g.mul(g.pow(f(a), c - 1), c) : g.mul(f(b), g.pow(f(a), g.sub(f(b), 1)));
  const da = need[0] ? sumToShape(g.mul(dy, local), a.shape) : undefined;
  const db = need[1] ? sumToShape(g.mul(dy, g.mul(f(t), g.log(f(a)))), b.shape) : undefined;
  return [da, db];
};
// Ties send the whole gradient to the first operand, like PyTorch's maximum/minimum.
R['max'] = (t, dy) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  const lt = g.less(a, b);
  return [sumToShape(g.where(lt, 0, dy), a.shape), sumToShape(g.where(lt, dy, 0), b.shape)];
};
R['min'] = (t, dy) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  const gt = g.greater(a, b);
  return [sumToShape(g.where(gt, 0, dy), a.shape), sumToShape(g.where(gt, dy, 0), b.shape)];
};
R['less'] = R['greater'] = R['equal'] = () => [undefined, undefined];
R['exp'] = (t, dy, _n, f) => [g.mul(dy, f(t))];
R['log'] = (t, dy, _n, f) => [g.div(dy, f(t.inputs[0]!))];
R['sqrt'] = (t, dy, _n, f) => [g.div(g.mul(dy, 0.5), f(t))];
R['rsqrt'] = (t, dy, _n, f) => {
  const y = f(t);
  return [g.mul(dy, g.mul(g.mul(g.mul(y, y), y), -0.5))];
};
R['reciprocal'] = (t, dy, _n, f) => {
  const y = f(t);
  return [g.neg(g.mul(dy, g.mul(y, y)))];
};
R['tanh'] = (t, dy, _n, f) => {
  const y = f(t);
  return [g.mul(dy, g.sub(1, g.mul(y, y)))];
};
R['sigmoid'] = (t, dy, _n, f) => {
  const y = f(t);
  return [g.mul(dy, g.mul(y, g.sub(1, y)))];
};
/**
 * x as a backward-pass value: `x + 0 * dy[0]`. A rule that recomputes a forward intermediate from x (sigmoid
 * for SiLU, erf for GELU) must not produce the very node the forward computed: ONNX lowering and ORT would
 * merge the two, the forward's fused kernel would split back into its parts, and the intermediate would be
 * kept for the backward pass after all.
 */
const backwardCopy = (x: Tensor, dy: Tensor): Tensor => g.add(x, g.cast(zeroAfter(dy), x.dtype));

// GELU'(x) = Φ(x) + x φ(x): the normal CDF and density, from x alone.
R['gelu'] = (t, dy, _n, f) => {
  const x = backwardCopy(f(t.inputs[0]!), dy);
  const cdf = g.mul(g.add(g.erf(g.div(x, Math.SQRT2)), 1), 0.5);
  const pdf = g.mul(g.exp(g.mul(g.mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
  return [g.mul(dy, g.add(cdf, g.mul(x, pdf)))];
};
// SiLU'(x) = s (1 + x (1 - s)) with s = sigmoid(x), recomputed.
R['silu'] = (t, dy, _n, f) => {
  const x = backwardCopy(f(t.inputs[0]!), dy);
  const s = g.sigmoid(x);
  return [g.mul(dy, g.mul(s, g.add(g.mul(x, g.sub(1, s)), 1)))];
};
R['erf'] = (t, dy, _n, f) => {
  const x = f(t.inputs[0]!);
  return [g.mul(dy, g.mul(g.exp(g.neg(g.mul(x, x))), 2 / Math.sqrt(Math.PI)))];
};
R['sin'] = (t, dy, _n, f) => [g.mul(dy, g.cos(f(t.inputs[0]!)))];
R['cos'] = (t, dy, _n, f) => [g.neg(g.mul(dy, g.sin(f(t.inputs[0]!))))];
R['neg'] = (_t, dy) => [g.neg(dy)];
R['abs'] = (t, dy, _n, f) => [g.mul(dy, g.sign(f(t.inputs[0]!)))];
R['sign'] = () => [undefined];
R['relu'] = (t, dy, _n, f) => [g.where(g.greater(f(t.inputs[0]!), 0), dy, 0)];
R['where'] = (t, dy) => {
  const [c, a, b] = t.inputs as [Tensor, Tensor, Tensor];
  return [undefined, sumToShape(g.where(c, dy, 0), a.shape), sumToShape(g.where(c, 0, dy), b.shape)];
};
R['cast'] = (t, dy) => (g.isFloat(t.inputs[0]!.dtype) ? [g.cast(dy, t.inputs[0]!.dtype)] : [undefined]);

R['matmul'] = (t, dy, need, f) => {
  const [a, b] = t.inputs as [Tensor, Tensor];
  let da: Tensor | undefined;
  let db: Tensor | undefined;
  if (need[0]) da = sumToShape(g.matmul(dy, g.mT(f(b))), a.shape);
  if (need[1]) {
    if (b.rank === 2 && a.rank > 2) {
      // A shared weight: fold the batch axes into one GEMM instead of a batched product and a sum.
      const K = a.shape[a.rank - 1]!;
      const N = dy.shape[dy.rank - 1]!;
      db = g.matmul(g.mT(g.reshape(f(a), [-1, K])), g.reshape(dy, [-1, N]));
    } else db = sumToShape(g.matmul(g.mT(f(a)), dy), b.shape);
  }
  return [da, db];
};

R['reduce_sum'] = (t, dy) => [g.expand(g.reshape(dy, keepShape(t)), t.inputs[0]!.shape)];
R['reduce_mean'] = (t, dy) => {
  const x = t.inputs[0]!;
  return [g.expand(g.reshape(g.mul(dy, inverseCount(x, t.attrs['axes'] as number[])), keepShape(t)), x.shape)];
};
// Ties share the gradient equally, like torch.amax.
R['reduce_max'] = (t, dy, _n, f) => {
  const x = f(t.inputs[0]!);
  const axes = t.attrs['axes'] as number[];
  const mask = g.equal(x, g.reshape(f(t), keepShape(t)));
  const count = g.sum(g.cast(mask, x.dtype), axes, true);
  return [g.where(mask, g.div(g.reshape(dy, keepShape(t)), count), 0)];
};

R['reshape'] = (t, dy) => [g.reshape(dy, t.inputs[0]!.shape)];
R['transpose'] = (t, dy) => {
  const perm = t.attrs['perm'] as number[];
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => (inv[p] = i));
  return [g.transpose(dy, inv)];
};
R['concat'] = (t, dy) => {
  const axis = t.attrs['axis'] as number;
  let o = 0;
  return t.inputs.map((x) => {
    const n = x.shape[axis];
    if (typeof n !== 'number') throw new ShapeError(`grad of concat along dynamic axis ${axis}`);
    const piece = g.slice(dy, axis, o, o + n);
    o += n;
    return piece;
  });
};
R['slice'] = (t, dy) => [sliceGrad(t, dy)];
R['pad'] = (t, dy) => {
  const pads = t.attrs['pads'] as number[];
  const x = t.inputs[0]!;
  let r = dy;
  x.shape.forEach((d, i) => {
    if (pads[i] || pads[i + x.rank]) r = g.slice(r, i, pads[i]!, pads[i]! + (d as number));
  });
  return [r];
};
R['expand'] = (t, dy) => [sumToShape(dy, t.inputs[0]!.shape)];
R['gather'] = (t, dy, need) => {
  const [table, idx] = t.inputs as [Tensor, Tensor];
  if (!need[0]) return [undefined, undefined];
  if ((t.attrs['axis'] as number) !== 0) throw new ShapeError(`grad of gather along axis ${t.attrs['axis']} (only 0 is supported)`);
  const rest = table.shape.slice(1);
  const rows = g.reshape(dy, [-1, ...rest]);
  const at = g.reshape(g.cast(idx, 'int64'), [-1, 1]);
  return [node('scatter_add', [rows, at], {}, table.dtype, table.shape), undefined];
};
R['scatter_add'] = () => {
  throw new Error('no gradient rule for scatter_add (second-order gradient of gather)');
};

R['conv2d'] = (t, dy, need, f) => {
  const [x, w, b] = t.inputs as [Tensor, Tensor, Tensor | undefined];
  const a = t.attrs;
  let dx: Tensor | undefined;
  if (need[0]) {
    const [s0, s1] = a['stride'] as number[];
    const [d0, d1] = a['dilation'] as number[];
    const pads = a['pads'] as number[];
    const [, , H, W] = x.shape as number[];
    const [, , kh, kw] = w.shape as number[];
    const [, , oh, ow] = t.shape as number[];
    // Rows/cols the strided forward never reached must come back as output padding of the adjoint.
    const op0 = H! - (s0! * (oh! - 1) + d0! * (kh! - 1) + 1 - pads[0]! - pads[2]!);
    const op1 = W! - (s1! * (ow! - 1) + d1! * (kw! - 1) + 1 - pads[1]! - pads[3]!);
    dx = g.convTranspose2d(dy, f(w), { stride: [s0!, s1!], pads, dilation: [d0!, d1!], groups: a['groups'] as number, outputPadding: [op0, op1] });
  }
  const dw = need[1] ? convWeightGrad(f(x), dy, w, a) : undefined;
  const db = b && need[2] ? g.sum(dy, [0, 2, 3]) : undefined;
  return [dx, dw, db];
};
R['conv_transpose2d'] = (t, dy, need, f) => {
  if (need[1]) throw new Error('no gradient rule for the weight of conv_transpose2d');
  const a = t.attrs;
  return [
    g.conv2d(dy, f(t.inputs[1]!), undefined, {
      stride: a['stride'] as [number, number],
      padding: a['pads'] as [number, number, number, number],
      dilation: a['dilation'] as [number, number],
      groups: a['groups'] as number,
    }),
    undefined,
  ];
};

/**
 * y = (x - mean) / sqrt(var + eps) over axes axis..end, rebuilt from x in the backward pass (the statistics
 * are needed anyway, so keeping the forward's y as well would only cost memory), and dx given dL/dy.
 */
function normalizeBackward(x: Tensor, dy: Tensor, axis: number, eps: number): { y: Tensor; dx: Tensor } {
  const axes = Array.from({ length: x.rank - axis }, (_, i) => axis + i);
  const xc = g.sub(x, g.mean(x, axes, true));
  const rstd = g.rsqrt(g.add(g.mean(g.mul(xc, xc), axes, true), eps));
  const y = g.mul(xc, rstd);
  const inner = g.sub(g.sub(dy, g.mean(dy, axes, true)), g.mul(y, g.mean(g.mul(dy, y), axes, true)));
  return { y, dx: g.mul(inner, rstd) };
}

R['normalize'] = (t, dy, _n, f) => [normalizeBackward(f(t.inputs[0]!), dy, t.attrs['axis'] as number, t.attrs['eps'] as number).dx];
R['layer_norm'] = (t, dy, need, f) => {
  const [x, gamma, beta] = t.inputs.map(f) as [Tensor, Tensor, Tensor | undefined];
  const eps = t.attrs['eps'] as number;
  const { y: xhat, dx } = normalizeBackward(x, g.mul(dy, gamma), x.rank - 1, eps);
  return [
    need[0] ? dx : undefined,
    need[1] ? sumToShape(g.mul(dy, xhat), gamma.shape) : undefined,
    beta && need[2] ? sumToShape(dy, beta.shape) : undefined,
  ];
};
R['softmax'] = (t, dy, _n, f) => {
  const y = f(t);
  const axis = t.attrs['axis'] as number;
  return [g.mul(y, g.sub(dy, g.sum(g.mul(dy, y), axis, true)))];
};
R['log_softmax'] = (t, dy, _n, f) => {
  const axis = t.attrs['axis'] as number;
  return [g.sub(dy, g.mul(g.exp(f(t)), g.sum(dy, axis, true)))];
};
R['upsample_nearest'] = (t, dy) => {
  const s = t.attrs['scale'] as number;
  const [N, C, H, W] = t.inputs[0]!.shape;
  return [g.sum(g.reshape(dy, [N!, C!, H!, s, W!, s]), [3, 5])];
};
R['causal_mask'] = (t, dy) => [node('causal_mask', [dy], { ...t.attrs, fill: 0 }, dy.dtype, dy.shape)];
/** Above this many score elements per head, the attention backward walks the queries in row chunks. */
export const MHA_BACKWARD_CHUNK_ELEMENTS = 1 << 20;

// Attention backward from the probabilities P = softmax(s * q k^T): dV = P^T dO, dS = P * (dO V^T - D),
// dQ = s * dS K, dK = s * dS^T Q, where D = rowsum(P * dO V^T) = rowsum(dO * O) (Dao et al. 2022): a
// [T, Dv] product instead of one more pass over [T, S]. P is recomputed here: the fused forward never
// materialises it. Large attentions (SD's 4096 x 4096 per head) go by query-row chunks, so only one chunk's
// [rows, S] P, dP and dS exist at a time instead of several full score tensors.
R['mha'] = (t, dy, need, f) => {
  const [q, k, v] = t.inputs.map(f) as [Tensor, Tensor, Tensor];
  const heads = t.attrs['heads'] as number;
  const scale = t.attrs['scale'] as number;
  const causal = t.attrs['causal'] === true;
  const qh = g.splitHeads(q, heads);
  const kh = g.splitHeads(k, heads);
  const vh = g.splitHeads(v, heads);
  const dO = g.splitHeads(dy, heads);
  const T = qh.shape[2]!;
  const S = kh.shape[2]!;
  const chunked = typeof T === 'number' && typeof S === 'number' && T * S > MHA_BACKWARD_CHUNK_ELEMENTS;
  const rows = chunked ? Math.max(1, Math.floor(MHA_BACKWARD_CHUNK_ELEMENTS / (S as number))) : 0;
  const ranges: [number, number][] = chunked ? [] : [[0, 0]];
  if (chunked) for (let r = 0; r < (T as number); r += rows) ranges.push([r, Math.min(T as number, r + rows)]);
  const khT = g.mT(kh);
  const rowDot = need[0] || need[1] ? g.sum(g.mul(dO, g.splitHeads(f(t), heads)), -1, true) : undefined;
  let dv: Tensor | undefined;
  let dk: Tensor | undefined;
  const dqParts: Tensor[] = [];
  // Each chunk starts only once the previous one is finished (its dQ rows and the dK, dV sums so far), so ORT
  // runs them one after another and frees each chunk's [rows, S] tensors before the next one's exist.
  let after: Tensor | undefined;
  for (const [r0, r1] of ranges) {
    const gated = (x: Tensor) => (after ? g.add(x, after) : x);
    const qc = chunked ? gated(g.slice(qh, 2, r0, r1)) : qh;
    const dOc = chunked ? gated(g.slice(dO, 2, r0, r1)) : dO;
    let sc = g.matmul(g.mul(qc, scale), khT);
    if (causal) sc = chunked ? g.causalMask(sc, r0 + (S as number) - (T as number)) : g.causalMask(sc);
    const p = g.softmax(sc, -1);
    if (need[2]) {
      const part = g.matmul(g.mT(p), dOc);
      dv = dv ? g.add(dv, part) : part;
    }
    if (need[0] || need[1]) {
      const dp = g.matmul(dOc, g.mT(vh));
      const ds = g.mul(p, g.sub(dp, chunked ? g.slice(rowDot!, 2, r0, r1) : rowDot!));
      if (need[0]) dqParts.push(g.matmul(ds, kh));
      if (need[1]) {
        const part = g.matmul(g.mT(ds), qc);
        dk = dk ? g.add(dk, part) : part;
      }
    }
    if (chunked) after = g.add(g.add(zeroAfter(dqParts.at(-1) ?? qc), zeroAfter(dk ?? qc)), zeroAfter(dv ?? qc));
  }
  return [
    need[0] ? g.mergeHeads(g.mul(g.concat(dqParts, 2), scale)) : undefined,
    need[1] ? g.mergeHeads(g.mul(dk!, scale)) : undefined,
    need[2] ? g.mergeHeads(dv!) : undefined,
  ];
};
R['after'] = (_t, dy) => [dy, undefined];
R['flip'] = (t, dy) => [g.flip(dy, t.attrs['axes'] as number[])];
R['rand_like'] = () => [undefined];
R['dim_size'] = () => [undefined];

export const VJP_RULES: Readonly<Record<string, VjpRule>> = R;
