import { UserError } from '../util/errors.ts';
import { arrayFrom, isFloat, type AnyTypedArray, type DType } from './dtype.ts';
import { broadcastShapes, dimProduct, dimQuotient, fmt, normAxis, ShapeError, staticSize } from './shape.ts';
import { node, Tensor, type Dim, type Shape } from './tensor.ts';

export type TensorLike = Tensor | number;

// ---------- leaves ----------

/** A graph input fed at run time, e.g. `input('x', 'float32', ['B', 4, 64, 64])`. */
export function input(name: string, dtype: DType, shape: Shape): Tensor {
  return node('input', [], { name }, dtype, shape);
}

/**
 * A trainable or frozen weight with a fixed shape, optionally bound to its buffer now (`data`) or later
 * (`bind`), or given at run time. Buffers are read at each run, so in-place optimizer updates are seen.
 */
export function param(name: string, shape: readonly number[], data?: AnyTypedArray, dtype: DType = 'float32'): Tensor {
  const p = node('param', [], { name }, dtype, shape);
  if (data) bind(p, data);
  return p;
}

/** Binds (or rebinds) a parameter's weight buffer; checks its length against the declared shape. */
export function bind(p: Tensor, data: AnyTypedArray): void {
  if (p.op !== 'param') throw new Error(`bind: ${p} is not a parameter`);
  const n = staticSize(p.shape)!;
  if (data.length !== n) throw new UserError(`weight ${p.name}: expected ${n} elements for shape ${fmt(p.shape)}, got ${data.length}`);
  p.value = data;
}

/** A constant baked into the graph. */
export function constant(values: ArrayLike<number> | AnyTypedArray, shape: readonly number[], dtype: DType = 'float32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (values.length !== n) throw new ShapeError(`constant: ${values.length} values for shape ${fmt(shape)}`);
  const data = ArrayBuffer.isView(values) ? (values as AnyTypedArray) : arrayFrom(dtype, values as ArrayLike<number>);
  return node('const', [], {}, dtype, shape, data);
}

export function scalar(v: number, dtype: DType = 'float32'): Tensor {
  return constant([v], [], dtype);
}

/** A tensor of `shape` filled with `v`, broadcast at run time rather than stored. */
export function full(shape: readonly Dim[], v: number, dtype: DType = 'float32'): Tensor {
  return expand(scalar(v, dtype), shape);
}
export const zeros = (shape: readonly Dim[], dtype: DType = 'float32'): Tensor => full(shape, 0, dtype);
export const ones = (shape: readonly Dim[], dtype: DType = 'float32'): Tensor => full(shape, 1, dtype);

function lift(x: TensorLike, like: Tensor): Tensor {
  return typeof x === 'number' ? scalar(x, like.dtype) : x;
}

/** The constant value of a scalar node, or undefined; lets ops skip `x * 1` and `x + 0`. */
export function constValue(t: Tensor): number | undefined {
  if (t.op !== 'const' || t.value === undefined || t.value.length !== 1) return undefined;
  const v = t.value[0]!;
  return typeof v === 'bigint' ? Number(v) : t.dtype === 'float16' ? undefined : v;
}

// ---------- elementwise ----------

