/**
 * Full-weight training of the two networks a latent diffusion model learns (Rombach et al. 2022), on the
 * engine's own compiled train step and AdamW: first the autoencoder (reconstruction), then the UNet
 * (ε-prediction on the frozen autoencoder's latents, with the text encoder in the same graph, trained or not).
 * Every weight of the network being trained is a trainable parameter; the graphs are the same model code that
 * generation runs.
 */
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import * as g from '../graph/index.ts';
import { topoSort, type Tensor } from '../graph/tensor.ts';
import { weightContext } from '../models/layers.ts';
import { clipTextEncoder } from '../models/clip-text.ts';
import { timestepFeatures, unet } from '../models/unet.ts';
import { vaeDecoder, vaeEncoder } from '../models/vae.ts';
import { AdamW } from '../optim/adamw.ts';
import type { ParamGroup } from '../optim/optimizer.ts';
import { makeSchedule } from '../optim/schedules.ts';
import { SafetensorsFile, writeSafetensors } from '../safetensors/index.ts';
import type { TrainStep } from '../runtime/train-step.ts';
import { compile, type CompiledGraph, type SessionOptions } from '../runtime/session.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../sampling/training-schedule.ts';
import type { SdArch } from '../sd/arch.ts';
import { textPrefix } from '../sd/model.ts';
import { drawNoise, minSnrWeight, noiseBatch, snr } from '../train/objective.ts';
import { seededRandom } from '../train/seeded-random.ts';
import { compileFloat32Step, substitute } from '../train/step-graph.ts';

/** Weights by LDM key, float32; training updates them in place. */
export type Weights = Map<string, { shape: number[]; data: Float32Array }>;

export interface LoopOptions {
  steps: number;
  lr: number;
  /** Linear warm-up steps before the cosine decay. */
  warmup: number;
  session?: SessionOptions;
  /** Called every `logEvery` steps with the mean loss since the last call. */
  log?: (step: number, loss: number) => void;
  logEvery?: number;
}

function contextOver(w: Weights) {
  return weightContext({ shape: (k) => w.get(k)?.shape, data: (k) => w.get(k)!.data });
}

/** Every parameter the loss reads: all of them train. */
function paramsOf(loss: Tensor): Tensor[] {
  return topoSort([loss]).filter((t) => t.op === 'param');
}

type Feeds = Record<string, Float32Array | Int32Array | { data: Float32Array; shape: number[] }>;

/** Every trained parameter in one group at `lr`. */
function oneGroup(step: TrainStep, w: Weights, lr: number): ParamGroup[] {
  return [{ name: 'all', params: new Map(step.params.map((p) => [p.name!, w.get(p.name!)!.data])), lr }];
}

async function loop(step: TrainStep, groups: ParamGroup[], o: LoopOptions, feeds: (i: number) => Feeds, after?: (i: number) => Promise<void>): Promise<number> {
  const opt = new AdamW(groups, { weightDecay: 0 });
  const schedule = makeSchedule({ name: 'cosine', totalSteps: o.steps, warmupSteps: o.warmup });
  let sum = 0;
  let n = 0;
  let last = NaN;
  for (let i = 0; i < o.steps; i++) {
    const r = await step.run(feeds(i));
    opt.step(r.grads, schedule(i));
    sum += r.loss;
    n++;
    if (o.log && ((i + 1) % (o.logEvery ?? 50) === 0 || i === o.steps - 1)) {
      last = sum / n;
      o.log(i + 1, last);
      sum = 0;
      n = 0;
    }
    await after?.(i);
  }
  return last;
}

export interface AutoencoderData {
  /** Step `i`'s images [batch, 3, crop, crop] in [-1, 1] and per-pixel loss weights [batch, 1, crop, crop]. */
  batch(i: number): { images: Float32Array; weights: Float32Array };
  batchSize: number;
  /** Square crop side the autoencoder trains on (convolutions do not care; a crop is cheaper than a whole image). */
  crop: number;
}

export interface AutoencoderOptions extends LoopOptions {
  /** Std of the Gaussian noise added to the latent before decoding. */
  latentNoise: number;
  /** Weight of mean(z²). */
  latentPenalty: number;
  /** Weight of the per-pixel weighted L1 term beside the weighted MSE: it keeps pulling once errors are small. */
  l1: number;
  seed: number;
}

/**
 * Trains encoder and decoder together on reconstruction: per-pixel weighted MSE and L1. The latent gets
 * Gaussian noise of std `latentNoise` before decoding and pays `latentPenalty`·mean(z²): the decoder learns to
 * forgive the small errors a sampler leaves, and the latent keeps a bounded scale (rescaled afterwards, see
 * `normaliseLatents`).
 */
