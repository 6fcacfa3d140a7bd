/**
 * The LoRA training loop: dataset → VAE latents (cached) → captions → text conditioning (frozen CLIP on the
 * host, or CLIP inside the graph when its LoRA trains) → compiled forward+backward → accumulate / clip /
 * NaN guard / AdamW / schedule (engine/optim) → TensorBoard + JSON-lines logs → LoRA and state saves.
 *
 * Everything random is a function of (seed, epoch, micro-batch, image), never of a running generator, so a
 * run resumed from a saved state computes exactly what the uninterrupted run would have.
 *
 * `train()` runs to the end; `TrainingJob.start()` is the same run observed from outside (progress events,
 * cancel), for servers.
 */
import { EventEmitter } from 'node:events';
import { createHash } from 'node:crypto';
import { readdir, rm, stat, mkdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { StableDiffusion } from '../sd/model.ts';
import { loadClipTokenizer, type ClipTokenizer } from '../text/tokenizer.ts';
import { loadLora } from '../lora/load.ts';
import { kohyaMetadata, writeKohyaLora, writePeftLora } from '../lora/write.ts';
import { createTrainingStepper, type StepReport, type TrainingStepper } from '../optim/index.ts';
import { TrainingLogger, stepScalars, memoryMiB, TAGS } from '../logging/training-logger.ts';
import { LossAverage } from '../logging/loss-average.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../sampling/training-schedule.ts';
import { UserError } from '../util/errors.ts';
import type { SessionOptions } from '../runtime/session.ts';
import type { TrainConfig } from './config.ts';
import { loadDataset, stepPlan, type Dataset, type DatasetItem } from './dataset.ts';
import { epochBatches, randomCrop, bucketName, sdxlCropTopLeft } from './buckets.ts';
import { concatFeatures, SDXL_PAD_ID } from '../sd/conditioning.ts';
import { sizeConditionVector } from '../models/unet.ts';
import { captionForStep, captionOptions, splitTags } from './captions.ts';
import { LatentCache } from './latent-cache.ts';
import { loadImageTensor, type ImageTensor } from '../image/load.ts';
import { seededRandom } from './seeded-random.ts';
import { LoraNetwork } from './lora-network.ts';
import { TrainingSampler } from './samples.ts';
import { drawNoise, gaussian, drawTimesteps, noiseBatch, type ObjectiveOptions } from './objective.ts';
import { LoraLossEval, LoraTrainStep, type StepInputs, type StepShape } from './step-graph.ts';
import {
  checkStateConfig,
  loadTrainState,
  restoreNetwork,
  saveTrainState,
  stateDirName,
  type TrainPosition,
} from './state.ts';
import { isLlmModelFolder } from '../llm/config.ts';
import { bakeFrozenWeights, halfHeldWeights } from './frozen-weights.ts';
import { trainLlm } from '../llm/trainer.ts';
import { StepRate } from './step-rate.ts';

export type TrainPhase = 'loading' | 'caching' | 'training' | 'saving' | 'done' | 'cancelled' | 'failed';

/** A snapshot of a run, emitted after every optimizer step and at every phase change. */
export interface TrainProgress {
  phase: TrainPhase;
  /** 1-based epoch being trained. */
  epoch: number;
  epochs: number;
  /** Optimizer steps done. */
  step: number;
  totalSteps: number;
  loss?: number;
  lossAverage?: number;
  lrs?: Record<string, number>;
  gradNorm?: number;
  /** Optimizer steps per second in this session. */
  itPerSec?: number;
  etaSeconds?: number;
  /** For 'caching': latents done / to do. */
  done?: number;
  todo?: number;
}

export type TrainEvent =
  | ({ type: 'progress' } & TrainProgress)
  | { type: 'log'; message: string }
  | { type: 'saved'; kind: 'step' | 'epoch' | 'final' | 'state'; path: string; step: number }
  | { type: 'validation'; step: number; loss: number }
  | { type: 'sample'; step: number; path: string; prompt: string };

export interface TrainOptions {
  /** Aborting stops at the next micro-batch; the state is saved when that is at an optimizer-step boundary. */
  signal?: AbortSignal;
  onEvent?: (e: TrainEvent) => void;
  /** Output LoRA format: kohya (A1111) by default, or diffusers / PEFT keys. */
  saveFormat?: 'kohya' | 'diffusers';
  /** Stop as if killed once this many optimizer steps are done (after that step's saves); tests and debugging. */
  stopAfterStep?: number;
  /** Intra-op threads for ONNX Runtime (default: all cores). */
  threads?: number;
  /** The dataset already loaded from this config (its warnings are then not repeated). */
  dataset?: Dataset;
  /**
   * How the frozen model weights reach ONNX Runtime: 'baked' lets it pre-pack them for faster kernels but
   * holds about two more copies of the UNet; 'fed' keeps one copy (slower, less memory). 'auto' (default)
   * bakes when RAM is at least BAKE_RAM_FACTOR × the model's float32 size.
   */
  frozenWeights?: 'auto' | 'baked' | 'fed';
  /** Gradient checkpointing of the UNet's top-level blocks: less memory, about one more forward per step. */
  gradientCheckpointing?: boolean;
}

export interface TrainResult {
  /** The final LoRA, or undefined when the run stopped early. */
  outputPath?: string;
  /** Optimizer steps done. */
  steps: number;
  totalSteps: number;
  logDir: string;
  /** The last state saved (for resume_from). */
  statePath?: string;
  cancelled: boolean;
  /** Mean loss of the last optimizer step. */
  lastLoss?: number;
  seconds: number;
}

const TOKENS = 77;
export { BAKE_RAM_FACTOR } from './frozen-weights.ts';

class Cancelled extends Error {}

/** Tag counts per dataset folder, as kohya's ss_tag_frequency. */
function tagFrequency(items: readonly DatasetItem[], root: string): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const it of items) {
    const parts = it.key.split('/');
    const dir = parts.length > 1 ? parts[0]! : basename(root);
    const counts = (out[dir] ??= {});
    for (const t of splitTags(it.caption)) counts[t] = (counts[t] ?? 0) + 1;
  }
  return out;
}

