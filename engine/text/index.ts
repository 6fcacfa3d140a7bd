/** Text side of Stable Diffusion as A1111 does it: CLIP tokenizer, prompt syntax, chunks and emphasis. */
export { ClipTokenizer, loadClipTokenizer, type ClipTokenizerFiles } from './tokenizer.ts';
export { parsePromptAttention, type AttentionFragment } from './prompt-parser.ts';
export {
  getPromptSchedule,
  getPromptSchedules,
  promptAtStep,
  type ScheduledPrompt,
  type ScheduleOptions,
} from './prompt-schedule.ts';
export { splitComposablePrompt, type SubPrompt } from './composable.ts';
export {
  chunkPrompt,
  tokenizePrompt,
  emptyChunk,
  CHUNK_LENGTH,
  type PromptChunk,
  type TokenizedPrompt,
  type ChunkOptions,
  type EmphasisMode,
} from './chunker.ts';
export { applyEmphasis } from './emphasis.ts';
export {
  planConditioning,
  planComposable,
  type ConditioningPlan,
  type ComposablePlan,
  type PlanOptions,
} from './conditioning-plan.ts';
