/**
 * LoRA training of a causal LM from the same YAML config, events and outputs as the image trainer:
 * dataset summary, AdamW/SGD with schedules and gradient accumulation (engine/optim), NaN/inf guard,
 * TensorBoard + JSONL logs, states for an exact resume, `keep_last_n`. The adapter is written as PEFT
 * writes it: `<output_dir>/<output_name>/adapter_config.json + adapter_model.safetensors`
 * (`<output_name>-step00000500/` for step saves, `<output_name>-000001/` per epoch).
 *
 * Data order is a function of (seed, epoch) and dropout masks are drawn by ONNX Runtime, so a resumed run
 * repeats an uninterrupted one exactly when lora_dropout is 0.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { compile, type CompiledGraph } from '../runtime/session.ts';
import { compileTrainStep, type TrainStep } from '../runtime/train-step.ts';
import { AdamW, SGD, SGD_MOMENTUM, TrainingStepper, makeSchedule, resolveWarmupSteps, type Optimizer, type StepReport } from '../optim/index.ts';
import { LossAverage } from '../logging/loss-average.ts';
import { TAGS, TrainingLogger, memoryMiB, stepScalars } from '../logging/training-logger.ts';
import type { TrainConfig } from '../train/config.ts';
import { checkStateConfig, loadTrainState, saveTrainStateTensors, stateDirName, type TrainPosition } from '../train/state.ts';
import type { TrainOptions, TrainProgress, TrainResult } from '../train/trainer.ts';
import { bakeFrozenWeights } from '../train/frozen-weights.ts';
import { UserError } from '../util/errors.ts';
import { answerLoss, batchFeeds } from './evaluate.ts';
import { describeSummary, epochBatches, loadTextDataset, makeBatch, type Example, type TextDataset } from './data.ts';
import { readLlmConfig } from './config.ts';
import { modelShapes } from './weights.ts';
import { loadLlm, llmContext, type LoadedLlm } from './load.ts';
import { ALL_LINEAR, LlmLoraNetwork, selectLlmTargets } from './lora-network.ts';
import { llamaForCausalLM } from './model.ts';
import { causalLmLoss } from './objective.ts';
import { loadPeftAdapter, writePeftAdapter } from './peft.ts';
import { LlmTokenizer } from './tokenizer.ts';
import { StepRate } from '../train/step-rate.ts';

const ATTENTION = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

/** target_modules of the shared config, read for a decoder: attention = q/k/v/o, attention_mlp = all-linear. */
export function llmTargetList(t: TrainConfig['target_modules']): string[] | string {
  if (Array.isArray(t)) return t;
  if (t === 'attention') return ATTENTION;
  if (t === 'attention_mlp' || t === ALL_LINEAR) return ALL_LINEAR;
  throw new UserError(`target_modules '${t}' is for Stable Diffusion (convolutions); for an LLM use attention, attention_mlp, all-linear or a list`);
}

const pad8 = (n: number) => String(n).padStart(8, '0');

class Cancelled extends Error {}

class LlmRun {
  private model!: LoadedLlm;
  private network!: LlmLoraNetwork;
  private stepper!: TrainingStepper;
  private step!: TrainStep;
  private evalGraph?: CompiledGraph;
  private logger?: TrainingLogger;
  private examples: Example[] = [];
  private totalSteps = 0;
  private lastStatePath?: string;
  private readonly rate = new StepRate();
  private padId = 0;
  private readonly t0 = performance.now();

  constructor(
    private readonly config: TrainConfig,
    private readonly opts: TrainOptions,
  ) {}

  private emit(p: Partial<TrainProgress> & { phase: TrainProgress['phase'] }): void {
    const c = this.config;
    this.opts.onEvent?.({ type: 'progress', epoch: 0, epochs: c.epochs, step: this.stepper?.globalStep ?? 0, totalSteps: this.totalSteps, ...p });
  }

  private log(message: string): void {
    this.opts.onEvent?.({ type: 'log', message });
  }

  private checkCancel(): void {
    if (this.opts.signal?.aborted) throw new Cancelled();
  }

