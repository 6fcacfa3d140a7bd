import { createHash } from 'node:crypto';
import { allocArray, toHalfBits, type AnyTypedArray, type DType } from '../graph/dtype.ts';
import { requireStatic } from '../graph/shape.ts';
import { topoSort, type Dim, Tensor } from '../graph/tensor.ts';
import { geluComposite, mhaComposite } from '../graph/ops-nn.ts';
import { encodeModel, ONNX_DTYPE, type AttrValue, type NodeDef, type TensorInit, type ValueInfo } from './model.ts';

export const OPSET = 21;

export type WeightsMode = 'inputs' | 'initializers' | 'external';

export interface LowerOptions {
  /**
   * 'inputs' feeds parameters at every run (no copy, no 2 GB limit, in-place updates seen).
   * 'initializers' bakes them into the protobuf (2 GB limit). 'external' bakes them as in-memory external
   * data (no 2 GB limit). Baked weights let ORT pre-pack them (e.g. NCHWc conv), but are a snapshot.
   */
  weights?: WeightsMode;
  /** 'auto' lowers multi-head attention to ORT's fused com.microsoft kernel where it applies; 'standard' never does. */
  attention?: 'auto' | 'standard';
  /** Parameters always fed as inputs whatever `weights` says (the trainable ones). */
  alwaysFeed?: ReadonlySet<Tensor>;
  graphName?: string;
}

export interface LoweredGraph {
  bytes: Uint8Array;
  /** Graph inputs in the model's order: `input` nodes, then parameters when fed as inputs. */
  feeds: Tensor[];
  outputNames: string[];
  /** sha256 of the bytes: equal graphs give equal keys. */
  key: string;
  /** In-memory external data for `weights: 'external'`: ORT session option `externalData`. */
  externalData: { path: string; data: Uint8Array }[];
  /** Whether any value is float64 (ORT's fusions are float32/float16-only and mis-fire on float64). */
  hasFloat64: boolean;
}

const raw = (a: AnyTypedArray): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const I64_MAX = Number.MAX_SAFE_INTEGER;
const I64_MIN = -Number.MAX_SAFE_INTEGER;

export class LowerContext {
  readonly nodes: NodeDef[] = [];
  readonly inits: TensorInit[] = [];
  private readonly values = new Map<Tensor, string>();
  private readonly cse = new Map<string, string>();
  private readonly consts = new Map<string, string>();
  private readonly dimSource = new Map<string, { value: string; axis: number }>();
  private readonly dimValue = new Map<string, string>();
  private counter = 0;
  /** Non-default operator-set domains used (com.microsoft for the fused attention). */
  readonly domains = new Set<string>();
  constructor(readonly attention: 'auto' | 'standard' = 'auto') {}

  has(t: Tensor): boolean {
    return this.values.has(t);
  }

  /** Lowers `t` and whatever of its sub-graph is not lowered yet (composite expansions of a primitive). */
  lowerTensor(t: Tensor): string {
    for (const n of topoSort([t])) if (!this.values.has(n)) this.lowerNode(n);
    return this.value(t);
  }

  lowerNode(t: Tensor): void {
    if (t.op === 'const') {
      this.setValue(t, this.constant(t.value!, requireStatic(t.shape, 'const'), t.dtype));
      return;
    }
    const fn = LOWERERS[t.op];
    if (!fn) throw new Error(`lower: no ONNX lowering for op ${t.op}`);
    this.setValue(t, fn(this, t, t.inputs.map((i) => this.value(i))));
  }

  value(t: Tensor): string {
    const v = this.values.get(t);
    if (v === undefined) throw new Error(`lower: ${t} used before it was lowered`);
    return v;
  }

  setValue(t: Tensor, name: string): void {
    this.values.set(t, name);
    t.shape.forEach((d, axis) => {
      if (typeof d === 'string' && !this.dimSource.has(d)) this.dimSource.set(d, { value: name, axis });
    });
  }