/** Identity of the VAE weights for the latent cache: sha256 over their names, shapes and values. */
function vaeIdentity(model: StableDiffusion): string {
  const h = createHash('sha256');
  for (const k of [...model.weights.keys()].filter((k) => k.startsWith('first_stage_model.')).sort()) {
    const w = model.weights.get(k)!;
    h.update(`${k}:${w.shape.join('x')};`);
    h.update(new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength));
  }
  return `sd-vae-mean:${h.digest('hex')}`;
}

function padStep(step: number): string {
  return String(step).padStart(8, '0');
}

class Run {
  private readonly events: (e: TrainEvent) => void;
  private readonly startedAt = Date.now();
  private model!: StableDiffusion;
  private tokenizer!: ClipTokenizer;
  private network!: LoraNetwork;
  private stepper!: TrainingStepper;
  private logger?: TrainingLogger;
  private readonly acp = alphasCumprod(SD_TRAIN_SCHEDULE);
  private readonly objective: ObjectiveOptions;
  private readonly trainTE: boolean;
  private readonly steps = new Map<string, Promise<LoraTrainStep>>();
  private readonly evals = new Map<string, Promise<LoraLossEval>>();
  private readonly contexts = new Map<string, { context: Float32Array; pooled?: Float32Array }>();
  private readonly latents = new Map<string, Float32Array>();
  private cache?: LatentCache;
  private scaling = 0.18215;
  private totalSteps = 0;
  private epochs = 0;
  private readonly rate = new StepRate();
  private lastStatePath?: string;
  private sampler?: TrainingSampler;
  private progress: TrainProgress;

  constructor(
    private readonly config: TrainConfig,
    private readonly opts: TrainOptions,
  ) {
    this.events = opts.onEvent ?? (() => {});
    this.objective = { predictionType: config.prediction_type, noiseOffset: config.noise_offset, minSnrGamma: config.min_snr_gamma };
    this.trainTE = config.train_text_encoder;
    this.progress = { phase: 'loading', epoch: 0, epochs: config.epochs, step: 0, totalSteps: 0 };
  }

  private log(message: string): void {
    this.events({ type: 'log', message });
  }

  private emit(p: Partial<TrainProgress>): void {
    this.progress = { ...this.progress, ...p };
    this.events({ type: 'progress', ...this.progress });
  }

  private checkCancel(): void {
    if (this.opts.signal?.aborted) throw new Cancelled();
  }

