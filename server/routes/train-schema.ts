/**
 * A training form's server side:
 * - `GET /sdapi/v1/train/config-schema`: every training-config key as the engine defines it (JSON Schema from
 *   the zod schema, plus each key's default, group, help text and the phrase its error messages use), so a
 *   client builds its form from the engine's single definition;
 * - `POST /sdapi/v1/train/check`: the same checks as `train/dry-run` (config, paths, dataset), answered with
 *   200 either way — `{valid: true, plan, warnings, images}` or `{valid: false, detail: [FastAPI issues]}` —
 *   for checking as the user types, where a refusal is the expected answer and not an error.
 */
import { join } from 'node:path';
import { z } from 'zod';
import { trainConfigFields, trainConfigSchema, trainConfigKeys } from '../../engine/train/config-fields.ts';
import { stepPlan } from '../../engine/train/dataset.ts';
import type { ServerContext } from '../context.ts';
import { ValidationError } from '../errors.ts';
import { prepareTrainingRequest } from '../train-config.ts';
import { trainingSettings } from '../train-settings.ts';
import type { Api } from './api.ts';

export function configSchema() {
  const fields = trainConfigFields as Record<string, { default?: unknown; expect: string; group: string; doc: string; path?: string }>;
  return {
    json_schema: z.toJSONSchema(trainConfigSchema, { io: 'input', unrepresentable: 'any' }),
    fields: trainConfigKeys.map((key) => {
      const f = fields[key]!;
      return { key, group: f.group, required: !('default' in f), default: f.default ?? null, expect: f.expect, doc: f.doc, path: f.path ?? null };
    }),
  };
}

export function register(api: Api, ctx: ServerContext): void {
  const schema = configSchema();
  const settings = trainingSettings(ctx);
  api.get(
    '/sdapi/v1/train/config-schema',
    { summary: 'The training config: JSON Schema and, per key, its default, group, help text and expected value', tag: 'training' },
    () => schema,
  );

  api.post(
    '/sdapi/v1/train/check',
    { summary: 'Check a training config as train/dry-run does; 200 with {valid: true, plan, warnings, images} or {valid: false, detail: [issues]}', tag: 'training' },
    async (req) => {
      try {
        const { config, dataset, warnings, plannedSteps } = await prepareTrainingRequest(ctx, settings, req.body, { jobDir: join(settings.trainingDir, 'dry-run') });
        // An LLM config has text rows, not images: its plan is the step count.
        if (!dataset) return { valid: true, warnings, images: 0, plan: { total_steps: plannedSteps } };
        const plan = stepPlan(dataset, config);
        return { valid: true, warnings, images: dataset.items.length, plan: { batches_per_epoch: plan.batchesPerEpoch, steps_per_epoch: plan.stepsPerEpoch, total_steps: plan.totalSteps } };
      } catch (e) {
        if (e instanceof ValidationError) return { valid: false, detail: e.issues };
        throw e;
      }
    },
  );
}
