import { UserError } from '../util/errors.ts';
import { GradAccumulator } from './accumulate.ts';
import { clipByGlobalNorm } from './clip.ts';
import { NonFiniteError, assertFiniteGrads, assertFiniteLoss, type NonFiniteElement } from './guard.ts';
import type { DynamicLossScaler, LossScalerState } from './loss-scale.ts';
import type { Optimizer, OptimizerState } from './optimizer.ts';
import type { LrSchedule } from './schedules.ts';
import { toTensorMap, type TensorMapLike } from './tensors.ts';

export interface StepperOptions {
  optimizer: Optimizer;
  /** Factor on each group's base lr, indexed by applied optimizer steps; default constant 1. */
  schedule?: LrSchedule;
  /** Micro-batches per optimizer step (gradient_accumulation_steps), default 1. */
  accumulationSteps?: number;
  /** Global-norm clip (max_grad_norm); 0 or absent only measures the norm. */
  maxGradNorm?: number;
  /** float16 training: gradients arrive multiplied by lossScaler.scale. */
  lossScaler?: DynamicLossScaler;
  /** With loss scaling, this many skipped steps in a row stop training (default 40: 2^16 → 2^-24). */
  maxConsecutiveSkips?: number;
}

export interface StepReport {
  /** 1-based number of this optimizer step, skipped ones included (kohya's global_step). */
  step: number;
  /** False when the loss scaler found an overflow and skipped the update. */
  applied: boolean;
  /** Mean loss over the step's micro-batches (weighted like the gradients). */
  loss: number;
  /** Global gradient norm before clipping, unscaled; NaN/inf when the step overflowed. */
  gradNorm: number;
  /** Learning rate per parameter group used by this step (or that it would have used when skipped). */
  lrs: Record<string, number>;
  /** Loss scale in force for this step (1 without loss scaling). */
  lossScale: number;
  /** The first bad gradient element of a skipped step. */
  overflow?: NonFiniteElement;
}

interface StepperBookkeeping {
  globalStep: number;
  schedulerStep: number;
  consecutiveSkips: number;
  lossScaler?: LossScalerState;
}

/**
 * One optimizer step from micro-batch gradients, in the order accelerate / kohya use: accumulate, unscale,
 * NaN/inf check, clip, step, advance the schedule. Parameters change only after every check has passed.
 */
export class TrainingStepper {
  readonly optimizer: Optimizer;
  private readonly schedule: LrSchedule;
  readonly accumulationSteps: number;
  readonly maxGradNorm: number;
  private readonly scaler: DynamicLossScaler | undefined;
  private readonly maxSkips: number;
  private readonly acc = new GradAccumulator({ mode: 'mean' });
  private lossSum = 0;
  private weightSum = 0;
  private nonFiniteLoss: number | undefined;
  private global = 0;
  private sched = 0;
  private skips = 0;

  constructor(opts: StepperOptions) {
    this.optimizer = opts.optimizer;
    this.schedule = opts.schedule ?? (() => 1);
    this.accumulationSteps = opts.accumulationSteps ?? 1;
    if (!Number.isInteger(this.accumulationSteps) || this.accumulationSteps < 1) {
      throw new UserError(`gradient_accumulation_steps must be a positive integer, got ${this.accumulationSteps}`);
    }
    this.maxGradNorm = opts.maxGradNorm ?? 0;
    if (!Number.isFinite(this.maxGradNorm) || this.maxGradNorm < 0) {
      throw new UserError(`max_grad_norm must be ≥ 0, got ${this.maxGradNorm}`);
    }
    this.scaler = opts.lossScaler;
    this.maxSkips = opts.maxConsecutiveSkips ?? 40;
  }

  /** Optimizer steps taken so far, skipped ones included. */
  get globalStep(): number {
    return this.global;
  }

  /** Applied steps so far: the schedule's index (a skipped step does not advance it, as in accelerate). */
  get schedulerStep(): number {
    return this.sched;
  }

  get pendingMicroBatches(): number {
    return this.acc.count;
  }

  /** Multiply the loss by this before backward. */
  get lossScale(): number {
    return this.scaler?.scale ?? 1;
  }