  async run(): Promise<TrainResult> {
    const c = this.config;
    await mkdir(c.output_dir, { recursive: true });
    const logDir = resolve(c.logging_dir);
    this.log(`logs: ${logDir}  (view with: tensorboard --logdir "${logDir}")`);
    const halfWeights = halfHeldWeights(Boolean(this.opts.gradientCheckpointing), this.opts.frozenWeights ?? 'auto');
    const session = { device: c.device, threads: this.opts.threads, halfWeights };
    this.model = await StableDiffusion.load(c.base_model, session);
    if (this.model.holdsHalfWeights) this.log('gradient checkpointing: the UNet\'s float16 weights stay float16 in memory (widened where used)');
    if (this.model.arch.family === 'sdxl-refiner') {
      throw new UserError(`base_model ${c.base_model} is an SDXL refiner checkpoint; LoRAs are trained on a base model (an SDXL base checkpoint for SDXL)`);
    }
    this.scaling = this.model.arch.vae.scalingFactor;
    this.tokenizer = await loadClipTokenizer(c.tokenizer);
    this.tokenizer.checkFits(this.model.arch.textEncoder.vocabSize, c.base_model);
    const dataset = this.opts.dataset ?? (await loadDataset(c));
    if (!this.opts.dataset) for (const w of dataset.warnings) this.log(`warning: ${w}`);
    const cov = dataset.coverage;
    this.log(`dataset ${dataset.root}: ${cov.total} images, ${cov.captioned} captioned (metadata ${cov.bySource.metadata}, sidecar ${cov.bySource.sidecar}, folder ${cov.bySource.folder})`);
    const trainItems = dataset.items.filter((i) => i.split === 'train');
    const valItems = dataset.items.filter((i) => i.split === 'validation');
    if (!trainItems.length) throw new UserError(`train_data_dir ${c.train_data_dir}: no images left for training after the validation split`);
    const plan = stepPlan(dataset, c);
    this.totalSteps = plan.totalSteps;
    this.epochs = c.epochs;
    if (c.mixed_precision === 'bf16') this.log('mixed_precision bf16: ONNX Runtime has no bf16 training kernels here; computing in float32');

    this.network = LoraNetwork.create(this.model.weightShapes(), {
      rank: c.lora_rank,
      alpha: c.lora_alpha,
      targets: c.target_modules,
      textEncoder: this.trainTE,
      seed: c.seed,
    });
    if (this.trainTE && !this.network.hasPart('te'))
      throw new UserError(
        `train_text_encoder: ${c.base_model} has no CLIP text encoder in the SD 1.x (transformers) layout this trainer targets; set train_text_encoder: false`,
      );
    if (c.init_lora) {
      const ignored = this.network.loadFrom(await loadLora(c.init_lora), `init_lora ${c.init_lora}`);
      if (ignored.length) this.log(`init_lora: ${ignored.length} modules of ${c.init_lora} are not trained by this config and are dropped (first: ${ignored[0]})`);
    }
    // SDXL's two text encoders share the text-encoder learning rate, as in sd-scripts.
    const parts = { unet: this.network.buffers('unet'), textencoder: new Map([...this.network.buffers('te'), ...this.network.buffers('te2')]) };
    // The compiled step does its own float16 loss scaling; the stepper sees unscaled float32 gradients.
    this.stepper = createTrainingStepper({ ...c, mixed_precision: 'no' }, parts, plan.totalSteps);
    let position: TrainPosition = { epoch: 0, batch: 0 };
    if (c.resume_from) {
      const state = await loadTrainState(c.resume_from);
      for (const w of checkStateConfig(state, c)) this.log(`warning: ${w}`);
      restoreNetwork(state, this.network);
      this.stepper.load(state.optimizer);
      position = state.info.position;
      this.lastStatePath = state.dir;
      this.log(`resumed from ${state.dir}: step ${state.info.step}, epoch ${position.epoch + 1}, micro-batch ${position.batch}`);
    }
    this.log(
      `network: ${this.network.size} LoRA modules (${this.network.modules.filter((m) => m.part === 'unet').length} UNet, ` +
        `${this.network.modules.filter((m) => m.part !== 'unet').length} text encoder), rank ${c.lora_rank}, alpha ${c.lora_alpha}; ` +
        `${trainItems.length} training images, ${plan.totalSteps} optimizer steps`,
    );

    this.logger = TrainingLogger.open(logDir);
    try {
      if (c.cache_latents) {
        try {
          await this.cacheAll(trainItems);
        } catch (e) {
          if (!(e instanceof Cancelled)) throw e;
          this.emit({ phase: 'cancelled' });
          return this.result(undefined, logDir, true);
        }
      }
      const outcome = await this.loop(trainItems, valItems, position, dataset.root);
      if (outcome !== 'finished') {
        return this.result(undefined, logDir, outcome === 'cancelled');
      }
      await this.samples(this.stepper.globalStep);
      this.emit({ phase: 'saving' });
      const out = join(c.output_dir, `${c.output_name}.safetensors`);
      await this.saveLora(out, dataset.items, dataset.root, this.epochs);
      this.events({ type: 'saved', kind: 'final', path: out, step: this.stepper.globalStep });
      this.emit({ phase: 'done' });
      return this.result(out, logDir, false);
    } finally {
      this.logger.close();
    }
  }