  async run(): Promise<TrainResult> {
    const c = this.config;
    this.emit({ phase: 'loading' });
    this.model = await loadLlm(c.base_model);
    const tok = await LlmTokenizer.load(c.tokenizer);
    this.padId = tok.eosIds[0] ?? 0;
    const data = await loadTextDataset(c.train_data_dir, tok, { maxSeqLength: c.max_seq_length, validationSplit: c.validation_split, seed: c.seed });
    this.examples = data.examples;
    this.log(describeSummary(data.summary, c.max_seq_length));
    if (c.mixed_precision !== 'no') this.log(`mixed_precision ${c.mixed_precision}: LLM training computes in float32`);

    const targets = selectLlmTargets(this.model.weights, llmTargetList(c.target_modules));
    if (c.init_lora) {
      this.network = LlmLoraNetwork.fromAdapter(await loadPeftAdapter(c.init_lora));
      const want = new Set(targets.map((t) => t.module));
      if (this.network.modules.some((m) => m.rank !== c.lora_rank) || this.network.modules.length !== want.size || this.network.modules.some((m) => !want.has(m.module)))
        throw new UserError(`init_lora ${c.init_lora}: its modules or rank differ from lora_rank ${c.lora_rank} and target_modules ${JSON.stringify(c.target_modules)}`);
    } else this.network = LlmLoraNetwork.create(targets, { rank: c.lora_rank, alpha: c.lora_alpha, seed: c.seed });
    this.log(`LoRA: ${this.network.modules.length} modules (${this.network.targetNames().join(', ')}), rank ${c.lora_rank}, alpha ${c.lora_alpha}`);

    const batchesPerEpoch = epochBatches(this.examples, this.batchOpts(0)).length;
    const stepsPerEpoch = Math.ceil(batchesPerEpoch / c.gradient_accumulation_steps);
    this.totalSteps = stepsPerEpoch * c.epochs;
    this.stepper = this.makeStepper();

    let start: TrainPosition = { epoch: 0, batch: 0 };
    if (c.resume_from) {
      const state = await loadTrainState(c.resume_from);
      for (const w of checkStateConfig(state, c)) this.log(`warning: ${w}`);
      this.network.load(state.lora, `resume_from ${state.dir}`);
      this.stepper.load(state.optimizer);
      start = state.info.position;
      this.lastStatePath = state.dir;
      this.log(`resumed from ${state.dir} at step ${state.info.step} (epoch ${start.epoch + 1}, micro-batch ${start.batch})`);
    }

    const bake = bakeFrozenWeights(this.opts.frozenWeights ?? 'auto', this.modelBytes());
    const session = { device: c.device, threads: this.opts.threads, weights: bake ? ('external' as const) : ('inputs' as const) };
    const graph = llamaForCausalLM(llmContext(this.model.weights, { adapter: this.network.hook(c.lora_dropout, true), training: true }), this.model.arch, {
      checkpointLayers: this.opts.gradientCheckpointing,
    });
    this.step = await compileTrainStep({ loss: causalLmLoss(graph.logits).loss, params: this.network.paramTensors(), session });
    if (this.examples.some((e) => e.split === 'validation')) {
      const ev = llamaForCausalLM(llmContext(this.model.weights, { adapter: this.network.hook(0, false) }), this.model.arch);
      // The LoRA buffers change every step: fed, never baked.
      this.evalGraph = await compile([causalLmLoss(ev.logits).loss], { ...session, alwaysFeed: new Set(this.network.paramTensors()) });
    }

    this.logger = TrainingLogger.open(c.logging_dir);
    this.log(`logs: ${c.logging_dir}`);
    let outcome: 'finished' | 'stopped' | 'cancelled';
    try {
      outcome = await this.loop(start);
      if (outcome === 'finished') {
        this.emit({ phase: 'saving' });
        const out = join(c.output_dir, c.output_name);
        await this.saveAdapter(out);
        this.opts.onEvent?.({ type: 'saved', kind: 'final', path: out, step: this.stepper.globalStep });
        this.emit({ phase: 'done', step: this.stepper.globalStep });
        return this.result(out, false);
      }
    } finally {
      this.logger.close();
    }
    return this.result(undefined, outcome === 'cancelled');
  }

  private result(outputPath: string | undefined, cancelled: boolean): TrainResult {
    return {
      outputPath,
      steps: this.stepper.globalStep,
      totalSteps: this.totalSteps,
      logDir: this.config.logging_dir,
      statePath: this.lastStatePath,
      cancelled,
      seconds: (performance.now() - this.t0) / 1000,
    };
  }

  private modelBytes(): number {
    let n = 0;
    for (const t of this.model.weights.values()) n += t.data.byteLength;
    return n;
  }

  private batchOpts(epoch: number) {
    const c = this.config;
    return { seed: c.seed, epoch, batchSize: c.batch_size, packing: c.packing, maxSeqLength: c.max_seq_length };
  }

