/**
 * Full-weight training of the two networks a latent diffusion model learns (Rombach et al. 2022), on the
 * engine's own compiled train step and AdamW: first the autoencoder (reconstruction), then the UNet
 * (ε-prediction on the frozen autoencoder's latents, text encoder frozen). Every weight of the network being
 * trained is a trainable parameter; the graphs are the same model code that generation runs.
 */
import * as g from '../graph/index.ts';
import { topoSort, type Tensor } from '../graph/tensor.ts';
import { weightContext } from '../models/layers.ts';
import { timestepFeatures, unet } from '../models/unet.ts';
import { vaeDecoder, vaeEncoder } from '../models/vae.ts';
import { AdamW } from '../optim/adamw.ts';
import { makeSchedule } from '../optim/schedules.ts';
import type { TrainStep } from '../runtime/train-step.ts';
import type { SessionOptions } from '../runtime/session.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../sampling/training-schedule.ts';
import type { SdArch } from '../sd/arch.ts';
import { drawNoise, noiseBatch } from '../train/objective.ts';
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

async function loop(step: TrainStep, w: Weights, o: LoopOptions, feeds: (i: number) => Record<string, Float32Array | { data: Float32Array; shape: number[] }>): Promise<number> {
  const params = new Map(step.params.map((p) => [p.name!, w.get(p.name!)!.data]));
  const opt = new AdamW([{ name: 'all', params, lr: o.lr }], { weightDecay: 0 });
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
  }
  return last;
}

export interface AutoencoderData {
  /** Images [batch, 3, crop, crop] in [-1, 1] for step `i`. */
  batch(i: number): Float32Array;
  batchSize: number;
  /** Square crop side the autoencoder trains on (convolutions do not care; a crop is cheaper than a whole image). */
  crop: number;
}

/**
 * Trains encoder and decoder together on reconstruction. The latent gets Gaussian noise of std `latentNoise`
 * before decoding and pays `latentPenalty`·mean(z²): the decoder learns to forgive the small errors a
 * sampler leaves, and the latent keeps a bounded scale (rescaled afterwards, see `normaliseLatents`).
 */
export async function trainAutoencoder(w: Weights, arch: SdArch, data: AutoencoderData, o: LoopOptions & { latentNoise: number; latentPenalty: number; seed: number }): Promise<number> {
  const B = data.batchSize;
  const h = data.crop / 8;
  const ctx = contextOver(w);
  const enc = vaeEncoder(ctx, arch.vae, { batch: B, height: data.crop, width: data.crop });
  const dec = vaeDecoder(ctx, arch.vae, { batch: B, height: h, width: h });
  const noise = g.input('latent_noise', 'float32', [B, arch.vae.embedDim, h, h]);
  const z = g.add(enc.mean, g.mul(noise, o.latentNoise));
  const [recon] = substitute([dec.image], dec.latent, z) as [Tensor];
  const loss = g.add(g.mse(recon, enc.image), g.mul(g.mean(g.square(enc.mean)), o.latentPenalty));
  const step = await compileFloat32Step(loss, paramsOf(loss), o.session);
  const noiseLen = B * arch.vae.embedDim * h * h;
  return loop(step, w, o, (i) => ({ image: data.batch(i), latent_noise: drawNoise([1, 1, 1, noiseLen], 1, 0, o.seed, 'vae', i).noise }));
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
  /** Text contexts [n, tokens, dim], one per latent. */
  contexts: Float32Array;
  count: number;
  /** Context of the empty prompt [tokens, dim], for classifier-free guidance dropout. */
  empty: Float32Array;
}

/**
 * Trains the UNet on ε-prediction with the SD training schedule, min-SNR-γ weights and offset noise (flat
 * colour fields are exactly what offset noise is for), dropping the caption for `uncondRate` of the samples
 * so classifier-free guidance has an unconditional model to push against.
 */
export async function trainUnet(
  w: Weights,
  arch: SdArch,
  data: DiffusionData,
  o: LoopOptions & { batch: number; latentSize: number; tokens: number; seed: number; uncondRate: number; noiseOffset: number; minSnrGamma: number },
): Promise<number> {
  const B = o.batch;
  const C = arch.unet.inChannels;
  const h = o.latentSize;
  const u = unet(contextOver(w), arch.unet, { batch: B, height: h, width: h, contextTokens: o.tokens });
  const target = g.input('target', 'float32', u.out.shape as number[]);
  const weights = g.input('loss_weight', 'float32', [B]);
  const d = g.sub(u.out, target);
  const loss = g.mean(g.mul(g.mean(g.mul(d, d), [1, 2, 3]), weights));
  const step = await compileFloat32Step(loss, paramsOf(loss), o.session);
  const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
  const per = C * h * h;
  const ctxLen = o.tokens * arch.unet.contextDim;
  return loop(step, w, o, (i) => {
    const random = seededRandom(o.seed, 'pick', i);
    const x0 = new Float32Array(B * per);
    const context = new Float32Array(B * ctxLen);
    for (let b = 0; b < B; b++) {
      const k = Math.min(data.count - 1, Math.floor(random() * data.count));
      x0.set(data.latents.subarray(k * per, (k + 1) * per), b * per);
      context.set(random() < o.uncondRate ? data.empty : data.contexts.subarray(k * ctxLen, (k + 1) * ctxLen), b * ctxLen);
    }
    const { timesteps, noise } = drawNoise([B, C, h, h], acp.length, o.noiseOffset, o.seed, 'unet', i);
    const nb = noiseBatch(x0, noise, timesteps, acp, { predictionType: 'epsilon', noiseOffset: o.noiseOffset, minSnrGamma: o.minSnrGamma });
    return { x: nb.noisy, t_emb: timestepFeatures(timesteps, arch.unet.modelChannels), context, target: nb.target, loss_weight: nb.weights };
  });
}