export async function trainAutoencoder(w: Weights, arch: SdArch, data: AutoencoderData, o: AutoencoderOptions): Promise<number> {
  const B = data.batchSize;
  const h = data.crop / 8;
  const ctx = contextOver(w);
  const enc = vaeEncoder(ctx, arch.vae, { batch: B, height: data.crop, width: data.crop });
  const dec = vaeDecoder(ctx, arch.vae, { batch: B, height: h, width: h });
  const noise = g.input('latent_noise', 'float32', [B, arch.vae.embedDim, h, h]);
  const pixelWeight = g.input('pixel_weight', 'float32', [B, 1, data.crop, data.crop]);
  const z = g.add(enc.mean, g.mul(noise, o.latentNoise));
  const [recon] = substitute([dec.image], dec.latent, z) as [Tensor];
  const d = g.sub(recon, enc.image);
  const reconstruction = g.add(g.mean(g.mul(g.square(d), pixelWeight)), g.mul(g.mean(g.mul(g.abs(d), pixelWeight)), o.l1));
  const loss = g.add(reconstruction, g.mul(g.mean(g.square(enc.mean)), o.latentPenalty));
  const step = await compileFloat32Step(loss, paramsOf(loss), o.session);
  const noiseLen = B * arch.vae.embedDim * h * h;
  return loop(step, oneGroup(step, w, o.lr), o, (i) => {
    const b = data.batch(i);
    return { image: b.images, pixel_weight: b.weights, latent_noise: drawNoise([1, 1, 1, noiseLen], 1, 0, o.seed, 'vae', i).noise };
  });
}

const PHASE_KEY = 'lora-scripts.phase';

/** Saves the weights whose names match `keys` (float32), tagged with `key`: the settings that made them. */
export async function savePhase(file: string, key: string, w: Weights, keys: RegExp): Promise<void> {
  await mkdir(dirname(file), { recursive: true });
  const tensors = new Map([...w].filter(([k]) => keys.test(k)).map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.shape, data: v.data }]));
  await writeSafetensors(file, tensors, { [PHASE_KEY]: key });
}

/** Loads a phase saved by `savePhase` into `w` when `file` exists and was made with `key`; false otherwise. */
export async function loadPhase(file: string, key: string, w: Weights): Promise<boolean> {
  const f = await SafetensorsFile.open(file).catch(() => undefined);
  if (!f) return false;
  try {
    if (f.metadata[PHASE_KEY] !== key) return false;
    for (const name of f.tensors.keys()) {
      const target = w.get(name);
      if (!target) throw new Error(`${file}: tensor ${name} is not in the model`);
      target.data.set(await f.readFloat32(name));
    }
    return true;
  } finally {
    await f.close();
  }
}

/**
 * Folds an affine map of the latent into the autoencoder: the encoder's `quant_conv` then emits
 * s·(z − m) per channel and the decoder's `post_quant_conv` undoes it, so reconstructions are unchanged while
 * latents × the model's scaling factor have zero mean and unit variance, as the UNet's noise schedule assumes.
 */
export function normaliseLatents(w: Weights, arch: SdArch, mean: number[], std: number[]): void {
  const C = arch.vae.embedDim;
  const qw = w.get('first_stage_model.quant_conv.weight')!;
  const qb = w.get('first_stage_model.quant_conv.bias')!;
  const pw = w.get('first_stage_model.post_quant_conv.weight')!;
  const pb = w.get('first_stage_model.post_quant_conv.bias')!;
  const inCh = qw.shape[1]!;
  const outCh = pw.shape[0]!;
  for (let c = 0; c < C; c++) {
    const s = 1 / (arch.vae.scalingFactor * std[c]!);
    for (let k = 0; k < inCh; k++) qw.data[c * inCh + k]! *= s;
    qb.data[c] = (qb.data[c]! - mean[c]!) * s;
  }
  // post_quant_conv(z') = V·(z'/s + m) + b = (V/s)·z' + (V·m + b)
  for (let o = 0; o < outCh; o++) {
    for (let c = 0; c < C; c++) {
      const s = 1 / (arch.vae.scalingFactor * std[c]!);
      pb.data[o] = pb.data[o]! + pw.data[o * C + c]! * mean[c]!;
      pw.data[o * C + c] = pw.data[o * C + c]! / s;
    }
  }
}

export interface DiffusionData {
  /** Scaled latents [n, C, h, w] (already × the scaling factor). */
  latents: Float32Array;
  /** Caption token ids [n, tokens], one row per latent, as generation's chunker frames them. */
  ids: Int32Array;
  /** The same scenes' plain captions ("a red star on a blue background": colours and shape only), [n, tokens]. */
  plainIds: Int32Array;
  count: number;
  /** Token ids of the empty prompt [tokens], for classifier-free guidance dropout. */
  emptyIds: Int32Array;
}

