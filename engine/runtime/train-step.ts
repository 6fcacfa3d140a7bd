import { grad } from '../autodiff/grad.ts';
import * as g from '../graph/index.ts';
import { topoSort, type Tensor } from '../graph/tensor.ts';
import { UserError } from '../util/errors.ts';
import { LossScaler, toFloat16 } from './precision.ts';
import { hasFastFloat16, logOnce } from './providers.ts';
import { compile, type CompiledGraph, type FeedValue, type HostTensor, type ParamValues, type SessionOptions } from './session.ts';

export interface TrainStepSpec {
  /** Scalar float loss. */
  loss: Tensor;
  /** Parameters to differentiate (trainable); other params in the graph are frozen. */
  params: readonly Tensor[];
  /** Optional: the graph inputs `run` will be fed; checked to be inputs the loss actually uses. */
  inputs?: readonly Tensor[];
  /** Further tensors returned by every step (metrics, predictions). */
  extraOutputs?: readonly Tensor[];
  /** 'float16' computes in float16 with float32 master weights and dynamic loss scaling, where the device has fast float16. */
  precision?: 'float32' | 'float16';
  /** Session options; `weights: 'external'` bakes the frozen weights (faster kernels) while trainable ones stay fed. */
  session?: SessionOptions;
  /** Tests only: run the float16 graph even on CPU (slow, emulated kernels). */
  forceFloat16?: boolean;
}

export interface TrainStepResult {
  loss: number;
  /** Gradients by parameter name, float32, unscaled. */
  grads: Map<string, Float32Array>;
  extras: HostTensor[];
  /** False when a gradient overflowed under loss scaling; the step should then be skipped. */
  finite: boolean;
}

const SCALE_INPUT = '__loss_scale';

/** A forward + backward graph compiled once into one ORT session. */
export class TrainStep {
  constructor(
    private readonly graph: CompiledGraph,
    readonly params: readonly Tensor[],
    private readonly nExtras: number,
    /** Present when running float16; its scale is fed every step and updated from the result. */
    readonly scaler?: LossScaler,
  ) {}

  /** Writes the ORT profile of a step compiled with `session.profile`. */
  endProfiling(): void {
    this.graph.endProfiling();
  }

  async run(feeds: Readonly<Record<string, FeedValue>>, paramValues?: ParamValues): Promise<TrainStepResult> {
    const all = this.scaler ? { ...feeds, [SCALE_INPUT]: new Float32Array([this.scaler.scale]) } : feeds;
    const out = await this.graph.run(all, paramValues);
    const grads = new Map<string, Float32Array>();
    let finite = true;
    this.params.forEach((p, i) => {
      const d = out[1 + i]!.data as Float32Array;
      grads.set(p.name!, d);
      if (this.scaler && finite) for (let k = 0; k < d.length; k++) if (!Number.isFinite(d[k]!)) { finite = false; break; }
    });
    if (this.scaler) this.scaler.update(finite);
    return { loss: Number(out[0]!.data[0]), grads, extras: out.slice(1 + this.params.length, 1 + this.params.length + this.nExtras), finite };
  }
}

/**
 * Session options of a training step: the trainable parameters are always fed (the optimizer updates them
 * in place), and ORT's memory pattern is off unless asked for (it costs memory on forward + backward graphs).
 */
export function trainSessionOptions(session: SessionOptions | undefined, params: readonly Tensor[]): SessionOptions {
  return { memPattern: false, ...session, alwaysFeed: new Set(params) };
}

/** Compiles (inputs, loss, params) once; each `run` returns the loss and the gradients of `params`. */
export async function compileTrainStep(spec: TrainStepSpec): Promise<TrainStep> {
  const { loss, params } = spec;
  if (loss.size !== 1) throw new Error(`compileTrainStep: loss ${loss} must be a scalar`);
  const names = new Set<string>();
  for (const p of params) {
    if (p.op !== 'param') throw new Error(`compileTrainStep: ${p} is not a parameter`);
    if (p.dtype !== 'float32') throw new UserError(`weight ${p.name}: trainable parameters must be float32 (master weights), got ${p.dtype}`);
    if (names.has(p.name!)) throw new Error(`compileTrainStep: parameter ${p.name} listed twice`);
    names.add(p.name!);
  }
  const extras = spec.extraOutputs ?? [];
  if (spec.inputs) {
    const used = new Set(topoSort([loss, ...extras]));
    for (const i of spec.inputs) {
      if (i.op !== 'input') throw new Error(`compileTrainStep: ${i} is not a graph input`);
      if (!used.has(i)) throw new Error(`compileTrainStep: input ${i.name} is not used by the loss or extra outputs`);
    }
  }
  const device = spec.session?.device ?? 'cpu';
  let half = spec.precision === 'float16';
  if (half && !hasFastFloat16(device) && !spec.forceFloat16) {
    logOnce(`precision: float16 requested but ${device} has no fast float16 kernels; running float32`);
    half = false;
  }
  if (!half) {
    const grads = grad(loss, params);
    const graph = await compile([loss, ...grads, ...extras], trainSessionOptions(spec.session, params));
    return new TrainStep(graph, params, extras.length);
  }
  logOnce('precision: float16 compute, float32 master weights, dynamic loss scaling');
  const [loss16, ...extras16] = toFloat16([loss, ...extras]);
  const scale = g.input(SCALE_INPUT, 'float32', []);
  // Differentiate the float16 loss times the scale: the seed is cast to float16 inside, the grads come back
  // through each master weight's cast as float32, and are unscaled in float32.
  const scaled = g.mul(loss16!, scale);
  const grads = grad(scaled, params).map((d) => g.div(d, scale));
  const graph = await compile([loss16!, ...grads, ...extras16], trainSessionOptions(spec.session, params));
  return new TrainStep(graph, params, extras.length, new LossScaler());
}
