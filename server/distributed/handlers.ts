/**
 * What a worker can run, by the name a front puts in the job (`JobEnvelope.handler`). Each handler turns the
 * job's JSON back into the arguments of the code the single process runs, so both modes share every rule.
 * Payloads are not trusted: names are resolved through the worker's own indexes of the shared folders, and a
 * training config is validated again against the worker's folders (server/train-config.ts).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTrainState } from '../../engine/train/state.ts';
import type { ServerContext } from '../context.ts';
import { runGeneration } from '../generation.ts';
import type { RunningState } from '../queue.ts';
import { prepareTrainingRequest } from '../train-config.ts';
import { trainingSettings } from '../train-settings.ts';
import { trainingRegistry } from '../training.ts';
import { GENERATE_HANDLER, preparedFromData, requestedStack, type GenerationData } from './generation-work.ts';
import type { JobEnvelope } from './protocol.ts';
import { TRAIN_HANDLER, type TrainingData } from './training-work.ts';

export interface Handler {
  /** Queues the job in the slot's own JobQueue (under the envelope's id and owner); resolves to its result. */
  start(ctx: ServerContext, env: JobEnvelope): Promise<{ done: Promise<unknown> }>;
  /** Handler-specific data sent with each progress report. */
  extra?(ctx: ServerContext, env: JobEnvelope): unknown;
  /** The LoRA stack the slot holds after this job, if the job changes it. */
  stack?(env: JobEnvelope): string;
}

/** The newest complete state a run saved in its folder (a worker killed while writing one leaves it unreadable). */
async function lastSavedState(dir: string): Promise<string | null> {
  const states = (await readdir(dir).catch(() => [] as string[])).filter((f) => /^state-\d{8}$/.test(f)).sort().reverse();
  for (const s of states) {
    const path = join(dir, s);
    if (await loadTrainState(path).then(() => true, () => false)) return path;
  }
  return null;
}

function ended(ctx: ServerContext, id: string): Promise<unknown> {
  return new Promise((resolve) => {
    const onEnd = (s: RunningState) => {
      if (s.id !== id) return;
      ctx.queue.off('end', onEnd);
      resolve(undefined);
    };
    ctx.queue.on('end', onEnd);
  });
}

export const handlers: Record<string, Handler> = {
  [GENERATE_HANDLER]: {
    async start(ctx, env) {
      const d = env.data as GenerationData;
      const handle = ctx.queue.submit({ kind: env.kind, run: (job) => runGeneration(ctx, preparedFromData(d), job) }, { id: env.id, owner: env.owner });
      return { done: handle.promise };
    },
    stack: (env) => requestedStack((env.data as GenerationData).req, env.options),
  },

  [TRAIN_HANDLER]: {
    async start(ctx, env) {
      const { id, body } = env.data as TrainingData;
      const settings = trainingSettings(ctx);
      const prepared = await prepareTrainingRequest(ctx, settings, body, { jobDir: join(settings.trainingDir, id) });
      // A job that comes back after its worker died continues from the last state that worker saved.
      const resume = prepared.config.resume_from === null ? await lastSavedState(prepared.config.output_dir) : null;
      if (resume) {
        prepared.config = { ...prepared.config, resume_from: resume };
        ctx.log(`training ${id} continues from ${resume}`);
      }
      const registry = trainingRegistry(ctx);
      const done = ended(ctx, id).then(() => registry.get(id));
      registry.submit(id, prepared);
      return { done };
    },
    extra: (ctx, env) => trainingRegistry(ctx).get((env.data as TrainingData).id),
  },
};
