/**
 * `GET /sdapi/v1/train/config-schema`: every training-config key as the engine defines it (JSON Schema from
 * the zod schema, plus each key's default, group, help text and the phrase its error messages use), so a
 * client can build its form from the engine's single definition. Values are checked by `train/dry-run`.
 */
import { z } from 'zod';
import { trainConfigFields, trainConfigSchema, trainConfigKeys } from '../../engine/train/config-fields.ts';
import type { ServerContext } from '../context.ts';
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

export function register(api: Api, _ctx: ServerContext): void {
  const schema = configSchema();
  api.get(
    '/sdapi/v1/train/config-schema',
    { summary: 'The training config: JSON Schema and, per key, its default, group, help text and expected value', tag: 'training' },
    () => schema,
  );
}
