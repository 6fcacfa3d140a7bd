/** Held-out loss of a causal LM: mean next-token cross-entropy over every answer token of the given rows. */
import type { CompiledGraph, ParamValues } from '../runtime/session.ts';
import type { LlmArch } from './config.ts';
import { makeBatch, type Example, type LlmBatch } from './data.ts';
import { decoderFeeds } from './inputs.ts';
import { LABELS_INPUT, shiftedLabels } from './objective.ts';
import type { FeedValue } from '../runtime/session.ts';

/** Graph feeds of a training batch: ids, rotary tables, packing-aware mask and shifted answer labels. */
export function batchFeeds(arch: LlmArch, b: LlmBatch): Record<string, FeedValue> {
  return {
    ...decoderFeeds(arch, { ids: b.ids, batch: b.batch, length: b.length, positions: b.positions, segments: b.segments }),
    [LABELS_INPUT]: { data: shiftedLabels(b.ids, b.batch, b.length, { trainable: b.trainable, segments: b.segments }), shape: [b.batch, b.length] },
  };
}

/** `lossGraph` outputs causalLmLoss; rows run one at a time, weighted by their answer tokens. */
export async function answerLoss(lossGraph: CompiledGraph, arch: LlmArch, examples: readonly Example[], padId: number, weights?: ParamValues): Promise<number> {
  let total = 0;
  let tokens = 0;
  for (const e of examples) {
    const b = makeBatch([[e]], padId);
    if (!b.lossTokens) continue;
    const [l] = await lossGraph.run(batchFeeds(arch, b), weights);
    total += Number(l!.data[0]) * b.lossTokens;
    tokens += b.lossTokens;
  }
  return tokens ? total / tokens : NaN;
}