export interface DiffusionOptions extends LoopOptions {
  batch: number;
  latentSize: number;
  tokens: number;
  seed: number;
  /** Share of samples whose caption is replaced by the empty prompt (classifier-free guidance). */
  uncondRate: number;
  /**
   * Share of samples captioned plainly: with the colour words always at the same places, the UNet finds
   * them easily, and the detailed captions then teach it to find them anywhere.
   */
  plainRate: number;
  noiseOffset: number;
  minSnrGamma: number;
  /**
   * Weight of the v-prediction-like term (sd-scripts' `v_pred_like_loss`): each sample's ε-loss also counts
   * λ·(SNR + 1)/SNR times, which is its error on x₀-scale at high noise. ε-loss alone hardly sees the high
   * noise levels where a picture's colours and layout are decided — and so hardly the caption.
   */
  vPredLikeLoss: number;
  /** Learning rate of the text encoder, trained with the UNet (0: frozen). */
  textLr: number;
  /** Called with the caption-swap gap (see `CaptionGap`) every `logEvery` steps. */
  logGap?: (step: number, gap: CaptionGapResult) => void;
  /** Latents and ids of scenes kept out of training, for the caption-swap gap. */
  validation?: { latents: Float32Array; ids: Int32Array; count: number };
}

const TEXT_KEY = /^cond_stage_model\./;
/**
 * The token embeddings stay as initialised even when the text encoder trains: random rows are already
 * distinct words, and their 49408-row gradient would cost more than the rest of the step.
 */
const FROZEN_TEXT_KEY = /token_embedding/;

/** The ε-prediction loss weight of one sample at timestep t: min-SNR-γ, plus the v-prediction-like term. */
export function diffusionLossWeight(acp: Float32Array, t: number, o: Pick<DiffusionOptions, 'minSnrGamma' | 'vPredLikeLoss'>): number {
  const m = minSnrWeight(acp, t, o.minSnrGamma, 'epsilon');
  const s = snr(acp, t);
  return m * (1 + (o.vPredLikeLoss * (s + 1)) / s);
}

/** The UNet fed by the text encoder in one graph: token ids in, ε out. */
function conditionedUnet(w: Weights, arch: SdArch, B: number, h: number, tokens: number): { out: Tensor; ids: Tensor } {
  const ctx = contextOver(w);
  const u = unet(ctx, arch.unet, { batch: B, height: h, width: h, contextTokens: tokens });
  const text = clipTextEncoder(ctx, arch.textEncoder, { batch: B, tokens, prefix: textPrefix(arch) });
  const [out] = substitute([u.out], u.context, text.hidden) as [Tensor];
  return { out, ids: text.ids };
}

export interface CaptionGapResult {
  /** Mean x₀-scale error (ε-MSE / SNR) with each scene's own caption and with another scene's, at high noise levels. */
  right: number;
  wrong: number;
}

/**
 * The caption-swap gap: ε-prediction error on held-out scenes with their own caption vs another scene's,
 * at the high noise levels where the caption decides the picture. A UNet that ignores its caption shows
 * no gap; it must open up early in training.
 */
class CaptionGap {
  static readonly TIMESTEPS = [600, 750, 900, 999];

  private constructor(
    private readonly graph: CompiledGraph,
    private readonly feeds: { x: Float32Array; t_emb: Float32Array; target: Float32Array; right: Int32Array; wrong: Int32Array; scale: Float32Array },
  ) {}