function binary(op: string, a: TensorLike, b: TensorLike, outDtype?: DType): Tensor {
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op}: needs at least one tensor`);
  const ta = typeof a === 'number' ? lift(a, b as Tensor) : a;
  const tb = lift(b, ta);
  if (ta.dtype !== tb.dtype) throw new ShapeError(`${op}: dtype mismatch ${ta} vs ${tb}`);
  return node(op, [ta, tb], {}, outDtype ?? ta.dtype, broadcastShapes(ta.shape, tb.shape, `${op}(${ta}, ${tb})`));
}

export function add(a: TensorLike, b: TensorLike): Tensor {
  if (typeof b === 'number' && b === 0 && typeof a !== 'number') return a;
  return binary('add', a, b);
}
export const sub = (a: TensorLike, b: TensorLike): Tensor =>
  typeof b === 'number' && b === 0 && typeof a !== 'number' ? a : binary('sub', a, b);
export function mul(a: TensorLike, b: TensorLike): Tensor {
  if (typeof b === 'number' && b === 1 && typeof a !== 'number') return a;
  if (typeof a === 'number' && a === 1 && typeof b !== 'number') return b;
  return binary('mul', a, b);
}
export const div = (a: TensorLike, b: TensorLike): Tensor =>
  typeof b === 'number' && b === 1 && typeof a !== 'number' ? a : binary('div', a, b);
export const pow = (a: TensorLike, b: TensorLike): Tensor => binary('pow', a, b);
/** Elementwise maximum / minimum (use `max`/`min` for reductions). */
export const maximum = (a: TensorLike, b: TensorLike): Tensor => binary('max', a, b);
export const minimum = (a: TensorLike, b: TensorLike): Tensor => binary('min', a, b);
export const less = (a: TensorLike, b: TensorLike): Tensor => binary('less', a, b, 'bool');
export const greater = (a: TensorLike, b: TensorLike): Tensor => binary('greater', a, b, 'bool');
export const equal = (a: TensorLike, b: TensorLike): Tensor => binary('equal', a, b, 'bool');

function unary(op: string, x: Tensor): Tensor {
  if (!isFloat(x.dtype) && op !== 'neg' && op !== 'abs' && op !== 'sign') throw new ShapeError(`${op}: needs a float tensor, got ${x}`);
  return node(op, [x], {}, x.dtype, x.shape);
}
export const exp = (x: Tensor): Tensor => unary('exp', x);
export const log = (x: Tensor): Tensor => unary('log', x);
export const sqrt = (x: Tensor): Tensor => unary('sqrt', x);
export const rsqrt = (x: Tensor): Tensor => unary('rsqrt', x);
export const reciprocal = (x: Tensor): Tensor => unary('reciprocal', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const erf = (x: Tensor): Tensor => unary('erf', x);
export const neg = (x: Tensor): Tensor => unary('neg', x);
export const abs = (x: Tensor): Tensor => unary('abs', x);
export const sign = (x: Tensor): Tensor => unary('sign', x);
export const relu = (x: Tensor): Tensor => unary('relu', x);
export const sin = (x: Tensor): Tensor => unary('sin', x);
export const cos = (x: Tensor): Tensor => unary('cos', x);
export const square = (x: Tensor): Tensor => mul(x, x);
/** Clamps elementwise to [lo, hi]. */
export const clamp = (x: Tensor, lo: number, hi: number): Tensor => minimum(maximum(x, lo), hi);

/** `cond ? a : b` elementwise, with broadcasting. */
export function where(cond: Tensor, a: TensorLike, b: TensorLike): Tensor {
  if (cond.dtype !== 'bool') throw new ShapeError(`where: condition must be bool, got ${cond}`);
  const like = typeof a === 'number' ? (b as Tensor) : a;
  const ta = lift(a, like);
  const tb = lift(b, like);
  if (ta.dtype !== tb.dtype) throw new ShapeError(`where: dtype mismatch ${ta} vs ${tb}`);
  const s = broadcastShapes(broadcastShapes(cond.shape, ta.shape, 'where'), tb.shape, 'where');
  return node('where', [cond, ta, tb], {}, ta.dtype, s);
}

/**
 * `x` unchanged, but only once `gate` (a float scalar) exists: an ordering edge for the runtime that copies
 * nothing, and a node the runtime cannot merge with another use of `x`.
 */
export function after(x: Tensor, gate: Tensor): Tensor {
  if (gate.rank !== 0 || !isFloat(gate.dtype)) throw new ShapeError(`after ${x}: the gate must be a float scalar, got ${gate}`);
  return node('after', [x, gate], {}, x.dtype, x.shape);
}

export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  return node('cast', [x], { to: dtype }, dtype, x.shape);
}

// ---------- reductions ----------

function reduceAxes(x: Tensor, axes: number | readonly number[] | undefined): number[] {
  if (axes === undefined) return x.shape.map((_, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  return [...new Set(list.map((a) => normAxis(a, x.rank, 'reduce')))].sort((a, b) => a - b);
}

function reduce(op: string, x: Tensor, axes: number | readonly number[] | undefined, keepdims: boolean): Tensor {
  const ax = reduceAxes(x, axes);
  if (ax.length === 0) return x;
  const shape = keepdims ? x.shape.map((d, i) => (ax.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !ax.includes(i));
  return node(op, [x], { axes: ax, keepdims }, x.dtype, shape);
}

/** Sum over `axes` (all when omitted). */
export const sum = (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor => reduce('reduce_sum', x, axes, keepdims);
export const mean = (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor => reduce('reduce_mean', x, axes, keepdims);
/** Max reduction (use `maximum` for the elementwise max). */
export const max = (x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor => reduce('reduce_max', x, axes, keepdims);

// ---------- shape ----------

/** Reshape; `shape` may contain one -1 and named dimensions. */
export function reshape(x: Tensor, shape: readonly Dim[]): Tensor {
  const minus = shape.filter((d) => d === -1).length;
  if (minus > 1) throw new ShapeError(`reshape ${x}: more than one -1 in ${fmt(shape)}`);
  const known = shape.filter((d) => d !== -1);
  const out = shape.map((d) => (d === -1 ? dimQuotient(x.shape, known, `reshape ${x} to ${fmt(shape)}`) : d));
  const a = dimProduct(x.shape);
  const b = dimProduct(out);
  if (a !== b) throw new ShapeError(`reshape ${x}: ${fmt(x.shape)} has ${a} elements, ${fmt(out)} has ${b}`);
  if (out.every((d, i) => d === x.shape[i]) && out.length === x.rank) return x;
  // A reshape of a reshape only needs the original (keeps backward graphs free of reshape chains).
  if (x.op === 'reshape') return reshape(x.inputs[0]!, shape);
  return node('reshape', [x], { shape: shape as Dim[] }, x.dtype, out);
}

export function transpose(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.rank || [...perm].sort().some((p, i) => p !== i)) throw new ShapeError(`transpose ${x}: bad perm [${perm}]`);
  if (perm.every((p, i) => p === i)) return x;
  if (x.op === 'transpose') {
    // Compose with the inner transpose: mT(mT(w)) in linear's backward collapses to w.
    const inner = x.attrs['perm'] as number[];
    return transpose(x.inputs[0]!, perm.map((p) => inner[p]!));
  }
  return node('transpose', [x], { perm: [...perm] }, x.dtype, perm.map((p) => x.shape[p]!));
}

/** Swaps the last two axes. */
export function mT(x: Tensor): Tensor {
  const perm = x.shape.map((_, i) => i);
  perm[x.rank - 1] = x.rank - 2;
  perm[x.rank - 2] = x.rank - 1;
  return transpose(x, perm);
}

export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

export function squeeze(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.rank, 'squeeze');
  if (x.shape[a] !== 1) throw new ShapeError(`squeeze ${x}: axis ${axis} is not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