  /** Emits one ONNX node (or reuses an identical earlier one) and returns its output name. */
  emit(opType: string, inputs: readonly string[], attrs?: Record<string, AttrValue>, o: { unique?: boolean; domain?: string } = {}): string {
    const key = o.unique ? undefined : `${o.domain ?? ''}${opType}(${inputs.join(',')})${attrs ? JSON.stringify(attrs, (_k, v) => (v instanceof Uint8Array ? [...v] : v)) : ''}`;
    if (key !== undefined) {
      const hit = this.cse.get(key);
      if (hit) return hit;
    }
    const out = `%v${this.counter++}`;
    if (o.domain) this.domains.add(o.domain);
    this.nodes.push({ opType, inputs, outputs: [out], name: `%n${this.nodes.length}`, attrs, domain: o.domain });
    if (key !== undefined) this.cse.set(key, out);
    return out;
  }

  /** An initializer holding `data`; identical constants (e.g. one causal mask per layer) share one initializer. */
  constant(data: AnyTypedArray, dims: readonly number[], dtype: DType): string {
    const bytes = raw(data);
    const content = bytes.byteLength <= 256 ? Buffer.from(bytes).toString('hex') : createHash('sha256').update(bytes).digest('hex');
    const key = `${dtype}[${dims}]${content}`;
    const hit = this.consts.get(key);
    if (hit) return hit;
    const name = `%c${this.inits.length}`;
    this.inits.push({ name, dtype, dims, raw: bytes });
    this.consts.set(key, name);
    return name;
  }

  i64(values: readonly number[]): string {
    return this.constant(BigInt64Array.from(values, (v) => BigInt(v)), [values.length], 'int64');
  }

  scalar(v: number, dtype: DType): string {
    const a = allocArray(dtype, 1);
    if (a instanceof BigInt64Array) a[0] = BigInt(v);
    else if (dtype === 'float16') a[0] = toHalfBits(v);
    else a[0] = v;
    return this.constant(a, [], dtype);
  }

  /** A 1-D int64 shape tensor; named dimensions are read at run time from a value that has them. */
  shape(dims: readonly Dim[]): string {
    if (dims.every((d) => typeof d === 'number')) return this.i64(dims as number[]);
    const parts = dims.map((d) => (typeof d === 'number' ? this.i64([d]) : this.dim(d)));
    return this.emit('Concat', parts, { axis: { kind: 'int', v: 0 } });
  }

  private dim(d: string): string {
    const hit = this.dimValue.get(d);
    if (hit) return hit;
    const src = this.dimSource.get(d);
    if (!src) throw new Error(`lower: no value carries dynamic dimension ${d}`);
    const v = this.emit('Shape', [src.value], { start: { kind: 'int', v: src.axis }, end: { kind: 'int', v: src.axis + 1 } });
    this.dimValue.set(d, v);
    return v;
  }
}

const int = (v: number): AttrValue => ({ kind: 'int', v });
const ints = (v: readonly number[]): AttrValue => ({ kind: 'ints', v });
const str = (v: string): AttrValue => ({ kind: 'string', v });
const flt = (v: number): AttrValue => ({ kind: 'float', v });

function oneTensor(dtype: DType, v: number): AttrValue {
  const a = allocArray(dtype, 1);
  if (a instanceof BigInt64Array) a[0] = BigInt(v);
  else a[0] = dtype === 'float16' ? toHalfBits(v) : v;
  return { kind: 'tensor', v: { name: 'value', dtype, dims: [1], raw: raw(a) } };
}

type Lowerer = (cx: LowerContext, t: Tensor, ins: string[]) => string;

const simple =
  (opType: string): Lowerer =>
  (cx, _t, ins) =>
    cx.emit(opType, ins);

const reduceOp =
  (opType: string): Lowerer =>
  (cx, t, ins) =>
    cx.emit(opType, [ins[0]!, cx.i64(t.attrs['axes'] as number[])], { keepdims: int(t.attrs['keepdims'] ? 1 : 0) });

const a = (t: Tensor, k: string) => t.attrs[k] as number[];