  static async compile(w: Weights, arch: SdArch, v: NonNullable<DiffusionOptions['validation']>, o: DiffusionOptions): Promise<CaptionGap> {
    const C = arch.unet.inChannels;
    const h = o.latentSize;
    const per = C * h * h;
    const T = CaptionGap.TIMESTEPS;
    const B = v.count * T.length;
    const { out } = conditionedUnet(w, arch, B, h, o.tokens);
    const target = g.input('target', 'float32', out.shape as number[]);
    const perSample = g.mean(g.square(g.sub(out, target)), [1, 2, 3]);
    // Parameters are fed from the buffers training updates in place: each measurement sees the current weights.
    const graph = await compile([perSample], { ...o.session, weights: 'inputs' });
    const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
    const x0 = new Float32Array(B * per);
    const timesteps: number[] = [];
    const right = new Int32Array(B * o.tokens);
    const wrong = new Int32Array(B * o.tokens);
    for (const [j, t] of T.entries()) {
      for (let k = 0; k < v.count; k++) {
        const b = j * v.count + k;
        x0.set(v.latents.subarray(k * per, (k + 1) * per), b * per);
        timesteps.push(t);
        right.set(v.ids.subarray(k * o.tokens, (k + 1) * o.tokens), b * o.tokens);
        // Another scene's caption: the next one (scenes are drawn independently, so it almost always differs).
        const other = (k + 1) % v.count;
        wrong.set(v.ids.subarray(other * o.tokens, (other + 1) * o.tokens), b * o.tokens);
      }
    }
    const { noise } = drawNoise([B, C, h, h], acp.length, 0, o.seed, 'caption-gap');
    const nb = noiseBatch(x0, noise, timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
    // ε-error × (1 − ᾱ)/ᾱ is the error of the x₀ it implies: what a wrong colour costs at high noise.
    const scale = Float32Array.from(timesteps, (t) => 1 / snr(acp, t));
    return new CaptionGap(graph, { x: nb.noisy, t_emb: timestepFeatures(timesteps, arch.unet.modelChannels), target: nb.target, right, wrong, scale });
  }

  async measure(): Promise<CaptionGapResult> {
    const mean = async (ids: Int32Array) => {
      const [r] = await this.graph.run({ x: this.feeds.x, t_emb: this.feeds.t_emb, target: this.feeds.target, input_ids: ids });
      const d = r!.data as Float32Array;
      return d.reduce((a, b, i) => a + b * this.feeds.scale[i]!, 0) / d.length;
    };
    return { right: await mean(this.feeds.right), wrong: await mean(this.feeds.wrong) };
  }
}

/**
 * Trains the UNet — and the text encoder when `textLr` > 0, through the same graph — on ε-prediction with
 * the SD training schedule, min-SNR-γ and v-prediction-like weights and offset noise (flat colour fields are
 * exactly what offset noise is for), dropping the caption for `uncondRate` of the samples so
 * classifier-free guidance has an unconditional model to push against.
 */
export async function trainUnet(w: Weights, arch: SdArch, data: DiffusionData, o: DiffusionOptions): Promise<number> {
  const B = o.batch;
  const C = arch.unet.inChannels;
  const h = o.latentSize;
  const T = o.tokens;
  const { out } = conditionedUnet(w, arch, B, h, T);
  const target = g.input('target', 'float32', out.shape as number[]);
  const weights = g.input('loss_weight', 'float32', [B]);
  const d = g.sub(out, target);
  const loss = g.mean(g.mul(g.mean(g.mul(d, d), [1, 2, 3]), weights));
  const all = paramsOf(loss);
  const trained = all.filter((p) => (o.textLr > 0 ? !FROZEN_TEXT_KEY.test(p.name!) : !TEXT_KEY.test(p.name!)));
  const step = await compileFloat32Step(loss, trained, o.session);
  const gap = o.validation && o.logGap ? await CaptionGap.compile(w, arch, o.validation, o) : undefined;
  const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
  const per = C * h * h;
  const groups = [
    { name: 'unet', params: new Map(step.params.filter((p) => !TEXT_KEY.test(p.name!)).map((p) => [p.name!, w.get(p.name!)!.data])), lr: o.lr },
    ...(o.textLr > 0 ? [{ name: 'text', params: new Map(step.params.filter((p) => TEXT_KEY.test(p.name!)).map((p) => [p.name!, w.get(p.name!)!.data])), lr: o.textLr }] : []),
  ];
  const every = o.logEvery ?? 50;
  return loop(step, groups, o, (i) => {
    const random = seededRandom(o.seed, 'pick', i);
    const x0 = new Float32Array(B * per);
    const ids = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      const k = Math.min(data.count - 1, Math.floor(random() * data.count));
      x0.set(data.latents.subarray(k * per, (k + 1) * per), b * per);
      const r = random();
      const source = r < o.uncondRate ? undefined : r < o.uncondRate + o.plainRate * (1 - o.uncondRate) ? data.plainIds : data.ids;
      ids.set(source ? source.subarray(k * T, (k + 1) * T) : data.emptyIds, b * T);
    }
    const { timesteps, noise } = drawNoise([B, C, h, h], acp.length, o.noiseOffset, o.seed, 'unet', i);
    const nb = noiseBatch(x0, noise, timesteps, acp, { predictionType: 'epsilon', noiseOffset: o.noiseOffset, minSnrGamma: 0 });
    const lw = Float32Array.from(timesteps, (t) => diffusionLossWeight(acp, t, o));
    return { x: nb.noisy, t_emb: timestepFeatures(timesteps, arch.unet.modelChannels), input_ids: ids, target: nb.target, loss_weight: lw };
  }, gap && o.logGap ? async (i) => { if ((i + 1) % every === 0 || i === o.steps - 1) o.logGap!(i + 1, await gap.measure()); } : undefined);
}