  /** Learning rates the next step will use. */
  nextLrs(): Record<string, number> {
    return this.optimizer.lrs(this.schedule(this.sched));
  }

  /**
   * Adds one micro-batch: its (unscaled) loss and its gradients (scaled by lossScale when loss scaling is on).
   * Returns the step report when this micro-batch completes an optimizer step, else undefined.
   */
  microBatch(loss: number, grads: TensorMapLike, weight = 1): StepReport | undefined {
    const step = this.global + 1;
    const mb = { index: this.acc.count + 1, of: this.accumulationSteps };
    if (!this.scaler) {
      assertFiniteLoss(loss, step, mb);
      // Checked per micro-batch so the message names the one that broke.
      assertFiniteGrads(toTensorMap(grads), step, loss, mb);
      this.acc.add(grads, weight);
    } else {
      if (!Number.isFinite(loss) && this.nonFiniteLoss === undefined) this.nonFiniteLoss = loss;
      this.acc.add(grads, weight);
    }
    this.lossSum += weight * loss;
    this.weightSum += weight;
    return this.acc.count >= this.accumulationSteps ? this.finish() : undefined;
  }

  /** Steps on a partial accumulation (end of an epoch); undefined when nothing is pending. */
  flush(): StepReport | undefined {
    return this.acc.count > 0 ? this.finish() : undefined;
  }

  private finish(): StepReport {
    const step = this.global + 1;
    const loss = this.lossSum / this.weightSum;
    const grads = this.acc.result();
    this.lossSum = 0;
    this.weightSum = 0;
    const lrs = this.optimizer.lrs(this.schedule(this.sched));
    const lossScale = this.lossScale;
    if (this.scaler) {
      let overflow = this.scaler.unscale(grads);
      if (!overflow && this.nonFiniteLoss !== undefined) overflow = { name: 'loss', index: 0, value: this.nonFiniteLoss };
      this.nonFiniteLoss = undefined;
      if (overflow) {
        this.scaler.update(true);
        this.global = step;
        this.skips++;
        if (this.skips >= this.maxSkips) {
          throw new NonFiniteError(
            `${this.skips} optimizer steps in a row overflowed (last: step ${step}, '${overflow.name}' is ${overflow.value}` +
              `${overflow.name === 'loss' ? '' : ` at element ${overflow.index}`}; loss scale now ${this.scaler.scale}). ` +
              'Training is diverging or float16 cannot represent it: lower the learning rate or train in bf16/float32.',
            { step, tensor: overflow.name, index: overflow.index, value: overflow.value },
          );
        }
        return { step, applied: false, loss, gradNorm: NaN, lrs, lossScale, overflow };
      }
    }
    const gradNorm = clipByGlobalNorm(grads, this.maxGradNorm);
    this.optimizer.step(grads, this.schedule(this.sched));
    this.scaler?.update(false);
    this.global = step;
    this.sched++;
    this.skips = 0;
    return { step, applied: true, loss, gradNorm, lrs, lossScale };
  }

  /** Optimizer state plus this stepper's counters; only between optimizer steps. */
  state(): OptimizerState {
    if (this.acc.count > 0) throw new Error('cannot save training state in the middle of gradient accumulation');
    const st = this.optimizer.state();
    const book: StepperBookkeeping = {
      globalStep: this.global,
      schedulerStep: this.sched,
      consecutiveSkips: this.skips,
      ...(this.scaler ? { lossScaler: this.scaler.state() } : {}),
    };
    st.header.extra = { ...st.header.extra, stepper: book };
    return st;
  }

  load(state: OptimizerState): void {
    const book = state.header.extra?.['stepper'] as StepperBookkeeping | undefined;
    if (!book || !Number.isSafeInteger(book.globalStep) || !Number.isSafeInteger(book.schedulerStep)) {
      throw new UserError('optimizer state: no training-step counters saved (header.extra.stepper)');
    }
    this.optimizer.load(state);
    if (this.scaler && book.lossScaler) this.scaler.load(book.lossScaler);
    this.global = book.globalStep;
    this.sched = book.schedulerStep;
    this.skips = book.consecutiveSkips ?? 0;
    this.acc.reset();
    this.lossSum = 0;
    this.weightSum = 0;
    this.nonFiniteLoss = undefined;
  }
}
