/**
 * How a failure on one of the server's work threads (generation, training, LLM) reaches a client: a UserError
 * stays one (4xx with its message); an error the engine threw is a plain Error with its message (500, no
 * stack); a thread that could not start or that died (out of memory, terminated) is a 500 saying so. The
 * WorkerPool replaces a dead thread on the next call.
 */
import { isUserError } from '../engine/util/errors.ts';
import { WorkerStartError, WorkerTaskError } from '../engine/util/worker-pool.ts';

/** `thread` names it in messages, e.g. `generation`; `next` says what the next job does about it. */
export function fromThread(e: unknown, thread: string, next: string): unknown {
  if (isUserError(e)) return e;
  if (e instanceof WorkerTaskError) return new Error(e.message);
  if (e instanceof WorkerStartError) return new Error(`the ${thread} thread could not start: ${e.message}`);
  return new Error(`the ${thread} thread stopped (${e instanceof Error ? e.message : String(e)}); this job failed, ${next}`);
}
