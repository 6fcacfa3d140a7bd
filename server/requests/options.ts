/**
 * The options A1111 takes from clients — the `/sdapi/v1/options` POST body and a generation's
 * `override_settings` — as one zod schema built from the options table: every known key typed by its
 * default's type (with pydantic's lenient coercion; null allowed, as A1111 stores None), options whose
 * default is null take any value, unknown keys are kept for the caller to handle as A1111 does.
 */
import { z } from 'zod';
import { OPTION_DEFAULTS, type OptionValue } from '../option-defaults.ts';
import { coerce, documented, parseRequest, type FieldType } from '../schema.ts';

function optionField(def: OptionValue): z.ZodOptional<z.ZodType<OptionValue>> {
  const [type, base]: [FieldType, z.ZodType<OptionValue>] =
    typeof def === 'number' ? ['float', coerce.float]
    : typeof def === 'boolean' ? ['bool', coerce.bool]
    : typeof def === 'string' ? ['str', coerce.str]
    : Array.isArray(def) ? ['list', coerce.list]
    : def === null ? ['any', z.custom<OptionValue>()]
    : ['dict', coerce.dict];
  return documented(base.nullable().optional(), { type, default: def });
}

/** Every known option, typed by its default; other keys pass through unchanged. */
export const optionsRequest = z.object(Object.fromEntries(Object.entries(OPTION_DEFAULTS).map(([k, d]) => [k, optionField(d)]))).catchall(z.custom<OptionValue>());

/** Option values from a client, typed; `loc` places refusals (the body, or `override_settings` within it). */
export function parseOptionValues(values: unknown, loc: (string | number)[] = ['body']): Record<string, OptionValue> {
  const parsed = parseRequest(optionsRequest, values, loc);
  const out: Record<string, OptionValue> = {};
  // Keys absent from the body stay absent (zod gives them as undefined).
  for (const [k, v] of Object.entries(parsed)) if (v !== undefined) out[k] = v;
  return out;
}