export function concat(xs: readonly Tensor[], axis: number): Tensor {
  if (xs.length === 0) throw new ShapeError('concat: nothing to concatenate');
  if (xs.length === 1) return xs[0]!;
  const r = xs[0]!.rank;
  const a = normAxis(axis, r, 'concat');
  const parts: Dim[] = [];
  for (const x of xs) {
    if (x.rank !== r || x.dtype !== xs[0]!.dtype) throw new ShapeError(`concat: ${x} does not match ${xs[0]}`);
    x.shape.forEach((d, i) => {
      if (i !== a && d !== xs[0]!.shape[i]) throw new ShapeError(`concat: ${x} does not match ${xs[0]} off axis ${a}`);
    });
    parts.push(x.shape[a]!);
  }
  const shape = [...xs[0]!.shape];
  shape[a] = parts.every((p) => typeof p === 'number') ? (parts as number[]).reduce((p, q) => p + q, 0) : parts.join('+');
  return node('concat', xs, { axis: a }, xs[0]!.dtype, shape);
}

/**
 * `x[start:end:step]` along `axis` (negative indices count from the end; `end` defaults to the end).
 * A dynamic axis can only be sliced whole or by a fixed-size tail (`start < 0`, no end).
 */
export function slice(x: Tensor, axis: number, start: number, end: number = Infinity, step = 1): Tensor {
  const a = normAxis(axis, x.rank, 'slice');
  const d = x.shape[a]!;
  let size: Dim;
  if (typeof d === 'number') {
    const s = Math.max(0, Math.min(d, start < 0 ? start + d : start));
    const e = Math.max(0, Math.min(d, end < 0 ? end + d : end));
    size = Math.max(0, Math.ceil((e - s) / step));
    if (s === 0 && e === d && step === 1) return x;
    const shape = [...x.shape];
    shape[a] = size;
    return node('slice', [x], { axis: a, start: s, end: e, step }, x.dtype, shape);
  }
  if (step !== 1) throw new ShapeError(`slice ${x}: strided slice of dynamic axis ${a}`);
  if (start === 0 && end === Infinity) return x;
  if (start < 0 && end === Infinity) {
    const shape = [...x.shape];
    shape[a] = -start;
    return node('slice', [x], { axis: a, start, end: null, step }, x.dtype, shape);
  }
  throw new ShapeError(`slice ${x}: dynamic axis ${a} can only be sliced by a negative start`);
}