  private makeStepper(): TrainingStepper {
    const c = this.config;
    const groups = [{ name: 'lora', params: this.network.params(), lr: c.learning_rate }];
    const optimizer: Optimizer = c.optimizer === 'sgd' ? new SGD(groups, { momentum: SGD_MOMENTUM, weightDecay: c.weight_decay }) : new AdamW(groups, { weightDecay: c.weight_decay });
    const schedule = makeSchedule({
      name: c.lr_scheduler,
      warmupSteps: resolveWarmupSteps(c.lr_warmup_steps, this.totalSteps),
      totalSteps: this.totalSteps,
      lrInit: c.learning_rate,
    });
    return new TrainingStepper({ optimizer, schedule, accumulationSteps: c.gradient_accumulation_steps, maxGradNorm: c.max_grad_norm });
  }

  private async loop(start: TrainPosition): Promise<'finished' | 'stopped' | 'cancelled'> {
    const c = this.config;
    const lossAvg = new LossAverage();
    this.rate.restart();
    this.emit({ phase: 'training', epoch: start.epoch + 1 });
    for (let epoch = start.epoch; epoch < c.epochs; epoch++) {
      const batches = epochBatches(this.examples, this.batchOpts(epoch));
      const first = epoch === start.epoch ? start.batch : 0;
      let stepInEpoch = Math.floor(first / c.gradient_accumulation_steps);
      for (let bi = first; bi < batches.length; bi++) {
        try {
          this.checkCancel();
        } catch (e) {
          if (e instanceof Cancelled) return this.cancel({ epoch, batch: bi });
          throw e;
        }
        const batch = makeBatch(batches[bi]!, this.padId);
        if (batch.lossTokens === 0) continue;
        const r = await this.step.run(batchFeeds(this.model.arch, batch));
        let report = this.stepper.microBatch(r.loss, r.grads);
        if (!report && bi === batches.length - 1) report = this.stepper.flush();
        if (!report) continue;
        const next: TrainPosition = bi === batches.length - 1 ? { epoch: epoch + 1, batch: 0 } : { epoch, batch: bi + 1 };
        if (await this.afterStep(report, lossAvg, epoch, stepInEpoch++, next)) return 'stopped';
      }
      await this.endOfEpoch(epoch);
    }
    return 'finished';
  }

  private async afterStep(report: StepReport, lossAvg: LossAverage, epoch: number, stepInEpoch: number, next: TrainPosition): Promise<boolean> {
    const c = this.config;
    const avg = lossAvg.add(epoch, stepInEpoch, report.loss);
    this.logger!.scalars(report.step, stepScalars({ loss: report.loss, lossAverage: avg, lrs: report.lrs, gradNorm: report.gradNorm, memoryMiB: memoryMiB() }));
    this.emit(this.rate.progress(report, avg, epoch, this.totalSteps));
    if (c.save_steps > 0 && report.step % c.save_steps === 0 && report.step < this.totalSteps) {
      const path = join(c.output_dir, `${c.output_name}-step${pad8(report.step)}`);
      await this.saveAdapter(path);
      this.opts.onEvent?.({ type: 'saved', kind: 'step', path, step: report.step });
      await this.saveState(next);
      await this.prune();
    }
    return this.opts.stopAfterStep !== undefined && report.step >= this.opts.stopAfterStep;
  }

  private async endOfEpoch(epoch: number): Promise<void> {
    const c = this.config;
    if (this.evalGraph) {
      const loss = await this.validationLoss();
      this.logger!.scalars(this.stepper.globalStep, { [TAGS.lossValidation]: loss });
      this.opts.onEvent?.({ type: 'validation', step: this.stepper.globalStep, loss });
    }
    const n = epoch + 1;
    if (c.save_every_n_epochs > 0 && n % c.save_every_n_epochs === 0 && n < c.epochs) {
      const path = join(c.output_dir, `${c.output_name}-${String(n).padStart(6, '0')}`);
      await this.saveAdapter(path);
      this.opts.onEvent?.({ type: 'saved', kind: 'epoch', path, step: this.stepper.globalStep });
      await this.saveState({ epoch: n, batch: 0 });
      await this.prune();
    }
  }

  private validationLoss(): Promise<number> {
    return answerLoss(this.evalGraph!, this.model.arch, this.examples.filter((x) => x.split === 'validation'), this.padId);
  }

  private async cancel(at: TrainPosition): Promise<'cancelled'> {
    if (this.stepper.pendingMicroBatches === 0) await this.saveState(at);
    else this.log('cancelled in the middle of gradient accumulation: the partial step is dropped; the last saved state stands');
    this.emit({ phase: 'cancelled' });
    return 'cancelled';
  }