  private result(outputPath: string | undefined, logDir: string, cancelled: boolean): TrainResult {
    return {
      outputPath,
      steps: this.stepper.globalStep,
      totalSteps: this.totalSteps,
      logDir,
      statePath: this.lastStatePath,
      cancelled,
      lastLoss: this.progress.loss,
      seconds: (Date.now() - this.startedAt) / 1000,
    };
  }

  // ------------------------------------------------------------ data

  private flipOf(item: DatasetItem, epoch: number): boolean {
    return this.config.flip_aug && seededRandom(this.config.seed, 'flip', item.key, epoch)() < 0.5;
  }

  private async encode(img: ImageTensor): Promise<Float32Array> {
    return this.model.encode(img.data, { batch: 1, height: img.height, width: img.width });
  }

  private async cacheAll(items: readonly DatasetItem[]): Promise<void> {
    this.cache = new LatentCache(this.config.latent_cache_dir, vaeIdentity(this.model));
    const flips = this.config.flip_aug ? [false, true] : [false];
    const todo = items.length * flips.length;
    let done = 0;
    let hits = 0;
    this.emit({ phase: 'caching', done, todo });
    for (const item of items) {
      for (const flip of flips) {
        this.checkCancel();
        const l = await this.cache.getOrEncode(item, { flip }, (img) => this.encode(img));
        if (l.hit) hits++;
        this.latents.set(`${item.path}|${flip}`, l.data);
        this.emit({ phase: 'caching', done: ++done, todo });
      }
    }
    this.log(`latents: ${todo} (${hits} from the cache in ${this.config.latent_cache_dir}, ${todo - hits} encoded)`);
  }

  /** Scaled latent of an item as trained in this epoch (crop and flip). */
  private async latentOf(item: DatasetItem, epoch: number): Promise<Float32Array> {
    // epoch < 0: held-out images, always center crop and no flip.
    const flip = epoch >= 0 && this.flipOf(item, epoch);
    let raw = this.latents.get(`${item.path}|${flip}`);
    if (!raw) {
      const crop = this.config.random_crop && epoch >= 0 ? randomCrop(item.placement, this.config.seed, item.key, epoch) : item.placement.crop;
      raw = await this.encode(await loadImageTensor(item.path, { resized: item.placement.resized, crop, flip }));
      if (epoch < 0) this.latents.set(`${item.path}|false`, raw);
    }
    const out = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = Math.fround(raw[i]! * this.scaling);
    return out;
  }

  /**
   * The frozen text encoders' output for a caption: the UNet context, and for SDXL the pooled embedding too
   * (sd-scripts' SDXL trainer: both towers' penultimate layers side by side, the second padded with 0).
   */
  private async contextOf(caption: string): Promise<{ context: Float32Array; pooled?: Float32Array }> {
    let ctx = this.contexts.get(caption);
    if (!ctx) {
      const padded = this.tokenizer.encodePadded(caption, TOKENS);
      const ids = BigInt64Array.from(padded, BigInt);
      if (this.model.arch.family === 'sdxl') {
        const ids2 = BigInt64Array.from(this.zeroPadded(padded), BigInt);
        const r = await this.model.encodeTextSdxl(ids, ids2, 1, TOKENS);
        ctx = { context: concatFeatures(r.hidden1, r.hidden2, TOKENS), pooled: r.pooled };
      } else {
        ctx = { context: await this.model.encodeText(ids, 1, TOKENS, 1) };
      }
      if (this.contexts.size >= 512) this.contexts.delete(this.contexts.keys().next().value!);
      this.contexts.set(caption, ctx);
    }
    return ctx;
  }

  /** SDXL's OpenCLIP ids: the same tokens, 0 after the first end token. */
  private zeroPadded(padded: readonly number[]): number[] {
    const end = padded.indexOf(this.tokenizer.eos);
    return padded.map((v, i) => (end >= 0 && i > end ? SDXL_PAD_ID : v));
  }

  /** SDXL's per-image size conditioning as kohya records it: original size, crop (see `sdxlCropTopLeft`), bucket size. */
  private sizeConditions(items: readonly DatasetItem[]): number[] {
    return items.flatMap((it) => {
      const b = it.placement.bucket;
      const [top, left] = sdxlCropTopLeft(b, it);
      return [it.height, it.width, top, left, b.height, b.width];
    });
  }

