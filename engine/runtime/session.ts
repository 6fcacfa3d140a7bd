import ort from 'onnxruntime-node';
import type { AnyTypedArray, DType } from '../graph/dtype.ts';
import { fmt } from '../graph/shape.ts';
import type { Tensor } from '../graph/tensor.ts';
import { lower, type LowerOptions } from '../onnx/lower.ts';
import { UserError } from '../util/errors.ts';
import { defaultThreads, executionProviders, hasFastFloat16, logOnce, type Device } from './providers.ts';
import { toFloat16 } from './precision.ts';
import { removeOrtTraceFile } from './ort-trace-file.ts';

export interface SessionOptions {
  device?: Device;
  /** Intra-op threads; defaults to the machine's cores. */
  threads?: number;
  /** How parameters reach ORT; see LowerOptions. Default 'inputs'. */
  weights?: LowerOptions['weights'];
  /** Multi-head attention lowering: 'auto' (fused com.microsoft kernel where it applies) or 'standard'. */
  attention?: LowerOptions['attention'];
  /** Parameters fed as inputs even when `weights` bakes the others (compileTrainStep passes the trainable ones). */
  alwaysFeed?: LowerOptions['alwaysFeed'];
  /** ORT's CPU memory arena (default on); off lets peak-memory measurements see freed buffers. */
  memArena?: boolean;
  /**
   * ORT's memory pattern (default on): after the first run it plans one block for all intermediate values.
   * For a training step's long forward + backward graph that block was 0.8 GB (50%) above the peak of the
   * same values allocated one by one from the arena, so the training steps turn it off.
   */
  memPattern?: boolean;
  /** ORT graph optimisation level; 'all' by default. */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * 'float16' computes in float16 (float32 inputs, weights and outputs stay float32 at the boundary) on
   * devices with fast float16; on CPU it logs once and runs float32.
   */
  precision?: 'float32' | 'float16';
  /** Path prefix for an ORT profile (JSON written on `endProfiling()`; see profile.ts). Not cached. */
  profile?: string;
}

/** A host-side tensor: data plus its shape (float16 is raw uint16 bits, bool is uint8). */
export interface HostTensor {
  data: AnyTypedArray;
  shape: readonly number[];
  dtype: DType;
}

export type FeedValue = AnyTypedArray | { data: AnyTypedArray; shape: readonly number[] };
/** Parameter buffers by name; overrides the buffers bound to the graph's params. */
export type ParamValues = ReadonlyMap<string, AnyTypedArray> | Readonly<Record<string, AnyTypedArray>>;

const sessions = new Map<string, Promise<ort.InferenceSession>>();
// Baked external weights stay referenced for as long as their session is cached: ORT may keep pointing into
// them, and the graph that bound them may be dropped by its builder.
const keepAlive = new Map<string, readonly { data: Uint8Array }[]>();

function sessionOptions(o: SessionOptions): ort.InferenceSession.SessionOptions {
  const device = o.device ?? 'cpu';
  const threads = o.threads ?? defaultThreads();
  const eps = executionProviders(device);
  logOnce(`execution providers: ${eps.join(' > ')}; intra-op threads ${threads}`);
  return {
    executionProviders: eps,
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: o.optimization ?? 'all',
    enableCpuMemArena: o.memArena ?? true,
    enableMemPattern: o.memPattern ?? true,
    logSeverityLevel: 3,
    ...(o.profile ? { enableProfiling: true, profileFilePrefix: o.profile } : {}),
  };
}

/** Creates (or reuses) the ORT session for these model bytes; the cache key is the bytes' hash plus options. */
export function cachedSession(
  key: string,
  bytes: Uint8Array,
  o: SessionOptions,
  externalData: readonly { path: string; data: Uint8Array }[] = [],
): Promise<ort.InferenceSession> {
  const k = `${key}|${o.device ?? 'cpu'}|${o.threads ?? ''}|${o.memArena ?? true}|${o.memPattern ?? true}|${o.optimization ?? 'all'}`;
  let s = o.profile ? undefined : sessions.get(k);
  if (!s) {
    const so = sessionOptions(o);
    if (externalData.length) (so as { externalData?: unknown }).externalData = externalData;
    s = ort.InferenceSession.create(bytes, so);
    removeOrtTraceFile(s);
    if (!o.profile) {
      s.catch(() => {
        sessions.delete(k);
        keepAlive.delete(k);
      });
      sessions.set(k, s);
      if (externalData.length) keepAlive.set(k, externalData);
    }
  }
  return s;
}

/** Releases every cached session (frees ORT memory). */
export async function clearSessionCache(): Promise<void> {
  const all = [...sessions.values()];
  const held = [...keepAlive.values()];
  sessions.clear();
  keepAlive.clear();
  for (const s of all) await (await s.catch(() => undefined))?.release();
  // Only now may the external weights go.
  held.length = 0;
}

function lookup(values: ParamValues | undefined, name: string): AnyTypedArray | undefined {
  if (!values) return undefined;
  return values instanceof Map ? values.get(name) : (values as Record<string, AnyTypedArray>)[name];
}

