import { UserError } from '../util/errors.ts';
import type { TensorMap } from './tensors.ts';

export interface NonFiniteElement {
  /** Parameter (gradient) name. */
  name: string;
  index: number;
  value: number;
}

/** First NaN / ±inf element over all tensors, in map order; undefined when every element is finite. */
export function findNonFinite(tensors: TensorMap): NonFiniteElement | undefined {
  for (const [name, t] of tensors) {
    for (let i = 0; i < t.length; i++) {
      const x = t[i]!;
      // x - x is 0 for finite x and NaN for NaN / ±inf: one comparison per element on the hot path.
      if (x - x !== 0) return { name, index: i, value: x };
    }
  }
  return undefined;
}

/**
 * Training hit NaN or inf. It is a UserError because the cause is almost always a setting (learning rate,
 * float16, alpha) rather than a bug, and the message tells the user which step and which tensor broke.
 */
export class NonFiniteError extends UserError {
  override name = 'NonFiniteError';
  /** 1-based optimizer step being computed when the value appeared. */
  readonly step: number;
  /** 'loss' or the gradient's parameter name. */
  readonly tensor: string;
  readonly index: number | undefined;
  readonly value: number;
  constructor(message: string, info: { step: number; tensor: string; index?: number; value: number }) {
    super(message, { status: 422 });
    this.step = info.step;
    this.tensor = info.tensor;
    this.index = info.index;
    this.value = info.value;
  }
}

const ADVICE =
  'No weights were changed by this step. Common causes: a learning rate or network alpha that is too high, ' +
  'float16 overflow (use bf16 or float32, or enable loss scaling), or NaN in the cached latents.';

function where(step: number, microBatch?: { index: number; of: number }): string {
  return microBatch && microBatch.of > 1
    ? `optimizer step ${step} (micro-batch ${microBatch.index} of ${microBatch.of})`
    : `optimizer step ${step}`;
}

/** Throws NonFiniteError when the loss is NaN or inf. */
export function assertFiniteLoss(loss: number, step: number, microBatch?: { index: number; of: number }): void {
  if (Number.isFinite(loss)) return;
  throw new NonFiniteError(`Loss is ${loss} at ${where(step, microBatch)}. ${ADVICE}`, {
    step,
    tensor: 'loss',
    value: loss,
  });
}

/** Throws NonFiniteError naming the first parameter whose gradient holds NaN or inf. */
export function assertFiniteGrads(
  grads: TensorMap,
  step: number,
  loss?: number,
  microBatch?: { index: number; of: number },
): void {
  const bad = findNonFinite(grads);
  if (!bad) return;
  const lossText = loss === undefined ? '' : ` (loss ${loss})`;
  throw new NonFiniteError(
    `Gradient of parameter '${bad.name}' is ${bad.value} at element ${bad.index}, ${where(step, microBatch)}${lossText}. ${ADVICE}`,
    { step, tensor: bad.name, index: bad.index, value: bad.value },
  );
}
