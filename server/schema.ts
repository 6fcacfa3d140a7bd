/**
 * Request models as field tables, validated by zod schemas built from them the way A1111's pydantic v1 models
 * validate: every field optional, lenient coercion ("20" → 20, 1 → true, 7 → 7.0), unknown fields ignored,
 * failures collected as FastAPI's `{loc, msg, type}` issues. A table declared `as const` gives its typed
 * object (`RequestOf`), and the same tables produce the OpenAPI schemas, so docs, types and behaviour agree.
 */
import { z } from 'zod';
import { ValidationError, type ValidationIssue } from './errors.ts';

export type FieldType = 'int' | 'float' | 'bool' | 'str' | 'str[]' | 'dict' | 'list' | 'any';

export interface FieldSpec {
  type: FieldType;
  default: unknown;
  description?: string;
}

export type ModelSpec = Record<string, FieldSpec>;

/** The value type a field gives: its JSON type, or null where the field's default is null. */
type ValueOf<F extends FieldSpec> =
  | (F['type'] extends 'int' | 'float' ? number
    : F['type'] extends 'bool' ? boolean
    : F['type'] extends 'str' ? string
    : F['type'] extends 'str[]' ? string[]
    : F['type'] extends 'dict' ? Record<string, unknown>
    : F['type'] extends 'list' ? unknown[]
    : unknown)
  | (F['default'] extends null ? null : never);

/** The typed object a request model validates to (declare the model `as const satisfies ModelSpec`). */
export type RequestOf<S extends ModelSpec> = { -readonly [K in keyof S]: ValueOf<S[K]> };

const TRUE = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE = new Set(['0', 'off', 'f', 'false', 'n', 'no']);
const INT_TEXT = /^\s*[+-]?\d+\s*$/;

/** pydantic v1's message and error type for a value a field of each type refuses. */
const REFUSAL: Record<FieldType, { msg: string; type: string }> = {
  int: { msg: 'value is not a valid integer', type: 'type_error.integer' },
  float: { msg: 'value is not a valid float', type: 'type_error.float' },
  bool: { msg: 'value could not be parsed to a boolean', type: 'type_error.bool' },
  str: { msg: 'str type expected', type: 'type_error.str' },
  'str[]': { msg: 'value is not a valid list', type: 'type_error.list' },
  dict: { msg: 'value is not a valid dict', type: 'type_error.dict' },
  list: { msg: 'value is not a valid list', type: 'type_error.list' },
  any: { msg: 'invalid value', type: 'value_error' },
};

const refused = (t: FieldType) => ({ error: REFUSAL[t].msg });
const fromBool = z.boolean().transform((b) => (b ? 1 : 0));
const zStr = z.union([z.string(), z.number().refine(Number.isFinite).transform(String)], refused('str'));

/** pydantic v1's lenient coercion of one field type, as a zod schema: "20" → 20, 1 → true, 7 → "7". */
const COERCE: Record<FieldType, z.ZodType> = {
  int: z.union([fromBool, z.number().refine(Number.isFinite).transform(Math.trunc), z.string().regex(INT_TEXT).transform((t) => parseInt(t, 10))], refused('int')),
  float: z.union([fromBool, z.number().refine(Number.isFinite), z.string().refine((t) => t.trim() !== '' && Number.isFinite(Number(t))).transform(Number)], refused('float')),
  bool: z.union(
    [z.boolean(), z.union([z.literal(0), z.literal(1)]).transform((n) => n === 1), z.string().refine((t) => TRUE.has(t.toLowerCase()) || FALSE.has(t.toLowerCase())).transform((t) => TRUE.has(t.toLowerCase()))],
    refused('bool'),
  ),
  str: zStr,
  'str[]': z.array(zStr, refused('str[]')),
  dict: z.record(z.string(), z.unknown(), refused('dict')).refine((v) => !Array.isArray(v), refused('dict')),
  list: z.array(z.unknown(), refused('list')),
  any: z.unknown(),
};

/** Every A1111 request field is Optional: absent or null means the default (a fresh copy of it). */
function fieldSchema(f: FieldSpec): z.ZodType {
  return z.preprocess((v) => (v === null ? undefined : v), COERCE[f.type].optional()).transform((v) => (v === undefined ? structuredClone(f.default) : v));
}

const compiled = new WeakMap<ModelSpec, z.ZodType>();

/** The model's zod schema (unknown keys are dropped, as pydantic v1 ignores them). */
export function modelSchema(spec: ModelSpec): z.ZodType {
  let schema = compiled.get(spec);
  if (!schema) {
    schema = z.object(Object.fromEntries(Object.entries(spec).map(([k, f]) => [k, fieldSchema(f)])), refused('dict'));
    compiled.set(spec, schema);
  }
  return schema;
}

/** A zod issue as FastAPI reports it: `loc` under `body`, pydantic's message and error type for the field. */
function fastApiIssue(spec: ModelSpec, issue: z.core.$ZodIssue): ValidationIssue {
  const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
  const field = typeof path[0] === 'string' ? spec[path[0]] : undefined;
  // A list item refused inside a str[] field is a str refusal; everything else is the field's own.
  const type = field ? (field.type === 'str[]' && path.length > 1 ? 'str' : field.type) : 'dict';
  return { loc: ['body', ...path], msg: issue.message, type: REFUSAL[type].type };
}

/** Validates a JSON body against a model into its typed object; throws ValidationError (→ 422) listing every bad field. */
export function parseRequest<S extends ModelSpec>(spec: S, body: unknown): RequestOf<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError([{ loc: ['body'], msg: REFUSAL.dict.msg, type: REFUSAL.dict.type }]);
  }
  const r = modelSchema(spec).safeParse(body);
  if (!r.success) throw new ValidationError(r.error.issues.map((i) => fastApiIssue(spec, i)));
  return r.data as RequestOf<S>;
}

/** `parseRequest` for callers that name their own result type (models not declared `as const`). */
export function validateModel<T = Record<string, unknown>>(spec: ModelSpec, body: unknown): T {
  return parseRequest(spec, body) as T;
}

/** Keys the client actually sent (non-null), for rules that depend on whether a field was set. */
export function fieldsSet(body: unknown): Set<string> {
  if (!body || typeof body !== 'object') return new Set();
  return new Set(Object.entries(body as Record<string, unknown>).filter(([, v]) => v !== undefined && v !== null).map(([k]) => k));
}

const JSON_TYPES: Record<FieldType, object> = {
  int: { type: 'integer' },
  float: { type: 'number' },
  bool: { type: 'boolean' },
  str: { type: 'string' },
  'str[]': { type: 'array', items: { type: 'string' } },
  dict: { type: 'object' },
  list: { type: 'array', items: {} },
  any: {},
};

export function modelJsonSchema(title: string, spec: ModelSpec): object {
  const properties: Record<string, object> = {};
  for (const [k, f] of Object.entries(spec)) {
    properties[k] = { title: k, ...JSON_TYPES[f.type], default: f.default, ...(f.description ? { description: f.description } : {}) };
  }
  return { title, type: 'object', properties };
}