/** Checks a fed array against its declared shape, binding named dimensions; returns the concrete shape. */
function resolveShape(t: Tensor, v: FeedValue, dims: Map<string, number>): readonly number[] {
  const data = ArrayBuffer.isView(v) ? v : v.data;
  let shape: readonly number[];
  if (ArrayBuffer.isView(v)) {
    if (t.shape.some((d) => typeof d !== 'number')) throw new UserError(`input ${t.name}: shape ${fmt(t.shape)} is dynamic, pass { data, shape }`);
    shape = t.shape as number[];
  } else shape = v.shape;
  if (shape.length !== t.rank) throw new UserError(`input ${t.name}: expected rank ${t.rank} ${fmt(t.shape)}, got ${fmt(shape)}`);
  t.shape.forEach((d, i) => {
    const got = shape[i]!;
    if (typeof d === 'number') {
      if (d !== got) throw new UserError(`input ${t.name}: expected shape ${fmt(t.shape)}, got ${fmt(shape)}`);
    } else if (!d.includes('*') && !d.includes('+')) {
      const prev = dims.get(d);
      if (prev !== undefined && prev !== got)
        throw new UserError(`input ${t.name}: dimension ${d} is ${got} here but ${prev} in another input`);
      dims.set(d, got);
    }
  });
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new UserError(`input ${t.name}: ${data.length} elements for shape ${fmt(shape)}`);
  return shape;
}

/** A graph compiled to one ORT session; `run` feeds inputs and parameter buffers and returns the outputs. */
export class CompiledGraph {
  constructor(
    readonly session: ort.InferenceSession,
    /** Graph inputs: `input` nodes, then parameters when fed as inputs. */
    readonly feeds: readonly Tensor[],
    readonly outputs: readonly Tensor[],
    private readonly outputNames: readonly string[],
    /** Baked external weights, referenced for the life of this graph (ORT may point into them). */
    private readonly externalData: readonly { data: Uint8Array }[] = [],
  ) {}

  /**
   * Runs the graph. `inputs` are keyed by input name; parameters use `params[name]` if given, else their
   * bound buffer. Buffers are wrapped, not copied, so an optimizer may update them in place between runs.
   */
  /** Writes the ORT profile of a session compiled with `profile`. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async run(inputs: Readonly<Record<string, FeedValue>>, params?: ParamValues): Promise<HostTensor[]> {
    const dims = new Map<string, number>();
    const feeds: Record<string, ort.Tensor> = {};
    for (const t of this.feeds) {
      const name = t.name!;
      if (t.op === 'input') {
        const v = inputs[name];
        if (v === undefined) throw new UserError(`input ${name}: missing from the feeds`);
        const shape = resolveShape(t, v, dims);
        let data = ArrayBuffer.isView(v) ? v : v.data;
        // Token ids often arrive as Int32Array or plain numbers; int64 inputs take BigInt64Array.
        if (t.dtype === 'int64' && !(data instanceof BigInt64Array)) data = BigInt64Array.from(data as Int32Array, (x) => BigInt(x));
        feeds[name] = new ort.Tensor(t.dtype, data as never, shape);
      } else {
        const data = lookup(params, name) ?? t.value;
        if (!data) throw new UserError(`weight ${name}: no buffer bound and none passed to run()`);
        const shape = t.shape as number[];
        if (data.length !== shape.reduce((a, b) => a * b, 1))
          throw new UserError(`weight ${name}: expected shape ${fmt(shape)}, got ${data.length} elements`);
        feeds[name] = new ort.Tensor(t.dtype, data as never, shape);
      }
    }
    const res = await this.session.run(feeds);
    return this.outputNames.map((n, i) => {
      const r = res[n]!;
      return { data: r.data as AnyTypedArray, shape: r.dims as number[], dtype: this.outputs[i]!.dtype };
    });
  }
}

/** Lowers `outputs` to ONNX and opens (or reuses) an ORT session for it. */
export async function compile(outputs: readonly Tensor[], opts: SessionOptions = {}): Promise<CompiledGraph> {
  let graphOutputs = outputs;
  if (opts.precision === 'float16') {
    const device = opts.device ?? 'cpu';
    if (hasFastFloat16(device)) graphOutputs = toFloat16(outputs);
    else logOnce(`precision: float16 requested but ${device} has no fast float16 kernels; running float32`);
  }
  const g = lower(graphOutputs, { weights: opts.weights, alwaysFeed: opts.alwaysFeed, attention: opts.attention });
  // ORT 1.30 fuses x*sigmoid(1.702x) into QuickGelu even for float64, which has no kernel; 'basic' skips fusions.
  const o = g.hasFloat64 && !opts.optimization ? { ...opts, optimization: 'basic' as const } : opts;
  const session = await cachedSession(g.key, g.bytes, o, g.externalData);
  return new CompiledGraph(session, g.feeds, outputs, g.outputNames, g.externalData);
}

/** One-shot convenience: compile (cached) and run. */
export async function evaluate(
  outputs: readonly Tensor[],
  inputs: Readonly<Record<string, FeedValue>> = {},
  opts: SessionOptions = {},
): Promise<HostTensor[]> {
  return (await compile(outputs, opts)).run(inputs);
}