  /** Inputs of one micro-batch: latents stacked, noise and timesteps drawn for (labels), conditioning. */
  private async batchInputs(
    items: readonly DatasetItem[],
    captions: readonly string[],
    epoch: number,
    noise: (shape: number[]) => { timesteps: number[]; noise: Float32Array },
  ): Promise<{ inputs: StepInputs; shape: StepShape }> {
    const lat = await Promise.all(items.map((it) => this.latentOf(it, epoch)));
    const per = lat[0]!.length;
    const C = this.model.arch.unet.inChannels;
    const b = items[0]!.placement.bucket;
    const shape: StepShape = { batch: items.length, height: b.height / 8, width: b.width / 8, tokens: TOKENS };
    if (per !== C * shape.height * shape.width) throw new Error(`latent of ${items[0]!.path} has ${per} values, expected ${C}×${shape.height}×${shape.width}`);
    const latents = new Float32Array(per * items.length);
    lat.forEach((l, i) => latents.set(l, i * per));
    const drawn = noise([items.length, C, shape.height, shape.width]);
    const nb = noiseBatch(latents, drawn.noise, drawn.timesteps, this.acp, this.objective);
    const inputs: StepInputs = { noisy: nb.noisy, timesteps: drawn.timesteps, target: nb.target, weights: nb.weights };
    if (this.trainTE) {
      const padded = captions.map((cap) => this.tokenizer.encodePadded(cap, TOKENS));
      inputs.ids = BigInt64Array.from(padded.flat(), BigInt);
      if (this.model.arch.unet.adm) {
        inputs.ids2 = BigInt64Array.from(padded.flatMap((p) => this.zeroPadded(p)), BigInt);
        inputs.sizes = this.sizeConditions(items);
      }
    } else {
      const encoded = await Promise.all(captions.map((cap) => this.contextOf(cap)));
      const ctxs = encoded.map((e) => e.context);
      const ctx = new Float32Array(ctxs.reduce((n, x) => n + x.length, 0));
      let o = 0;
      for (const x of ctxs) {
        ctx.set(x, o);
        o += x.length;
      }
      inputs.context = ctx;
      const adm = this.model.arch.unet.adm;
      if (adm) {
        const pooled = new Float32Array(items.length * adm.pooledDim);
        encoded.forEach((e, i) => pooled.set(e.pooled!, i * adm.pooledDim));
        inputs.added = sizeConditionVector(pooled, this.sizeConditions(items), adm);
      }
    }
    return { inputs, shape };
  }

  private bake?: boolean;

  private session(): SessionOptions {
    if (this.bake === undefined) {
      const mode = this.opts.frozenWeights ?? 'auto';
      this.bake = !this.model.holdsHalfWeights && bakeFrozenWeights(mode, this.model.weightBytes());
      this.log(`frozen weights: ${this.bake ? 'baked into the session (faster, more memory)' : 'fed at every step (less memory)'}`);
    }
    return { device: this.config.device, threads: this.opts.threads, weights: this.bake ? 'external' : 'inputs' };
  }

  private stepFor(shape: StepShape): Promise<LoraTrainStep> {
    const key = `${shape.batch}x${shape.height}x${shape.width}`;
    let s = this.steps.get(key);
    if (!s) {
      this.log(`compiling the training step for batch ${shape.batch} at ${shape.width * 8}×${shape.height * 8}`);
      s = LoraTrainStep.compile(this.model, this.network, shape, {
        trainTextEncoder: this.trainTE,
        checkpointBlocks: this.opts.gradientCheckpointing,
        precision: this.config.mixed_precision === 'fp16' ? 'float16' : 'float32',
        session: this.session(),
      });
      this.steps.set(key, s);
    }
    return s;
  }

  private evalFor(shape: StepShape): Promise<LoraLossEval> {
    const key = `${shape.batch}x${shape.height}x${shape.width}`;
    let s = this.evals.get(key);
    if (!s) {
      s = LoraLossEval.compile(this.model, this.network, shape, {
        trainTextEncoder: this.trainTE,
        session: this.session(),
      });
      this.evals.set(key, s);
    }
    return s;
  }

  // ------------------------------------------------------------ loop