  private async saveState(position: TrainPosition): Promise<void> {
    const dir = join(this.config.output_dir, stateDirName(this.stepper.globalStep));
    const tensors = new Map([...this.network.tensors()].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));
    const alphas = Object.fromEntries(this.network.modules.map((m) => [m.module, m.alpha]));
    await saveTrainStateTensors(dir, { tensors, alphas, optimizer: this.stepper.state(), step: this.stepper.globalStep, position, config: this.config });
    this.lastStatePath = dir;
    this.opts.onEvent?.({ type: 'saved', kind: 'state', path: dir, step: this.stepper.globalStep });
  }

  private async saveAdapter(dir: string): Promise<void> {
    const c = this.config;
    // An init_lora adapter keeps its own alpha (its scale is what was trained).
    const first = this.network.modules[0];
    await writePeftAdapter(dir, {
      rank: first?.rank ?? c.lora_rank,
      alpha: first?.alpha ?? c.lora_alpha,
      dropout: c.lora_dropout,
      targetModules: this.network.targetNames(),
      baseModel: basename(c.base_model),
      tensors: this.network.tensors(),
    });
  }

  /** keep_last_n: the N most recent intermediate adapters and states stay; the final adapter is never touched. */
  private async prune(): Promise<void> {
    const n = this.config.keep_last_n;
    if (n <= 0) return;
    const dir = this.config.output_dir;
    const esc = this.config.output_name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const re = new RegExp(`^${esc}-(step\\d{8}|\\d{6})$`);
    const entries = await readdir(dir).catch(() => [] as string[]);
    const withTime = async (f: string) => ({ f, t: (await stat(join(dir, f))).mtimeMs });
    const saves = (await Promise.all(entries.filter((f) => re.test(f)).map(withTime))).sort((a, b) => a.t - b.t || (a.f < b.f ? -1 : 1));
    for (const { f } of saves.slice(0, Math.max(0, saves.length - n))) await rm(join(dir, f), { recursive: true, force: true });
    const states = entries.filter((f) => /^state-\d{8}$/.test(f)).sort();
    for (const f of states.slice(0, Math.max(0, states.length - n))) await rm(join(dir, f), { recursive: true, force: true });
  }
}

/** Trains an LLM LoRA from a validated config whose base_model is a causal-LM folder. */
export function trainLlm(config: TrainConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  return new LlmRun(config, opts).run();
}

/** What a run of this config will train: the tokenized dataset and its step counts (no model weights read). */
export async function llmTrainingPlan(c: TrainConfig): Promise<{ data: TextDataset; batchesPerEpoch: number; stepsPerEpoch: number; totalSteps: number }> {
  const tok = await LlmTokenizer.load(c.tokenizer);
  const data = await loadTextDataset(c.train_data_dir, tok, { maxSeqLength: c.max_seq_length, validationSplit: c.validation_split, seed: c.seed });
  const batchesPerEpoch = epochBatches(data.examples, { seed: c.seed, epoch: 0, batchSize: c.batch_size, packing: c.packing, maxSeqLength: c.max_seq_length }).length;
  const stepsPerEpoch = Math.ceil(batchesPerEpoch / c.gradient_accumulation_steps);
  return { data, batchesPerEpoch, stepsPerEpoch, totalSteps: stepsPerEpoch * c.epochs };
}

/** `train --dry-run` for an LLM: the dataset summary and step counts, nothing trained. */
export async function llmDryRunReport(config: TrainConfig): Promise<string> {
  const c = config;
  const arch = await readLlmConfig(c.base_model);
  const plan = await llmTrainingPlan(c);
  const targets = selectLlmTargets(await modelShapes(c.base_model), llmTargetList(c.target_modules));
  return [
    `# model ${c.base_model}: ${arch.modelType}, ${arch.layers} layers, hidden ${arch.hidden}, ${arch.heads} heads (${arch.kvHeads} KV), vocab ${arch.vocab}`,
    `# data ${plan.data.files.length} file(s) in ${c.train_data_dir}`,
    describeSummary(plan.data.summary, c.max_seq_length),
    `LoRA: ${targets.length} modules, rank ${c.lora_rank}, alpha ${c.lora_alpha}`,
    `steps: ${plan.batchesPerEpoch} batches of ≤ ${c.batch_size} ${c.packing ? 'packed rows' : 'rows'} per epoch, ${plan.stepsPerEpoch} optimizer steps per epoch (gradient accumulation ${c.gradient_accumulation_steps}), ${plan.totalSteps} in total over ${c.epochs} epochs`,
    '',
    'dry run: config and dataset are valid; nothing was trained',
  ].join('\n');
}
