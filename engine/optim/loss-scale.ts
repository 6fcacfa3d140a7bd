import { UserError } from '../util/errors.ts';
import { checkHyper } from './optimizer.ts';
import { findNonFinite, type NonFiniteElement } from './guard.ts';
import { toTensorMap, type TensorMapLike } from './tensors.ts';

export interface LossScalerOptions {
  /** torch.amp.GradScaler defaults: 2^16, ×2 after 2000 clean steps, ×0.5 on overflow. */
  initScale?: number;
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval?: number;
}

export interface LossScalerState {
  scale: number;
  growthTracker: number;
}

/**
 * Dynamic loss scaling for float16 training: the loss is multiplied by `scale` before backward so small
 * gradients survive float16; the gradients are divided by it again before the optimizer sees them.
 * An overflow (NaN/inf in any gradient) skips the step and halves the scale; `growthInterval` clean steps
 * in a row double it.
 */
export class DynamicLossScaler {
  private s: number;
  private tracker = 0;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;

  constructor(opts: LossScalerOptions = {}) {
    this.s = opts.initScale ?? 65536;
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    checkHyper('loss scale init_scale', this.s, Number.MIN_VALUE, Infinity);
    checkHyper('loss scale growth_factor', this.growthFactor, 1, Infinity);
    checkHyper('loss scale backoff_factor', this.backoffFactor, Number.MIN_VALUE, 1);
    if (!Number.isInteger(this.growthInterval) || this.growthInterval < 1) {
      throw new UserError(`loss scale growth_interval must be an integer ≥ 1, got ${this.growthInterval}`);
    }
  }

  /** Multiply the loss (or the backward seed) by this. */
  get scale(): number {
    return this.s;
  }

  /**
   * Divides gradients by the scale in place and reports the first non-finite element, if any. A power-of-two
   * scale makes the division exact.
   */
  unscale(gradsLike: TensorMapLike): NonFiniteElement | undefined {
    const grads = toTensorMap(gradsLike);
    const inv = Math.fround(1 / this.s);
    for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] = g[i]! * inv;
    return findNonFinite(grads);
  }

  /** Call once per optimizer step with whether it overflowed (and was therefore skipped). */
  update(overflowed: boolean): void {
    if (overflowed) {
      this.s *= this.backoffFactor;
      this.tracker = 0;
      return;
    }
    this.tracker++;
    if (this.tracker >= this.growthInterval) {
      this.s *= this.growthFactor;
      this.tracker = 0;
    }
  }

  state(): LossScalerState {
    return { scale: this.s, growthTracker: this.tracker };
  }

  load(st: LossScalerState): void {
    checkHyper('saved loss scale', st.scale, Number.MIN_VALUE, Infinity);
    if (!Number.isInteger(st.growthTracker) || st.growthTracker < 0) {
      throw new UserError(`saved loss-scale growth tracker must be an integer ≥ 0, got ${st.growthTracker}`);
    }
    this.s = st.scale;
    this.tracker = st.growthTracker;
  }
}