/** `x` reversed along each of `axes` (static axes). */
export function flip(x: Tensor, axes: readonly number[]): Tensor {
  const as = axes.map((a) => normAxis(a, x.rank, 'flip')).filter((a) => x.shape[a] !== 1);
  if (as.some((a) => typeof x.shape[a] !== 'number')) throw new ShapeError(`flip ${x}: dynamic axis in ${fmt(axes)}`);
  if (!as.length) return x;
  return node('flip', [x], { axes: as }, x.dtype, x.shape);
}

/** Splits along `axis` into pieces of the given sizes, or into `n` equal pieces. */
export function split(x: Tensor, sizes: number | readonly number[], axis: number): Tensor[] {
  const a = normAxis(axis, x.rank, 'split');
  const d = x.shape[a];
  if (typeof d !== 'number') throw new ShapeError(`split ${x}: axis ${a} is dynamic`);
  const list = typeof sizes === 'number' ? Array.from({ length: sizes }, () => d / sizes) : sizes;
  if (list.some((s) => !Number.isInteger(s)) || list.reduce((p, q) => p + q, 0) !== d)
    throw new ShapeError(`split ${x}: sizes [${list}] do not add up to ${d}`);
  let o = 0;
  return list.map((s) => {
    const t = slice(x, a, o, o + s);
    o += s;
    return t;
  });
}

/** Zero (constant) padding: `pads` = [begin_0, ..., begin_{r-1}, end_0, ..., end_{r-1}]. */
export function pad(x: Tensor, pads: readonly number[], value = 0): Tensor {
  if (pads.length !== 2 * x.rank) throw new ShapeError(`pad ${x}: need ${2 * x.rank} pads`);
  if (pads.every((p) => p === 0)) return x;
  const shape = x.shape.map((d, i) => {
    const p = pads[i]! + pads[i + x.rank]!;
    if (p === 0) return d;
    if (typeof d !== 'number') throw new ShapeError(`pad ${x}: dynamic axis ${i}`);
    return d + p;
  });
  return node('pad', [x], { pads: [...pads], value }, x.dtype, shape);
}

/** Rows of `table` (gathered along `axis`, default 0) at integer `indices`; the output shape is indices' shape in place of that axis. */
export function gather(table: Tensor, indices: Tensor, axis = 0): Tensor {
  if (indices.dtype !== 'int64' && indices.dtype !== 'int32') throw new ShapeError(`gather: indices must be int64/int32, got ${indices}`);
  const a = normAxis(axis, table.rank, 'gather');
  const shape = [...table.shape.slice(0, a), ...indices.shape, ...table.shape.slice(a + 1)];
  return node('gather', [table, indices], { axis: a }, table.dtype, shape);
}

/** The size of `x`'s axis as a float scalar, read at run time (for dynamic dimensions). */
export function dimSize(x: Tensor, axis: number, dtype: DType = 'float32'): Tensor {
  const a = normAxis(axis, x.rank, 'dimSize');
  const d = x.shape[a]!;
  if (typeof d === 'number') return scalar(d, dtype);
  return node('dim_size', [x], { axis: a }, dtype, []);
}

/** Broadcasts `x` to `shape`. */
export function expand(x: Tensor, shape: readonly Dim[]): Tensor {
  const s = broadcastShapes(x.shape, shape, `expand ${x}`);
  if (s.length !== shape.length || s.some((d, i) => d !== shape[i])) throw new ShapeError(`expand ${x} to ${fmt(shape)}`);
  if (x.rank === s.length && x.shape.every((d, i) => d === s[i])) return x;
  return node('expand', [x], { shape: [...shape] }, x.dtype, s);
}
