/**
 * Host-side feeds for the decoder graph (model.ts): token ids, rotary tables for each token's position and
 * the additive attention mask, from rows of ids plus optional positions and packing segments.
 */
import type { FeedValue } from '../runtime/session.ts';
import type { LlmArch } from './config.ts';
import { attentionMask } from './mask.ts';
import { LLM_INPUTS } from './model.ts';
import { ropeTablesFor } from './rope.ts';

export interface BatchSpec {
  /** [B, T] token ids, row-major. */
  ids: ArrayLike<number>;
  batch: number;
  length: number;
  /** Position of each new token, [B, T]; default past + 0..T-1. */
  positions?: ArrayLike<number>;
  /** Tokens already in the KV cache per row. */
  past?: number;
  /** Packing: document id per key position, [B, past + T]. */
  segments?: Int32Array;
}

export function decoderFeeds(arch: LlmArch, spec: BatchSpec): Record<string, FeedValue> {
  const { batch: B, length: T } = spec;
  const P = spec.past ?? 0;
  const positions = spec.positions ?? Int32Array.from({ length: B * T }, (_, i) => P + (i % T));
  const { cos, sin } = ropeTablesFor(arch, positions);
  const S = P + T;
  return {
    [LLM_INPUTS.ids]: { data: BigInt64Array.from(Array.from(spec.ids, (x) => BigInt(x))), shape: [B, T] },
    [LLM_INPUTS.cos]: { data: cos, shape: [B, T, arch.headDim] },
    [LLM_INPUTS.sin]: { data: sin, shape: [B, T, arch.headDim] },
    [LLM_INPUTS.mask]: {
      data: attentionMask({ batch: B, length: T, past: P, segments: spec.segments, window: arch.slidingWindow }),
      shape: [B, 1, T, S],
    },
  };
}
