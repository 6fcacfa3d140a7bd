/**
 * Prompt syntax a generation would only fail on later, checked before it is queued: `<lora:…>` multipliers
 * that are not finite numbers, and prompt editing the parser cannot finish within its work budget. The
 * parse can take up to a second for a hostile prompt, so it runs on a worker thread: the HTTP loop (progress,
 * interrupt, every other route) keeps answering meanwhile.
 */
import { Worker } from 'node:worker_threads';
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';
import { getPromptSchedule } from '../engine/text/prompt-schedule.ts';
import { isUserError } from '../engine/util/errors.ts';
import { ValidationError } from './errors.ts';

export const PROMPT_FIELDS = ['prompt', 'negative_prompt', 'hr_prompt', 'hr_negative_prompt'] as const;

export interface PromptIssue {
  field: string;
  message: string;
}

/** The first problem among the request's prompt fields, or null. Runs the parse the pipeline will run. */
export function promptIssue(fields: Record<string, unknown>, steps: number): PromptIssue | null {
  for (const k of PROMPT_FIELDS) {
    const v = fields[k];
    if (typeof v !== 'string' || v === '') continue;
    try {
      // The pipeline parses the text without its extra-network tags.
      const bare = k === 'prompt' || k === 'hr_prompt' ? extractPromptTags(v).prompt : v;
      getPromptSchedule(bare, steps);
    } catch (e) {
      if (isUserError(e)) return { field: k, message: `${k}: ${e.message}` };
      throw e;
    }
  }
  return null;
}

// The worker loads this very module through tsx (the package runs from its TypeScript sources).
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
import('tsx/esm/api')
  .then((tsx) => tsx.tsImport(workerData.module, workerData.module))
  .then((mod) => {
    parentPort.on('message', ({ id, fields, steps }) => {
      try {
        parentPort.postMessage({ id, issue: mod.promptIssue(fields, steps) });
      } catch (e) {
        parentPort.postMessage({ id, error: String(e && e.message || e) });
      }
    });
    parentPort.postMessage({ ready: true });
  });
`;

let worker: Worker | null = null;
let ready: Promise<Worker> | null = null;
let nextId = 0;
const waiting = new Map<number, { resolve: (i: PromptIssue | null) => void; reject: (e: Error) => void }>();

function startWorker(): Promise<Worker> {
  ready ??= new Promise<Worker>((resolve, reject) => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { module: import.meta.url } });
    w.unref();
    w.on('message', (m: { ready?: boolean; id?: number; issue?: PromptIssue | null; error?: string }) => {
      if (m.ready) return resolve(w);
      const p = waiting.get(m.id!);
      waiting.delete(m.id!);
      if (m.error !== undefined) p?.reject(new Error(m.error));
      else p?.resolve(m.issue ?? null);
    });
    const fail = (e: Error) => {
      for (const p of waiting.values()) p.reject(e);
      waiting.clear();
      worker = null;
      ready = null;
      reject(e);
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`prompt check worker exited (${code})`)));
    worker = w;
  });
  return ready;
}

/** Throws FastAPI's 422 (loc = the prompt field) when a prompt field has a problem; the parse runs off the event loop. */
export async function checkPrompts(fields: Record<string, unknown>, steps: number): Promise<void> {
  let issue: PromptIssue | null;
  // Without `[` there is nothing to parse (only tags to read): no need to leave the thread.
  const parses = PROMPT_FIELDS.some((k) => typeof fields[k] === 'string' && (fields[k] as string).includes('['));
  if (!parses) issue = promptIssue(fields, steps);
  else try {
    const w = await startWorker();
    const id = nextId++;
    issue = await new Promise<PromptIssue | null>((resolve, reject) => {
      waiting.set(id, { resolve, reject });
      w.postMessage({ id, fields: Object.fromEntries(PROMPT_FIELDS.map((k) => [k, fields[k]])), steps });
    });
  } catch {
    // Without a worker (it failed to start), check here rather than not at all.
    issue = promptIssue(fields, steps);
  }
  if (issue) throw new ValidationError([{ loc: ['body', issue.field], msg: issue.message, type: 'value_error.prompt' }]);
}

/** Stops the worker (tests, shutdown); a later check starts a new one. */
export async function stopPromptChecks(): Promise<void> {
  const w = worker;
  worker = null;
  ready = null;
  if (w) await w.terminate();
}