  private async loop(
    trainItems: DatasetItem[],
    valItems: DatasetItem[],
    start: TrainPosition,
    root: string,
  ): Promise<'finished' | 'stopped' | 'cancelled'> {
    const c = this.config;
    const capOpts = captionOptions(c);
    const placements = trainItems.map((i) => i.placement);
    const repeats = trainItems.map((i) => i.repeats);
    const lossAvg = new LossAverage();
    this.rate.restart();
    const stepsBefore = this.stepper.globalStep;
    this.emit({ phase: 'training', step: stepsBefore, totalSteps: this.totalSteps, epoch: start.epoch + 1 });

    for (let epoch = start.epoch; epoch < c.epochs; epoch++) {
      const batches = epochBatches(placements, repeats, c.batch_size, c.seed, epoch);
      const first = epoch === start.epoch ? start.batch : 0;
      let stepInEpoch = Math.floor(first / c.gradient_accumulation_steps);
      for (let bi = first; bi < batches.length; bi++) {
        try {
          this.checkCancel();
        } catch (e) {
          if (e instanceof Cancelled) return this.cancel({ epoch, batch: bi });
          throw e;
        }
        const items = batches[bi]!.map((i) => trainItems[i]!);
        const microIndex = epoch * batches.length + bi;
        const captions = items.map((it) => captionForStep(it.caption, capOpts, c.seed, it.key, microIndex));
        const { inputs, shape } = await this.batchInputs(items, captions, epoch, (s) =>
          drawNoise(s, this.acp.length, c.noise_offset, c.seed, 'train', epoch, bi),
        );
        const step = await this.stepFor(shape);
        const r = await step.run(inputs);
        if (!r.finite) {
          this.log(`step ${this.stepper.globalStep + 1}: float16 gradients overflowed; micro-batch skipped, loss scale lowered`);
          continue;
        }
        let report = this.stepper.microBatch(r.loss, r.grads);
        if (!report && bi === batches.length - 1) report = this.stepper.flush();
        if (!report) continue;
        const next: TrainPosition = bi === batches.length - 1 ? { epoch: epoch + 1, batch: 0 } : { epoch, batch: bi + 1 };
        const stop = await this.afterStep(report, lossAvg, epoch, stepInEpoch++, next, trainItems, root);
        if (stop) return 'stopped';
      }
      await this.endOfEpoch(epoch, valItems, trainItems, root);
    }
    return 'finished';
  }

  private async afterStep(
    report: StepReport,
    lossAvg: LossAverage,
    epoch: number,
    stepInEpoch: number,
    next: TrainPosition,
    items: DatasetItem[],
    root: string,
  ): Promise<boolean> {
    const c = this.config;
    const avg = lossAvg.add(epoch, stepInEpoch, report.loss);
    this.logger!.scalars(
      report.step,
      stepScalars({ loss: report.loss, lossAverage: avg, lrs: report.lrs, gradNorm: report.gradNorm, memoryMiB: memoryMiB() }),
    );
    this.emit(this.rate.progress(report, avg, epoch, this.totalSteps));
    if (c.save_steps > 0 && report.step % c.save_steps === 0 && report.step < this.totalSteps) {
      const path = join(c.output_dir, `${c.output_name}-step${padStep(report.step)}.safetensors`);
      await this.saveLora(path, items, root, epoch + 1);
      this.events({ type: 'saved', kind: 'step', path, step: report.step });
      await this.saveState(next);
      await this.prune();
    }
    if (c.sample_every_n_steps > 0 && report.step % c.sample_every_n_steps === 0 && report.step < this.totalSteps) await this.samples(report.step);
    return this.opts.stopAfterStep !== undefined && report.step >= this.opts.stopAfterStep;
  }

  /** Renders sample_prompts with the LoRA as it is now; training state is untouched. */
  private async samples(step: number): Promise<void> {
    const c = this.config;
    if (!c.sample_prompts.length) return;
    // A LoRA merge patches float32 weights: half-held ones are widened while the samples render.
    const rendered = await this.model.withFloat32Weights(() => {
      this.sampler ??= new TrainingSampler(this.model, this.tokenizer, this.network, join(c.output_dir, 'sample'), c.output_name, (m) => this.log(m), c.base_model);
      return this.sampler.render(c.sample_prompts, step, { seed: c.seed, size: c.resolution });
    });
    for (const [i, r] of rendered.entries()) {
      await this.logger!.image(`sample/${i}`, step, r.png);
      this.events({ type: 'sample', step, path: r.path, prompt: r.prompt });
    }
  }

