import type { ClipTokenizer } from './tokenizer.ts';
import { emptyChunk, tokenizePrompt, type ChunkOptions, type PromptChunk } from './chunker.ts';
import { splitComposablePrompt } from './composable.ts';
import { getPromptSchedule, type ScheduleOptions, type ScheduledPrompt } from './prompt-schedule.ts';

/**
 * What A1111 sends through CLIP for a list of prompts (`prompt_parser.get_learned_conditioning` and
 * `FrozenCLIPEmbedderWithCustomWordsBase.forward`): each distinct prompt is expanded into its schedule,
 * and all texts of one schedule are encoded together, chunk index by chunk index. A text with fewer chunks
 * than the longest gets empty chunks, and emphasis restores the mean over that whole batch — so the
 * batching is part of the result, and the encoder should run `applyEmphasis` on each [texts, 77, dim] batch
 * before concatenating the chunks along the token axis.
 */

export interface ConditioningPlan {
  schedule: ScheduledPrompt[];
  /** `chunkBatches[k][j]`: chunk k of the schedule's text j; encode each k as one batch. */
  chunkBatches: PromptChunk[][];
}

export type PlanOptions = ScheduleOptions & ChunkOptions;

/** One plan per prompt; equal prompts share one plan object, as A1111 caches them. */
export function planConditioning(
  tokenizer: ClipTokenizer,
  prompts: readonly string[],
  steps: number,
  opts: PlanOptions = {},
): ConditioningPlan[] {
  const cache = new Map<string, ConditioningPlan>();
  return prompts.map((prompt) => {
    let plan = cache.get(prompt);
    if (!plan) {
      const schedule = getPromptSchedule(prompt, steps, opts);
      const chunked = schedule.map((s) => tokenizePrompt(tokenizer, s.prompt, opts).chunks);
      const count = Math.max(...chunked.map((c) => c.length));
      const chunkBatches: PromptChunk[][] = [];
      for (let k = 0; k < count; k++) chunkBatches.push(chunked.map((c) => c[k] ?? emptyChunk(tokenizer)));
      plan = { schedule, chunkBatches };
      cache.set(prompt, plan);
    }
    return plan;
  });
}

export interface ComposablePlan {
  /** Distinct sub-prompts of all prompts, in first-seen order (A1111 `prompt_flat_list`). */
  subPrompts: string[];
  /** Per prompt: which sub-prompts it uses and with what weight. */
  uses: Array<Array<{ index: number; weight: number }>>;
}

/** A1111 `get_multicond_prompt_list`: positive prompts split on AND into one flat, de-duplicated list. */
export function planComposable(prompts: readonly string[]): ComposablePlan {
  const subPrompts: string[] = [];
  const indexOf = new Map<string, number>();
  const uses = prompts.map((p) =>
    splitComposablePrompt(p).map(({ text, weight }) => {
      let index = indexOf.get(text);
      if (index === undefined) {
        index = subPrompts.length;
        subPrompts.push(text);
        indexOf.set(text, index);
      }
      return { index, weight };
    }),
  );
  return { subPrompts, uses };
}
