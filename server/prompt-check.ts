/**
 * Prompt syntax a generation would only fail on later, checked before it is queued: `<lora:…>` multipliers
 * that are not finite numbers, and prompt editing the parser cannot finish within its work budget. The
 * parse can take up to a second for a hostile prompt, so it runs on a worker thread: the HTTP loop (progress,
 * interrupt, every other route) keeps answering meanwhile.
 */
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';
import { cachedParses, getPromptSchedule, rememberParses, type PromptParse } from '../engine/text/prompt-schedule.ts';
import { WorkerPool, WorkerStartError } from '../engine/util/worker-pool.ts';
import { isUserError } from '../engine/util/errors.ts';
import { ValidationError } from './errors.ts';

export const PROMPT_FIELDS = ['prompt', 'negative_prompt', 'hr_prompt', 'hr_negative_prompt'] as const;

export interface PromptIssue {
  field: string;
  message: string;
}

/** The first problem among the request's prompt fields, or null. Runs the parse the pipeline will run. */
export function promptIssue(fields: Record<string, unknown>, steps: number, parsed: string[] = []): PromptIssue | null {
  for (const k of PROMPT_FIELDS) {
    const v = fields[k];
    if (typeof v !== 'string' || v === '') continue;
    try {
      // The pipeline parses the text without its extra-network tags.
      const bare = k === 'prompt' || k === 'hr_prompt' ? extractPromptTags(v).prompt : v;
      getPromptSchedule(bare, steps);
      parsed.push(bare);
    } catch (e) {
      if (isUserError(e)) return { field: k, message: `${k}: ${e.message}` };
      throw e;
    }
  }
  return null;
}

/** `promptIssue` plus the parses it made, for the thread that queues the job (see `rememberParses`). */
export function promptIssueWithParses(fields: Record<string, unknown>, steps: number): { issue: PromptIssue | null; parses: PromptParse[] } {
  const parsed: string[] = [];
  const issue = promptIssue(fields, steps, parsed);
  return { issue, parses: issue ? [] : cachedParses(parsed) };
}

const pool = new WorkerPool(import.meta.url, 'prompt check');

/**
 * Throws FastAPI's 422 (loc = the prompt field) when a prompt field has a problem; the parse runs off the
 * event loop, and its result is kept for the job's own parse of the same text.
 */
export async function checkPrompts(fields: Record<string, unknown>, steps: number): Promise<void> {
  let issue: PromptIssue | null;
  // Without `[` there is nothing to parse (only tags to read): no need to leave the thread.
  const parses = PROMPT_FIELDS.some((k) => typeof fields[k] === 'string' && (fields[k] as string).includes('['));
  if (!parses) issue = promptIssue(fields, steps);
  else {
    const sent = Object.fromEntries(PROMPT_FIELDS.map((k) => [k, fields[k]]));
    try {
      const r = await pool.run<{ issue: PromptIssue | null; parses: PromptParse[] }>('promptIssueWithParses', [sent, steps]);
      rememberParses(r.parses);
      issue = r.issue;
    } catch (e) {
      // Without a worker (it failed to start), check here rather than not at all.
      if (!(e instanceof WorkerStartError)) throw e;
      issue = promptIssue(fields, steps);
    }
  }
  if (issue) throw new ValidationError([{ loc: ['body', issue.field], msg: issue.message, type: 'value_error.prompt' }]);
}

/** Stops the worker (tests, shutdown); a later check starts a new one. */
export async function stopPromptChecks(): Promise<void> {
  await pool.close();
}
