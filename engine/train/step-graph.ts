/**
 * The LoRA training graph: UNet (and, when the text encoder trains, CLIP feeding the UNet's context) with the
 * network's adapters, the weighted MSE loss, compiled once per batch shape into one forward+backward session.
 */
import * as g from '../graph/index.ts';
import { inSegment, topoSort, Tensor } from '../graph/tensor.ts';
import type { ModuleContext } from '../models/layers.ts';
import { compileTrainStep, TrainStep, trainSessionOptions, type TrainStepResult } from '../runtime/train-step.ts';
import { grad } from '../autodiff/grad.ts';
import { compile, type CompiledGraph, type FeedValue, type SessionOptions } from '../runtime/session.ts';
import { clipTextEncoder, clipTextHidden, eosOneHot } from '../models/clip-text.ts';
import { sizeFeatures, timestepFeatures, unet } from '../models/unet.ts';
import { TEXT_PREFIX, type StableDiffusion } from '../sd/model.ts';
import type { LoraNetwork } from './lora-network.ts';

export interface StepShape {
  batch: number;
  /** Latent height and width. */
  height: number;
  width: number;
  /** Text tokens per sample (77). */
  tokens: number;
}

export interface StepGraphOptions {
  /** Differentiate the text-encoder LoRA too: CLIP runs inside the graph on token ids. */
  trainTextEncoder: boolean;
  clipSkip?: number;
  precision?: 'float32' | 'float16';
  session?: SessionOptions;
  /**
   * Gradient checkpointing per top-level UNet block (input_blocks.N, middle_block, output_blocks.N): the
   * backward pass recomputes each block's activations instead of keeping them (less memory, one more forward).
   */
  checkpointBlocks?: boolean;
}

export interface StepInputs {
  /** x_t [B, C, h, w]. */
  noisy: Float32Array;
  timesteps: readonly number[];
  /** UNet context [B, tokens, dim] (frozen text encoder). */
  context?: Float32Array;
  /** Token ids [B, tokens] (trained text encoder). */
  ids?: BigInt64Array;
  /** SDXL, frozen encoders: `label_emb`'s input [B, adm.inChannels] (pooled text embedding + size features, `sizeConditionVector`). */
  added?: Float32Array;
  /** SDXL, trained encoders: the OpenCLIP tower's token ids [B, tokens] (padded with 0) beside `ids`. */
  ids2?: BigInt64Array;
  /** SDXL, trained encoders: each sample's six size numbers [B, 6]. */
  sizes?: ArrayLike<number>;
  target: Float32Array;
  weights: Float32Array;
}

/** Rebuilds the nodes of `outputs` that depend on `from`, with `to` in its place; leaves (params) stay shared. */
export function substitute(outputs: readonly Tensor[], from: Tensor, to: Tensor): Tensor[] {
  return rebuild(outputs, new Map([[from, to]]), () => undefined);
}

/**
 * Clones `outputs`' graph, replacing each key of `subs` by its value and putting each node for which `blockOf`
 * gives a number into that checkpoint segment (one segment per number). Nodes are cloned in creation order
 * (ids), which is a topological order, so each block's clones are made inside one `inSegment` call.
 */
function rebuild(
  outputs: readonly Tensor[],
  subs: ReadonlyMap<Tensor, Tensor>,
  blockOf: (t: Tensor) => number | undefined,
  replace?: (t: Tensor, inputs: Tensor[]) => Tensor | undefined,
): Tensor[] {
  const map = new Map<Tensor, Tensor>(subs);
  const nodes = topoSort(outputs)
    .filter((t) => !subs.has(t) && t.inputs.length > 0)
    .sort((a, b) => a.id - b.id);
  const clone = (t: Tensor) => {
    const ins = t.inputs.map((i) => map.get(i) ?? i);
    const r = replace?.(t, ins);
    if (r) map.set(t, r);
    else if (blockOf(t) !== undefined || ins.some((x, k) => x !== t.inputs[k])) map.set(t, new Tensor(t.op, ins, t.attrs, t.dtype, t.shape, t.value));
  };
  for (let i = 0; i < nodes.length; ) {
    const b = blockOf(nodes[i]!);
    let j = i;
    while (j < nodes.length && blockOf(nodes[j]!) === b) j++;
    const group = nodes.slice(i, j);
    if (b === undefined) group.forEach(clone);
    else inSegment(() => group.forEach(clone));
    i = j;
  }
  return outputs.map((o) => map.get(o) ?? o);
}

/**
 * A stride-1 transposed convolution as a plain convolution with the kernel flipped and its in/out channels
 * swapped (padding k − 1 − p). ONNX Runtime's Conv is about 1.7× faster than its ConvTranspose here; it pays
 * where the flipped kernel is a constant (baked weights: folded and pre-packed) and in full-weight training.
 * With fed frozen weights the per-step flips cost more than it saves, so LoRA steps keep ConvTranspose there.
 */