/** One entry per DSL primitive; each maps to standard ONNX (opset 21) ops only. */
export const LOWERERS: Record<string, Lowerer> = {
  add: simple('Add'),
  sub: simple('Sub'),
  mul: simple('Mul'),
  div: simple('Div'),
  pow: simple('Pow'),
  max: simple('Max'),
  min: simple('Min'),
  less: simple('Less'),
  greater: simple('Greater'),
  equal: simple('Equal'),
  exp: simple('Exp'),
  log: simple('Log'),
  sqrt: simple('Sqrt'),
  rsqrt: (cx, _t, ins) => cx.emit('Reciprocal', [cx.emit('Sqrt', ins)]),
  reciprocal: simple('Reciprocal'),
  tanh: simple('Tanh'),
  sigmoid: simple('Sigmoid'),
  erf: simple('Erf'),
  sin: simple('Sin'),
  cos: simple('Cos'),
  neg: simple('Neg'),
  abs: simple('Abs'),
  sign: simple('Sign'),
  relu: simple('Relu'),
  where: simple('Where'),
  matmul: simple('MatMul'),
  cast: (cx, t, ins) => cx.emit('Cast', ins, { to: int(ONNX_DTYPE[t.attrs['to'] as DType]) }),
  reduce_sum: reduceOp('ReduceSum'),
  reduce_mean: reduceOp('ReduceMean'),
  reduce_max: reduceOp('ReduceMax'),
  reshape: (cx, t, ins) => cx.emit('Reshape', [ins[0]!, cx.shape(t.attrs['shape'] as Dim[])]),
  // A reshape to x's own shape whose shape input is computed from the gate: min(max(int(gate), 0), 0) is 0
  // whatever the gate holds (NaN included), and the runtime cannot know that before the gate exists.
  after: (cx, t, ins) => {
    const zero = cx.i64([0]);
    const nothing = cx.emit('Min', [cx.emit('Max', [cx.emit('Cast', [ins[1]!], { to: int(ONNX_DTYPE.int64) }), zero]), zero]);
    return cx.emit('Reshape', [ins[0]!, cx.emit('Add', [cx.shape(t.shape), nothing])]);
  },
  transpose: (cx, t, ins) => cx.emit('Transpose', ins, { perm: ints(a(t, 'perm')) }),
  concat: (cx, t, ins) => cx.emit('Concat', ins, { axis: int(t.attrs['axis'] as number) }),
  // One Slice with step -1 on every flipped axis: a single strided copy.
  flip: (cx, t, ins) => {
    const axes = t.attrs['axes'] as number[];
    return cx.emit('Slice', [ins[0]!, cx.i64(axes.map(() => -1)), cx.i64(axes.map(() => I64_MIN)), cx.i64(axes), cx.i64(axes.map(() => -1))]);
  },
  slice: (cx, t, ins) => {
    const end = t.attrs['end'];
    return cx.emit('Slice', [
      ins[0]!,
      cx.i64([t.attrs['start'] as number]),
      cx.i64([end === null ? I64_MAX : (end as number)]),
      cx.i64([t.attrs['axis'] as number]),
      cx.i64([t.attrs['step'] as number]),
    ]);
  },
  pad: (cx, t, ins) =>
    cx.emit('Pad', [ins[0]!, cx.i64(a(t, 'pads')), cx.scalar(t.attrs['value'] as number, t.dtype)], { mode: str('constant') }),
  gather: (cx, t, ins) => cx.emit('Gather', ins, { axis: int(t.attrs['axis'] as number) }),
  scatter_add: (cx, t, ins) => {
    const zeros = cx.emit('ConstantOfShape', [cx.shape(t.shape)], { value: oneTensor(t.dtype, 0) });
    return cx.emit('ScatterND', [zeros, ins[1]!, ins[0]!], { reduction: str('add') });
  },
  expand: (cx, t, ins) => cx.emit('Expand', [ins[0]!, cx.shape(t.shape)]),
  conv2d: (cx, t, ins) => {
    const w = t.inputs[1]!.shape as number[];
    return cx.emit('Conv', ins, {
      strides: ints(a(t, 'stride')),
      pads: ints(a(t, 'pads')),
      dilations: ints(a(t, 'dilation')),
      group: int(t.attrs['groups'] as number),
      kernel_shape: ints(w.slice(2)),
    });
  },
  conv_transpose2d: (cx, t, ins) => {
    const w = t.inputs[1]!.shape as number[];
    return cx.emit('ConvTranspose', ins, {
      strides: ints(a(t, 'stride')),
      pads: ints(a(t, 'pads')),
      dilations: ints(a(t, 'dilation')),
      group: int(t.attrs['groups'] as number),
      kernel_shape: ints(w.slice(2)),
      output_padding: ints(a(t, 'outputPadding')),
    });
  },
  normalize: (cx, t, ins) => {
    const axis = t.attrs['axis'] as number;
    const scale = cx.emit('ConstantOfShape', [cx.shape(t.shape.slice(axis))], { value: oneTensor(t.dtype, 1) });
    return cx.emit('LayerNormalization', [ins[0]!, scale], { axis: int(axis), epsilon: flt(t.attrs['eps'] as number) });
  },
  layer_norm: (cx, t, ins) =>
    cx.emit('LayerNormalization', ins, { axis: int(t.rank - 1), epsilon: flt(t.attrs['eps'] as number) }),
  softmax: (cx, t, ins) => cx.emit('Softmax', ins, { axis: int(t.attrs['axis'] as number) }),
  log_softmax: (cx, t, ins) => cx.emit('LogSoftmax', ins, { axis: int(t.attrs['axis'] as number) }),
  upsample_nearest: (cx, t, ins) => {
    const s = t.attrs['scale'] as number;
    return cx.emit('Resize', [ins[0]!, '', cx.constant(new Float32Array([1, 1, s, s]), [4], 'float32')], {
      mode: str('nearest'),
      coordinate_transformation_mode: str('asymmetric'),
      nearest_mode: str('floor'),
    });
  },
  causal_mask: (cx, t, ins) => {
    const T = t.shape[t.rank - 2]!;
    const S = t.shape[t.rank - 1]!;
    let mask: string;
    if (typeof T === 'number' && typeof S === 'number') {
      const m = new Uint8Array(T * S);
      const off = t.attrs['offset'] as number;
      for (let i = 0; i < T; i++) for (let j = 0; j < S; j++) m[i * S + j] = j <= i + off ? 1 : 0;
      mask = cx.constant(m, [T, S], 'bool');
    } else {
      const ones = cx.emit('ConstantOfShape', [cx.shape([T, S])], { value: oneTensor('float32', 1) });
      mask = cx.emit('Cast', [cx.emit('Trilu', [ones], { upper: int(0) })], { to: int(ONNX_DTYPE.bool) });
    }
    return cx.emit('Where', [mask, ins[0]!, cx.scalar(t.attrs['fill'] === '-inf' ? -Infinity : 0, t.dtype)]);
  },
  dim_size: (cx, t, ins) => {
    const axis = t.attrs['axis'] as number;
    const n = cx.emit('Shape', ins, { start: int(axis), end: int(axis + 1) });
    return cx.emit('Reshape', [cx.emit('Cast', [n], { to: int(ONNX_DTYPE[t.dtype]) }), cx.i64([])]);
  },
  gelu: (cx, t) => cx.lowerTensor(geluComposite(t.inputs[0]!)),
  silu: (cx, _t, ins) => cx.emit('Mul', [ins[0]!, cx.emit('Sigmoid', ins)]),
  rand_like: (cx, t, ins) =>
    cx.emit('RandomUniformLike', ins, { dtype: int(ONNX_DTYPE[t.dtype]), low: flt(0), high: flt(1) }, { unique: true }),
  mha: (cx, t) => {
    const [q, k] = t.inputs as [Tensor, Tensor];
    const causal = t.attrs['causal'] === true;
    const T = q.shape[1];
    const S = k.shape[1];
    // ORT's CPU MultiHeadAttention never materialises the [B, H, T, S] scores (71 MB vs 1090 MB peak on SD's
    // 64x64 self-attention, same speed with a warm arena); float64 has no kernel, and its causal mask only
    // matches ours when T == S.
    const contrib = cx.attention === 'auto' && t.dtype !== 'float64' && (!causal || T === S);
    if (!contrib) return cx.lowerTensor(mhaComposite(t));
    return cx.emit('MultiHeadAttention', t.inputs.map((i) => cx.value(i)), {
      num_heads: int(t.attrs['heads'] as number),
      scale: flt(t.attrs['scale'] as number),
      ...(causal ? { unidirectional: int(1) } : {}),
    }, { domain: 'com.microsoft' });
  },
};

