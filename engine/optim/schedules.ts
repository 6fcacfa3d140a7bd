import { UserError } from '../util/errors.ts';

export const SCHEDULE_NAMES = [
  'constant',
  'constant_with_warmup',
  'linear',
  'cosine',
  'cosine_with_restarts',
  'polynomial',
] as const;
export type ScheduleName = (typeof SCHEDULE_NAMES)[number];

export interface ScheduleOptions {
  name: ScheduleName;
  /** Optimizer steps of linear warmup from 0. */
  warmupSteps?: number;
  /** Total optimizer steps; needed by every decaying schedule. */
  totalSteps?: number;
  /** cosine: 0.5 (one half-wave down to 0); cosine_with_restarts: number of hard restarts, default 1. */
  numCycles?: number;
  /** polynomial: exponent, default 1. */
  power?: number;
  /** polynomial: final learning rate, default 1e-7. */
  lrEnd?: number;
  /** polynomial: the base learning rate the factor is relative to (torch uses the optimizer's default lr). */
  lrInit?: number;
}

/** Learning-rate factor for the optimizer step with 0-based index `step` (LambdaLR's last_epoch). */
export type LrSchedule = (step: number) => number;

/**
 * kohya semantics for `lr_warmup_steps`: a value in (0, 1) is a fraction of the total steps (floored),
 * anything else a step count.
 */
export function resolveWarmupSteps(warmup: number, totalSteps: number): number {
  if (!Number.isFinite(warmup) || warmup < 0) throw new UserError(`lr_warmup_steps must be ≥ 0, got ${warmup}`);
  if (warmup > 0 && warmup < 1) return Math.floor(warmup * totalSteps);
  if (!Number.isInteger(warmup)) throw new UserError(`lr_warmup_steps must be an integer or a ratio below 1, got ${warmup}`);
  return warmup;
}

/**
 * The diffusers / transformers `get_scheduler` definitions. Step k uses factor(k) for k = 0, 1, …, so with
 * warmup the first step runs at lr 0, exactly as `optimizer.step(); lr_scheduler.step()` does there.
 */
export function makeSchedule(opts: ScheduleOptions): LrSchedule {
  const name = opts.name;
  if (!(SCHEDULE_NAMES as readonly string[]).includes(name)) {
    throw new UserError(`lr_scheduler '${name}' is not one of ${SCHEDULE_NAMES.join(', ')}`);
  }
  const warmup = opts.warmupSteps ?? 0;
  if (!Number.isInteger(warmup) || warmup < 0) {
    throw new UserError(`lr_warmup_steps must be a non-negative integer, got ${warmup}`);
  }
  if (name === 'constant') {
    // diffusers silently ignores warmup here; kohya refuses. Refusing tells the user what actually happens.
    if (warmup > 0) throw new UserError(`lr_scheduler 'constant' has no warmup; use 'constant_with_warmup' (lr_warmup_steps ${warmup})`);
    return () => 1;
  }
  const warm = (step: number): number => step / Math.max(1, warmup);
  if (name === 'constant_with_warmup') return (step) => (step < warmup ? warm(step) : 1);

  const total = opts.totalSteps;
  if (total === undefined || !Number.isInteger(total) || total < 1) {
    throw new UserError(`lr_scheduler '${name}' needs the total number of training steps (a positive integer), got ${total}`);
  }
  const decaySteps = Math.max(1, total - warmup);
  const progress = (step: number): number => (step - warmup) / decaySteps;

  switch (name) {
    case 'linear':
      return (step) => (step < warmup ? warm(step) : Math.max(0, (total - step) / decaySteps));
    case 'cosine': {
      const c = opts.numCycles ?? 0.5;
      checkPositive('lr_scheduler_num_cycles', c);
      return (step) =>
        step < warmup ? warm(step) : Math.max(0, 0.5 * (1 + Math.cos(Math.PI * c * 2 * progress(step))));
    }
    case 'cosine_with_restarts': {
      const c = opts.numCycles ?? 1;
      checkPositive('lr_scheduler_num_cycles', c);
      return (step) => {
        if (step < warmup) return warm(step);
        const p = progress(step);
        if (p >= 1) return 0;
        return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((c * p) % 1))));
      };
    }
    case 'polynomial': {
      const power = opts.power ?? 1;
      const lrEnd = opts.lrEnd ?? 1e-7;
      const lrInit = opts.lrInit;
      checkPositive('lr_scheduler_power', power);
      if (lrInit === undefined || !(lrInit > lrEnd)) {
        throw new UserError(`polynomial lr_scheduler: lr_end (${lrEnd}) must be smaller than the learning rate (${lrInit})`);
      }
      return (step) => {
        if (step < warmup) return warm(step);
        if (step > total) return lrEnd / lrInit;
        const remaining = 1 - (step - warmup) / decaySteps;
        return ((lrInit - lrEnd) * remaining ** power + lrEnd) / lrInit;
      };
    }
  }
  throw new Error(`unreachable schedule ${name satisfies never}`);
}

function checkPositive(field: string, v: number): void {
  if (!Number.isFinite(v) || v <= 0) throw new UserError(`${field} must be a positive number, got ${v}`);
}
