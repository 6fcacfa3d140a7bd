/**
 * The causal-LM objective: mean next-token cross-entropy over the positions that have a label. Labels are
 * shifted on the host (label[t] = token[t + 1], −100 where no loss is taken: the last token of a document,
 * prompt tokens, padding), so the graph compares logits[t] with label[t] directly, as transformers'
 * `ForCausalLMLoss` does after its shift.
 */
import * as g from '../graph/index.ts';
import type { Tensor } from '../graph/tensor.ts';

export const IGNORE_INDEX = -100;
export const LABELS_INPUT = 'labels';

export function causalLmLoss(logits: Tensor): { labels: Tensor; loss: Tensor } {
  const labels = g.input(LABELS_INPUT, 'int64', ['B', 'T']);
  return { labels, loss: g.crossEntropyWithIds(logits, labels, IGNORE_INDEX) };
}

/**
 * Labels for rows of ids: next token where `trainable[t + 1]` (default: every position) and both tokens
 * are in the same segment; IGNORE_INDEX elsewhere.
 */
export function shiftedLabels(ids: ArrayLike<number>, batch: number, length: number, opts: { trainable?: ArrayLike<number>; segments?: ArrayLike<number> } = {}): BigInt64Array {
  const out = new BigInt64Array(batch * length).fill(BigInt(IGNORE_INDEX));
  for (let b = 0; b < batch; b++)
    for (let t = 0; t + 1 < length; t++) {
      const i = b * length + t;
      if (opts.trainable && !opts.trainable[i + 1]) continue;
      if (opts.segments && opts.segments[i] !== opts.segments[i + 1]) continue;
      out[i] = BigInt(ids[i + 1]!);
    }
  return out;
}