function valueInfo(name: string, t: Tensor): ValueInfo {
  return { name, dtype: t.dtype, dims: t.shape };
}

const bufferIds = new WeakMap<ArrayBufferLike, number>();
let nextBufferId = 1;
function bufferId(a: Uint8Array): string {
  let id = bufferIds.get(a.buffer);
  if (id === undefined) bufferIds.set(a.buffer, (id = nextBufferId++));
  return `${id}@${a.byteOffset}+${a.byteLength}`;
}

/** Lowers the sub-graph that computes `outputs` to ONNX ModelProto bytes. */
export function lower(outputs: readonly Tensor[], opts: LowerOptions = {}): LoweredGraph {
  const weights = opts.weights ?? 'inputs';
  const cx = new LowerContext(opts.attention);
  const order = topoSort(outputs);
  const inputs: Tensor[] = [];
  const params: Tensor[] = [];
  const externalData: { path: string; data: Uint8Array }[] = [];
  const names = new Map<string, Tensor>();
  const claim = (t: Tensor) => {
    const n = t.name!;
    if (n.startsWith('%') || /^out\d+$/.test(n)) throw new Error(`lower: name ${n} is reserved for internal values`);
    const prev = names.get(n);
    if (prev && prev !== t) throw new Error(`lower: two different tensors named ${n}: ${prev} and ${t}`);
    names.set(n, t);
  };
  // Leaves first, so every named dimension has a source before any op needs it.
  for (const t of order) {
    if (t.op === 'input') {
      claim(t);
      inputs.push(t);
      cx.setValue(t, t.name!);
    } else if (t.op === 'param') {
      claim(t);
      if (weights !== 'inputs' && !opts.alwaysFeed?.has(t)) {
        if (!t.value) throw new Error(`lower: parameter ${t.name} has no bound buffer to bake in`);
        const dims = requireStatic(t.shape, `param ${t.name}`);
        if (weights === 'initializers') cx.inits.push({ name: t.name!, dtype: t.dtype, dims, raw: raw(t.value) });
        else {
          const path = `w${externalData.length}.bin`;
          externalData.push({ path, data: raw(t.value) });
          cx.inits.push({ name: t.name!, dtype: t.dtype, dims, external: { location: path, offset: 0, length: t.value.byteLength } });
        }
      } else params.push(t);
      cx.setValue(t, t.name!);
    }
  }
  for (const t of order) if (!cx.has(t)) cx.lowerNode(t);
  const outputNames = outputs.map((_, i) => `out${i}`);
  outputs.forEach((o, i) => cx.nodes.push({ opType: 'Identity', inputs: [cx.value(o)], outputs: [outputNames[i]!], name: `out_n${i}` }));
  const feeds = [...inputs, ...params];
  const bytes = encodeModel({
    graphName: opts.graphName ?? 'g',
    nodes: cx.nodes,
    inputs: feeds.map((t) => valueInfo(t.name!, t)),
    outputs: outputs.map((o, i) => valueInfo(outputNames[i]!, o)),
    initializers: cx.inits,
    opset: OPSET,
    extraOpsets: [...cx.domains].sort().map((domain) => ({ domain, version: 1 })),
  });
  const hasFloat64 = order.some((t) => t.dtype === 'float64');
  const h = createHash('sha256').update(bytes);
  // External weights are not in the bytes: key them by buffer identity (a baked session is a snapshot).
  for (const e of externalData) h.update(`|${bufferId(e.data)}`);
  return { bytes, feeds, outputNames, key: h.digest('hex'), externalData, hasFloat64 };
}