  private async endOfEpoch(epoch: number, valItems: DatasetItem[], trainItems: DatasetItem[], root: string): Promise<void> {
    const c = this.config;
    if (valItems.length) {
      const loss = await this.validationLoss(valItems);
      this.logger!.scalars(this.stepper.globalStep, { [TAGS.lossValidation]: loss });
      this.events({ type: 'validation', step: this.stepper.globalStep, loss });
    }
    const n = epoch + 1;
    if (c.save_every_n_epochs > 0 && n % c.save_every_n_epochs === 0 && n < c.epochs) {
      const path = join(c.output_dir, `${c.output_name}-${String(n).padStart(6, '0')}.safetensors`);
      await this.saveLora(path, trainItems, root, n);
      this.events({ type: 'saved', kind: 'epoch', path, step: this.stepper.globalStep });
      await this.saveState({ epoch: n, batch: 0 });
      await this.prune();
    }
  }

  /** Mean loss over held-out images with noise and timesteps fixed per image, so values compare across steps. */
  async validationLoss(items: readonly DatasetItem[]): Promise<number> {
    let total = 0;
    for (const item of items) {
      const { inputs, shape } = await this.batchInputs([item], [item.caption], -1, (s) => ({
        timesteps: drawTimesteps(1, this.acp.length, seededRandom(this.config.seed, 'validation-t', item.key)),
        noise: gaussian(s.reduce((a, b) => a * b, 1), seededRandom(this.config.seed, 'validation-noise', item.key)),
      }));
      const ev = await this.evalFor(shape);
      total += (await ev.run(inputs)).loss;
    }
    return total / items.length;
  }

  private async cancel(at: TrainPosition): Promise<'cancelled'> {
    if (this.stepper.pendingMicroBatches === 0) await this.saveState(at);
    else this.log('cancelled in the middle of gradient accumulation: the partial step is dropped; the last saved state stands');
    this.emit({ phase: 'cancelled' });
    return 'cancelled';
  }

  // ------------------------------------------------------------ saving

  private async saveState(position: TrainPosition): Promise<void> {
    const dir = join(this.config.output_dir, stateDirName(this.stepper.globalStep));
    await saveTrainState(dir, {
      network: this.network,
      optimizer: this.stepper.state(),
      step: this.stepper.globalStep,
      position,
      config: this.config,
    });
    this.lastStatePath = dir;
    this.events({ type: 'saved', kind: 'state', path: dir, step: this.stepper.globalStep });
  }

  private async saveLora(path: string, items: readonly DatasetItem[], root: string, epoch: number): Promise<void> {
    const c = this.config;
    const modules = this.network.toLoraModules();
    if (this.opts.saveFormat === 'diffusers') {
      await writePeftLora(path, modules, { extraMetadata: { ss_output_name: c.output_name } });
      return;
    }
    const conv = this.network.modules.some((m) => m.kind === 'conv' && m.kernel[0] > 1);
    const family = this.model.arch.family;
    const version = family === 'sdxl' ? 'sdxl_base_v1-0' : family === 'sd2' ? (c.prediction_type === 'v_prediction' ? 'sd_v2_v' : 'sd_v2') : 'sd_v1';
    const buckets = new Set(items.map((i) => bucketName(i.placement.bucket)));
    const md = kohyaMetadata({
      outputName: c.output_name,
      networkDim: c.lora_rank,
      networkAlpha: c.lora_alpha,
      baseModelVersion: version,
      networkModule: 'networks.lora',
      networkArgs: conv ? { conv_dim: String(c.lora_rank), conv_alpha: String(c.lora_alpha) } : undefined,
      tagFrequency: tagFrequency(items, root),
      trainingStartedAt: this.startedAt / 1000,
      trainingFinishedAt: Date.now() / 1000,
      extra: {
        ss_sd_model_name: basename(c.base_model),
        ss_learning_rate: c.learning_rate,
        ss_unet_lr: c.learning_rate,
        ss_text_encoder_lr: this.trainTE ? c.text_encoder_lr : null,
        ss_network_train_unet_only: !this.trainTE,
        ss_num_train_images: items.filter((i) => i.split === 'train').reduce((n, i) => n + i.repeats, 0),
        ss_num_epochs: c.epochs,
        ss_epoch: epoch,
        ss_steps: this.stepper.globalStep,
        ss_max_train_steps: this.totalSteps,
        ss_batch_size_per_device: c.batch_size,
        ss_gradient_accumulation_steps: c.gradient_accumulation_steps,
        ss_lr_scheduler: c.lr_scheduler,
        ss_lr_warmup_steps: c.lr_warmup_steps,
        ss_optimizer: c.optimizer === 'adamw' ? 'torch.optim.AdamW' : 'torch.optim.SGD',
        ss_max_grad_norm: c.max_grad_norm,
        ss_resolution: `(${c.resolution}, ${c.resolution})`,
        ss_enable_bucket: c.enable_bucket,
        ss_min_bucket_reso: c.min_bucket_reso,
        ss_max_bucket_reso: c.max_bucket_reso,
        ss_bucket_info: JSON.stringify({ buckets: [...buckets] }),
        ss_seed: c.seed,
        ss_noise_offset: c.noise_offset || null,
        ss_min_snr_gamma: c.min_snr_gamma || null,
        ss_v_parameterization: c.prediction_type === 'v_prediction',
        ss_mixed_precision: c.mixed_precision,
        ss_clip_skip: null,
        ss_cache_latents: c.cache_latents,
        ss_flip_aug: c.flip_aug,
        ss_random_crop: c.random_crop,
        ss_shuffle_caption: c.shuffle_caption,
        ss_keep_tokens: c.keep_tokens,
        ss_caption_dropout_rate: c.caption_dropout_rate,
        ss_caption_tag_dropout_rate: c.caption_tag_dropout_rate,
        ss_training_comment: 'trained with lora-scripts (Node.js / ONNX Runtime)',
      },
    });
    await writeKohyaLora(path, modules, md);
  }

