/**
 * The LoRA training graph: UNet (and, when the text encoder trains, CLIP feeding the UNet's context) with the
 * network's adapters, the weighted MSE loss, compiled once per batch shape into one forward+backward session.
 */
import * as g from '../graph/index.ts';
import { topoSort, Tensor } from '../graph/tensor.ts';
import { compileTrainStep, type TrainStep, type TrainStepResult } from '../runtime/train-step.ts';
import { compile, type CompiledGraph, type FeedValue, type SessionOptions } from '../runtime/session.ts';
import { clipTextEncoder } from '../models/clip-text.ts';
import { timestepFeatures, unet } from '../models/unet.ts';
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
}

export interface StepInputs {
  /** x_t [B, C, h, w]. */
  noisy: Float32Array;
  timesteps: readonly number[];
  /** UNet context [B, tokens, dim] (frozen text encoder). */
  context?: Float32Array;
  /** Token ids [B, tokens] (trained text encoder). */
  ids?: BigInt64Array;
  target: Float32Array;
  weights: Float32Array;
}

/** Rebuilds the nodes of `outputs` that depend on `from`, with `to` in its place; leaves (params) stay shared. */
export function substitute(outputs: readonly Tensor[], from: Tensor, to: Tensor): Tensor[] {
  const map = new Map<Tensor, Tensor>([[from, to]]);
  for (const t of topoSort(outputs)) {
    if (t === from || t.inputs.length === 0) continue;
    const ins = t.inputs.map((i) => map.get(i) ?? i);
    if (ins.some((x, k) => x !== t.inputs[k])) map.set(t, new Tensor(t.op, ins, t.attrs, t.dtype, t.shape, t.value));
  }
  return outputs.map((o) => map.get(o) ?? o);
}

function buildLoss(model: StableDiffusion, network: LoraNetwork, s: StepShape, o: StepGraphOptions): { loss: Tensor; pred: Tensor } {
  const ctx = model.context({ adapter: network.adapter(), training: true });
  const arch = model.arch;
  const u = unet(ctx, arch.unet, { batch: s.batch, height: s.height, width: s.width, contextTokens: s.tokens });
  let pred = u.out;
  if (o.trainTextEncoder) {
    const te = clipTextEncoder(ctx, arch.textEncoder, { batch: s.batch, tokens: s.tokens, clipSkip: o.clipSkip ?? 1, prefix: TEXT_PREFIX });
    [pred] = substitute([u.out], u.context, te.hidden) as [Tensor];
  }
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
    const { loss } = buildLoss(model, network, shape, opts);
    const params = network.paramTensors(opts.trainTextEncoder ? ['unet', 'te'] : ['unet']);
    const step = await compileTrainStep({ loss, params, precision: opts.precision, session: opts.session });
    return new LoraTrainStep(model, step, opts.trainTextEncoder);
  }

  run(x: StepInputs): Promise<TrainStepResult> {
    return this.step.run(feeds(this.model, x, this.trainTextEncoder));
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
    const { loss, pred } = buildLoss(model, network, shape, opts);
    // The LoRA buffers change between runs: always fed, even when the frozen weights are baked in.
    const alwaysFeed = new Set(network.paramTensors());
    return new LoraLossEval(model, await compile([loss, pred], { ...opts.session, alwaysFeed }), opts.trainTextEncoder);
  }

  async run(x: StepInputs): Promise<{ loss: number; pred: Float32Array }> {
    const [loss, pred] = await this.graph.run(feeds(this.model, x, this.trainTextEncoder));
    return { loss: Number(loss!.data[0]), pred: pred!.data as Float32Array };
  }
}