function convTransposeAsConv(t: Tensor, ins: Tensor[]): Tensor | undefined {
  if (t.op !== 'conv_transpose2d') return undefined;
  const a = t.attrs;
  const [s0, s1] = a['stride'] as number[];
  const [d0, d1] = a['dilation'] as number[];
  const [op0, op1] = a['outputPadding'] as number[];
  if (s0 !== 1 || s1 !== 1 || d0 !== 1 || d1 !== 1 || op0 !== 0 || op1 !== 0 || a['groups'] !== 1) return undefined;
  const [dy, w] = ins as [Tensor, Tensor];
  const [, , kh, kw] = w.shape as number[];
  const [p0, p1, p2, p3] = a['pads'] as number[];
  // Flip, then swap channels: one strided copy and one transpose (twice as fast alone as two gathers after
  // the transpose; inside a whole SD 1.5 step hardly cheaper).
  const wt = g.transpose(g.flip(w, [2, 3]), [1, 0, 2, 3]);
  const y = g.conv2d(dy, wt, undefined, { padding: [kh! - 1 - p0!, kw! - 1 - p1!, kh! - 1 - p2!, kw! - 1 - p3!] });
  if (y.shape.some((d, i) => d !== t.shape[i])) throw new Error(`convTransposeAsConv: ${y} does not match ${t}`);
  return y;
}

/** `outputs` with every stride-1, ungrouped transposed convolution rewritten as a convolution (same values). */
export function transposedConvsAsConvs(outputs: readonly Tensor[]): Tensor[] {
  return rebuild(outputs, new Map(), () => undefined, convTransposeAsConv);
}

/**
 * Loss + gradients of `params` in one session (float32), by default with the backward's stride-1 transposed
 * convs as convs. Serves LoRA training and full-weight training alike.
 */
export async function compileFloat32Step(loss: Tensor, params: Tensor[], session: SessionOptions | undefined, opts: { convsForTransposed?: boolean } = {}): Promise<TrainStep> {
  const raw = [loss, ...grad(loss, params)];
  const outs = (opts.convsForTransposed ?? true) ? transposedConvsAsConvs(raw) : raw;
  const graph = await compile(outs, trainSessionOptions(session, params));
  return new TrainStep(graph, params, 0);
}

/** Top-level UNet block of an LDM module key (input_blocks.N, middle_block, output_blocks.N), else undefined. */
function unetBlock(key: string): string | undefined {
  return /^model\.diffusion_model\.(input_blocks\.\d+|middle_block|output_blocks\.\d+)\./.exec(key)?.[1];
}

/** The loss graph (and the model output) for one batch shape; exported for tests and tools. */
export function buildLossGraph(model: StableDiffusion, network: LoraNetwork, s: StepShape, o: StepGraphOptions): { loss: Tensor; pred: Tensor } {
  const lora = network.adapter();
  // Block boundaries in tensor-id order, seen through the layers' hook (called for every Linear/Conv, in
  // construction order): the id of a marker made at each block's first layer.
  const starts: number[] = [];
  let current: string | undefined;
  const adapter: NonNullable<ModuleContext['adapter']> = (key, x, kind, conv) => {
    const b = o.checkpointBlocks ? unetBlock(key) : undefined;
    if (b && b !== current) {
      current = b;
      starts.push(g.scalar(0).id);
    }
    return lora(key, x, kind, conv);
  };
  const ctx = model.context({ adapter, training: true });
  const arch = model.arch;
  const u = unet(ctx, arch.unet, { batch: s.batch, height: s.height, width: s.width, contextTokens: s.tokens });
  const end = g.scalar(0).id;
  // A trained text encoder runs inside the graph and replaces the context input (SDXL: and label_emb's input).
  const subs = new Map<Tensor, Tensor>();
  if (o.trainTextEncoder) {
    const teCtx = model.context({ adapter: lora, training: true });
    if (arch.textEncoder2 && u.y && arch.unet.adm) {
      const te1 = clipTextHidden(teCtx, arch.textEncoder, { batch: s.batch, tokens: s.tokens, fromEnd: 2 });
      const te2 = clipTextHidden(teCtx, arch.textEncoder2, { batch: s.batch, tokens: s.tokens, fromEnd: 2, pooled: true, idsName: 'input_ids_2' });
      const sizes = g.input('size_features', 'float32', [s.batch, arch.unet.adm.sizeConditions * arch.unet.adm.sizeEmbedDim]);
      subs.set(u.context, g.concat([te1.hidden, te2.hidden], -1));
      subs.set(u.y, g.concat([te2.pooled!, sizes], -1));
    } else {
      subs.set(u.context, clipTextEncoder(teCtx, arch.textEncoder, { batch: s.batch, tokens: s.tokens, clipSkip: o.clipSkip ?? 1, prefix: TEXT_PREFIX }).hidden);
    }
  }
  const blockOf = (t: Tensor): number | undefined => {
    if (!starts.length || t.id < starts[0]! || t.id >= end) return undefined;
    let k = 0;
    while (k + 1 < starts.length && t.id >= starts[k + 1]!) k++;
    return k;
  };
  const [pred] = o.checkpointBlocks || subs.size ? (rebuild([u.out], subs, blockOf) as [Tensor]) : [u.out];
  const target = g.input('target', 'float32', pred.shape as number[]);
  const weights = g.input('loss_weight', 'float32', [s.batch]);
  const d = g.sub(pred, target);
  const perSample = g.mean(g.mul(d, d), [1, 2, 3]);
  return { loss: g.mean(g.mul(perSample, weights)), pred };
}