  /** keep_last_n: the N most recent intermediate LoRAs and states stay; the final LoRA is never touched. */
  private async prune(): Promise<void> {
    const n = this.config.keep_last_n;
    if (n <= 0) return;
    const dir = this.config.output_dir;
    const name = this.config.output_name;
    const entries = await readdir(dir).catch(() => [] as string[]);
    const esc = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const loraRe = new RegExp(`^${esc}-(step\\d{8}|\\d{6})\\.safetensors$`);
    const withTime = async (f: string) => ({ f, t: (await stat(join(dir, f))).mtimeMs });
    const loras = (await Promise.all(entries.filter((f) => loraRe.test(f)).map(withTime))).sort((a, b) => a.t - b.t || (a.f < b.f ? -1 : 1));
    for (const { f } of loras.slice(0, Math.max(0, loras.length - n))) await rm(join(dir, f), { force: true });
    const states = entries.filter((f) => /^state-\d{8}$/.test(f)).sort();
    for (const f of states.slice(0, Math.max(0, states.length - n))) await rm(join(dir, f), { recursive: true, force: true });
  }
}

/** Runs a whole training from a validated config (see loadTrainConfig). */
export async function train(config: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  // A Hugging Face causal-LM folder as base_model trains an LLM LoRA (PEFT adapter) with the same config.
  if (await isLlmModelFolder(config.base_model)) return trainLlm(config, opts);
  return new Run(config, opts).run();
}

/**
 * A training run observed from outside, for servers and UIs:
 *   const job = TrainingJob.start(config);
 *   job.on('progress', (p) => …); job.on('log', (msg) => …); job.on('saved', (s) => …);
 *   job.cancel();  const result = await job.done;
 * `job.progress` is the latest snapshot; `job.status` is 'running' | 'done' | 'cancelled' | 'failed'.
 */
export class TrainingJob extends EventEmitter {
  readonly done: Promise<TrainResult>;
  progress: TrainProgress;
  status: 'running' | 'done' | 'cancelled' | 'failed' = 'running';
  error?: Error;
  private readonly abort = new AbortController();

  private constructor(config: TrainConfig, opts: Omit<TrainOptions, 'signal' | 'onEvent'>) {
    super();
    this.progress = { phase: 'loading', epoch: 0, epochs: config.epochs, step: 0, totalSteps: 0 };
    this.done = train(config, {
      ...opts,
      signal: this.abort.signal,
      onEvent: (e) => {
        if (e.type === 'progress') {
          const { type: _t, ...p } = e;
          this.progress = p;
          this.emit('progress', p);
        } else if (e.type === 'log') this.emit('log', e.message);
        else this.emit(e.type, e);
      },
    }).then(
      (r) => {
        this.status = r.cancelled ? 'cancelled' : 'done';
        this.emit('end', r);
        return r;
      },
      (e: Error) => {
        this.status = 'failed';
        this.error = e;
        this.progress = { ...this.progress, phase: 'failed' };
        // 'error' would throw without a listener; failures are reported through `done` and 'failed'.
        this.emit('failed', e);
        throw e;
      },
    );
    // Keep an unobserved failure from becoming an unhandled rejection; callers still see it via `done`.
    this.done.catch(() => {});
  }

  static start(config: TrainConfig, opts: Omit<TrainOptions, 'signal' | 'onEvent'> = {}): TrainingJob {
    return new TrainingJob(config, opts);
  }

  /** Stops at the next micro-batch; the state is saved there when possible, so the run can be resumed. */
  cancel(): void {
    this.abort.abort();
  }
}
