/**
 * Next-token choice from one row of logits, in the order transformers' logits processors apply:
 * repetition penalty (CTRL, Keskar et al. 2019: a seen token's logit is divided by the penalty when
 * positive, multiplied when negative), temperature, top-k, top-p (nucleus, Holtzman et al. 2019), then a
 * draw. Temperature 0 is greedy (argmax after the penalty).
 */
import type { Random } from '../train/seeded-random.ts';
import { UserError } from '../util/errors.ts';

export interface SamplingOptions {
  /** 0: greedy. */
  temperature: number;
  /** Keep the k most likely tokens (0: all). */
  topK: number;
  /** Keep the smallest set whose probability reaches p (1: all). */
  topP: number;
  /** > 1 discourages tokens already in the context (1: off). */
  repetitionPenalty: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1 };

export function checkSampling(o: SamplingOptions): void {
  const bad = (field: string, v: number, range: string) => new UserError(`${field} must be ${range}, got ${v}`);
  if (!(o.temperature >= 0 && Number.isFinite(o.temperature))) throw bad('temperature', o.temperature, 'a number ≥ 0');
  if (!(Number.isInteger(o.topK) && o.topK >= 0)) throw bad('top_k', o.topK, 'an integer ≥ 0');
  if (!(o.topP > 0 && o.topP <= 1)) throw bad('top_p', o.topP, 'in (0, 1]');
  if (!(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) throw bad('repetition_penalty', o.repetitionPenalty, 'a number > 0');
}

export function chooseToken(logits: Float32Array, context: readonly number[], o: SamplingOptions, random: Random): number {
  const x = Float64Array.from(logits);
  if (o.repetitionPenalty !== 1) {
    for (const id of new Set(context)) {
      if (id < 0 || id >= x.length) continue;
      x[id] = x[id]! < 0 ? x[id]! * o.repetitionPenalty : x[id]! / o.repetitionPenalty;
    }
  }
  if (o.temperature === 0) {
    let best = 0;
    for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
    return best;
  }
  for (let i = 0; i < x.length; i++) x[i] = x[i]! / o.temperature;
  let order = Array.from(x.keys()).sort((a, b) => x[b]! - x[a]!);
  if (o.topK > 0) order = order.slice(0, o.topK);
  const top = x[order[0]!]!;
  let probs = order.map((i) => Math.exp(x[i]! - top));
  let total = probs.reduce((a, b) => a + b, 0);
  if (o.topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < o.topP * total) acc += probs[keep++]!;
    order = order.slice(0, Math.max(1, keep));
    probs = probs.slice(0, order.length);
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = random() * total;
  for (let i = 0; i < order.length; i++) {
    r -= probs[i]!;
    if (r <= 0) return order[i]!;
  }
  return order[order.length - 1]!;
}