function feeds(model: StableDiffusion, x: StepInputs, trainTE: boolean): Record<string, FeedValue> {
  const out: Record<string, FeedValue> = {
    x: x.noisy,
    t_emb: timestepFeatures(x.timesteps, model.arch.unet.modelChannels),
    target: x.target,
    loss_weight: x.weights,
  };
  const adm = model.arch.unet.adm;
  if (adm && trainTE) {
    if (!x.ids2 || !x.sizes) throw new Error('train step: SDXL needs both towers\' token ids and the size numbers when the text encoders train');
    out.input_ids_2 = x.ids2;
    out.eos_onehot = eosOneHot(x.ids2, x.timesteps.length, x.ids2.length / x.timesteps.length);
    out.size_features = sizeFeatures(x.sizes, adm);
  } else if (adm) {
    if (!x.added) throw new Error('train step: an SDXL UNet needs the pooled text embedding and size conditioning');
    out.y = x.added;
  }
  if (trainTE) {
    if (!x.ids) throw new Error('train step: token ids are needed when the text encoder trains');
    out.input_ids = x.ids;
  } else {
    if (!x.context) throw new Error('train step: a context is needed when the text encoder is frozen');
    out.context = x.context;
  }
  return out;
}

/** Loss and LoRA gradients for one micro-batch of a fixed shape. */
export class LoraTrainStep {
  private constructor(
    private readonly model: StableDiffusion,
    private readonly step: TrainStep,
    readonly trainTextEncoder: boolean,
  ) {}

  static async compile(model: StableDiffusion, network: LoraNetwork, shape: StepShape, opts: StepGraphOptions): Promise<LoraTrainStep> {
    const { loss } = buildLossGraph(model, network, shape, opts);
    const params = network.paramTensors(opts.trainTextEncoder ? ['unet', 'te', 'te2'] : ['unet']);
    // float16 needs the runtime's loss-scaled variant. In float32, the frozen convs' backward runs as Conv
    // with flipped kernels only when the weights are baked, where each flip folds to a constant: fed, the
    // flips are redone at every step and cost more than Conv saves over ConvTranspose (SD 1.5 LoRA step at
    // 512², quiet: 9.0–9.1 s flipped, 8.1–8.6 s as ConvTranspose).
    const step =
      opts.precision === 'float16'
        ? await compileTrainStep({ loss, params, precision: 'float16', session: opts.session })
        : await compileFloat32Step(loss, params, opts.session, { convsForTransposed: opts.session?.weights === 'external' });
    return new LoraTrainStep(model, step, opts.trainTextEncoder);
  }

  run(x: StepInputs): Promise<TrainStepResult> {
    return this.step.run(feeds(this.model, x, this.trainTextEncoder));
  }

  /** Writes the ORT profile of a step compiled with `session.profile`. */
  endProfiling(): void {
    this.step.endProfiling();
  }
}

/** The same loss (and the model output) without gradients: validation and held-out measurements. */
export class LoraLossEval {
  private constructor(
    private readonly model: StableDiffusion,
    private readonly graph: CompiledGraph,
    readonly trainTextEncoder: boolean,
  ) {}

  static async compile(model: StableDiffusion, network: LoraNetwork, shape: StepShape, opts: StepGraphOptions): Promise<LoraLossEval> {
    const { loss, pred } = buildLossGraph(model, network, shape, opts);
    // The LoRA buffers change between runs: always fed, even when the frozen weights are baked in.
    const alwaysFeed = new Set(network.paramTensors());
    return new LoraLossEval(model, await compile([loss, pred], { ...opts.session, alwaysFeed }), opts.trainTextEncoder);
  }

  async run(x: StepInputs): Promise<{ loss: number; pred: Float32Array }> {
    const [loss, pred] = await this.graph.run(feeds(this.model, x, this.trainTextEncoder));
    return { loss: Number(loss!.data[0]), pred: pred!.data as Float32Array };
  }
}
