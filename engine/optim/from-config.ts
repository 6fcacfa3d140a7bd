import { AdamW } from './adamw.ts';
import { DynamicLossScaler } from './loss-scale.ts';
import type { Optimizer, ParamGroup } from './optimizer.ts';
import { makeSchedule, resolveWarmupSteps, type ScheduleName } from './schedules.ts';
import { SGD } from './sgd.ts';
import { TrainingStepper } from './stepper.ts';
import type { TensorMapLike } from './tensors.ts';

/** The training-config keys that shape optimization (names as in the YAML config). */
export interface OptimConfig {
  optimizer: 'adamw' | 'sgd';
  learning_rate: number;
  text_encoder_lr: number;
  weight_decay: number;
  max_grad_norm: number;
  lr_scheduler: ScheduleName;
  lr_warmup_steps: number;
  gradient_accumulation_steps: number;
  mixed_precision: 'no' | 'fp16' | 'bf16';
}

/** Momentum for `optimizer: sgd`; the config has no key for it. */
export const SGD_MOMENTUM = 0.9;

/**
 * Builds the optimizer (groups 'unet' and, when given and non-empty, 'textencoder', logged as lr/unet and
 * lr/textencoder), the schedule over `totalSteps` optimizer steps, and float16 loss scaling when asked for.
 */
export function createTrainingStepper(
  cfg: OptimConfig,
  params: { unet: TensorMapLike; textencoder?: TensorMapLike },
  totalSteps: number,
): TrainingStepper {
  const groups: ParamGroup[] = [{ name: 'unet', params: params.unet, lr: cfg.learning_rate }];
  const te = params.textencoder;
  const teSize = te === undefined ? 0 : te instanceof Map ? te.size : Object.keys(te).length;
  if (te && teSize > 0) groups.push({ name: 'textencoder', params: te, lr: cfg.text_encoder_lr });
  const optimizer: Optimizer =
    cfg.optimizer === 'sgd'
      ? new SGD(groups, { momentum: SGD_MOMENTUM, weightDecay: cfg.weight_decay })
      : new AdamW(groups, { weightDecay: cfg.weight_decay });
  const schedule = makeSchedule({
    name: cfg.lr_scheduler,
    warmupSteps: resolveWarmupSteps(cfg.lr_warmup_steps, totalSteps),
    totalSteps,
    lrInit: cfg.learning_rate,
  });
  return new TrainingStepper({
    optimizer,
    schedule,
    accumulationSteps: cfg.gradient_accumulation_steps,
    maxGradNorm: cfg.max_grad_norm,
    ...(cfg.mixed_precision === 'fp16' ? { lossScaler: new DynamicLossScaler() } : {}),
  });
}
