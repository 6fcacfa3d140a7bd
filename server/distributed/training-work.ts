/**
 * A LoRA training as queue work. The front sends the request body as the client wrote it: the worker
 * validates it again against its own folders (a payload is never trusted as a path) and runs it with its own
 * training registry, whose job record comes back with every progress report. The front copies that record
 * into its own, so `/sdapi/v1/train/jobs/…`, `train-progress` and `train-log` read as in the single process.
 */
import type { TrainResult } from '../../engine/train/trainer.ts';
import type { TrainJob, TrainingRegistry } from '../training.ts';
import type { ServerContext } from '../context.ts';
import type { RemoteWork } from './front-queue.ts';
import { CancelledError } from '../queue.ts';

export const TRAIN_HANDLER = 'train';

export interface TrainingData {
  id: string;
  body: unknown;
}

/** Fields of the worker's record that the front takes over (its own id, creation time and config stay). */
const RELAYED = ['status', 'started_at', 'ended_at', 'planned_steps', 'warnings', 'progress', 'loss_history', 'validation', 'logs', 'outputs', 'result', 'error'] as const;

/** Copies what the worker's record says about the run into the front's record of the same job. */
export function takeWorkerRecord(job: TrainJob, worker: TrainJob): void {
  const record = job as unknown as Record<string, unknown>;
  for (const k of RELAYED) record[k] = structuredClone(worker[k]);
}

export function remoteTraining(ctx: ServerContext, registry: TrainingRegistry, job: TrainJob, body: unknown, label: string | null): RemoteWork<TrainResult> {
  const take = (r: TrainJob) => {
    const before = { step: job.progress, logs: job.logs.length };
    takeWorkerRecord(job, r);
    // A worker that took over a moved job starts its log anew: send only what is new to this front's clients.
    const fresh = r.logs.length >= before.logs ? r.logs.slice(before.logs) : r.logs;
    for (const message of fresh) registry.emit('train-log', { id: job.id, message, time: new Date().toISOString() });
    if (job.progress && JSON.stringify(job.progress) !== JSON.stringify(before.step)) registry.emit('train-progress', { ...job.progress, id: job.id });
  };
  return {
    describe: () => ({ handler: TRAIN_HANDLER, data: { id: job.id, body } satisfies TrainingData, label }),
    onProgress: (extra) => take(extra as TrainJob),
    onFailure: (error) => {
      if (job.ended_at) return;
      job.status = error instanceof CancelledError ? 'cancelled' : 'failed';
      job.error = error instanceof CancelledError ? null : error instanceof Error ? error.message : String(error);
      job.ended_at = new Date().toISOString();
    },
    accept: async (value) => {
      const final = value as TrainJob;
      take(final);
      // The LoRA is in the shared folder now: list it here too.
      if (final.outputs.lora) await ctx.loras.refresh();
      if (final.status === 'failed') throw new Error(final.error ?? 'training failed');
      return final.result as TrainResult;
    },
  };
}
