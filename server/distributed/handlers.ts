/**
 * What a worker can run, by the name a front puts in the job (`JobEnvelope.handler`). Each handler turns the
 * job's JSON back into the arguments of the code the single process runs, so both modes share every rule.
 * Payloads are not trusted: names are resolved through the worker's own indexes of the shared folders, and a
 * training config is validated again against the worker's folders (server/train-config.ts).
 */
import type { ServerContext } from '../context.ts';
import { runGeneration } from '../generation.ts';
import type { JobContext } from '../queue.ts';
import { GENERATE_HANDLER, preparedFromData, requestedStack, type GenerationData } from './generation-work.ts';

export interface Handler {
  /** `report` attaches handler-specific data to the next progress report. */
  run(ctx: ServerContext, data: unknown, job: JobContext, report: (extra: unknown) => void): Promise<unknown>;
  /** The LoRA stack the slot holds after this job, if the job changes it. */
  stack?(data: unknown, options: Record<string, unknown>): string;
}

export const handlers: Record<string, Handler> = {
  [GENERATE_HANDLER]: {
    run: (ctx, data, job) => {
      const d = data as GenerationData;
      return runGeneration(ctx, d.kind, preparedFromData(d), job);
    },
    stack: (data, options) => requestedStack((data as GenerationData).req, options),
  },
};
