/**
 * txt2img / img2img as A1111's API runs them, in four steps of their own modules: prepare (body → typed
 * request, images decoded; before queueing), then inside one queue job resolve (→ a typed plan), run (→ the
 * backend's images and infotexts) and respond (→ `{images, parameters, info}`).
 */
import type { ServerContext } from './context.ts';
import type { RemoteJob } from './distributed/front-queue.ts';
import { remoteGeneration } from './distributed/generation-work.ts';
import type { Prepared } from './generation-prepare.ts';
import { respond, type GenerationResponse } from './generation-respond.ts';
import { resolveGeneration, type GenerationPlan } from './generation-resolve.ts';
import { runPlan } from './generation-run.ts';
import type { JobContext, JobHandle } from './queue.ts';

export { prepareGeneration, type GenerationKind, type Prepared } from './generation-prepare.ts';
export type { GenerationResponse } from './generation-respond.ts';

/**
 * Queues the generation for `owner` (the requesting user, see JobQueue); the handle's promise gives the
 * A1111 response. A `force_task_id` that another waiting or running job has is refused with 409.
 */
export function submitGeneration(ctx: ServerContext, prepared: Prepared, owner: string | null = null): JobHandle<GenerationResponse> {
  const id = prepared.req.force_task_id || undefined;
  const work: RemoteJob<GenerationResponse> = { kind: `scripts_${prepared.kind}`, run: (job) => runGeneration(ctx, prepared, job), remote: remoteGeneration(prepared) };
  return ctx.queue.submit(work, { id, owner });
}

/**
 * After the run: the checkpoint it used becomes the current one unless an override chose it, and with
 * `override_settings_restore_afterwards: false` the overrides become the settings (A1111 keeps them then).
 */
async function keepSettings(ctx: ServerContext, plan: GenerationPlan): Promise<void> {
  if (ctx.backend.currentCheckpoint() && !plan.checkpointOverridden) ctx.checkpoints.remember(plan.checkpoint);
  const req = plan.prepared.req;
  if (req.override_settings_restore_afterwards || !req.override_settings) return;
  const { sd_model_checkpoint: _ckpt, ...keepers } = plan.overrides;
  ctx.options.setFromApi(keepers);
  if (plan.checkpointOverridden) ctx.checkpoints.remember(plan.checkpoint);
  await ctx.options.save();
}

/** Runs one generation inside a queue job: in this process, or on a worker (server/distributed/handlers.ts). */
export async function runGeneration(ctx: ServerContext, prepared: Prepared, job: JobContext): Promise<GenerationResponse> {
  const plan = await resolveGeneration(ctx, prepared);
  const result = await runPlan(ctx, plan, job);
  await keepSettings(ctx, plan);
  return respond(ctx, plan, result);
}
