/**
 * Request bodies as zod schemas that validate the way A1111's pydantic v1 models do: every field optional with
 * A1111's default in the schema, lenient coercion ("20" → 20, 1 → true, 7 → "7"), unknown fields dropped,
 * failures collected as FastAPI's `{loc, msg, type}` issues. Each field helper carries its output type, so a
 * request schema's `z.infer` is the typed request, and registers its A1111 type, default and description for
 * the OpenAPI document, so docs, types and behaviour come from one definition.
 */
import { z } from 'zod';
import { ValidationError, type ValidationIssue } from './errors.ts';

export type FieldType = 'int' | 'float' | 'bool' | 'str' | 'str[]' | 'dict' | 'list' | 'any';

export interface FieldDoc {
  type: FieldType;
  default: unknown;
  /** No default: the client must send it. */
  required?: boolean;
  description?: string;
}

/** What each field helper registers about itself (read by the OpenAPI document and the error mapping). */
const fieldDocs = z.registry<FieldDoc>();

/** A request schema: a zod object whose fields were made by the helpers below. */
export type RequestSchema = z.ZodObject;

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

const MISSING = 'field required';
const refused = (t: FieldType) => ({ error: REFUSAL[t].msg });
const fromBool = z.boolean().transform((b) => (b ? 1 : 0));
const zStr = z.union([z.string(), z.number().refine(Number.isFinite).transform(String)], refused('str'));

/** pydantic v1's lenient coercion of each field type: "20" → 20, 1 → true, 7 → "7". */
const coerceInt = z.union([fromBool, z.number().refine(Number.isFinite).transform(Math.trunc), z.string().regex(INT_TEXT).transform((t) => parseInt(t, 10))], refused('int'));
const coerceFloat = z.union([fromBool, z.number().refine(Number.isFinite), z.string().refine((t) => t.trim() !== '' && Number.isFinite(Number(t))).transform(Number)], refused('float'));
const coerceBool = z.union(
  [z.boolean(), z.union([z.literal(0), z.literal(1)]).transform((n) => n === 1), z.string().refine((t) => TRUE.has(t.toLowerCase()) || FALSE.has(t.toLowerCase())).transform((t) => TRUE.has(t.toLowerCase()))],
  refused('bool'),
);
const coerceDict = z.record(z.string(), z.unknown(), refused('dict')).refine((v) => !Array.isArray(v), refused('dict'));

/** pydantic's `ge`/`le` bounds, with its messages and error types. */
export interface Bounds {
  ge?: number;
  le?: number;
}

function bounded<T extends z.ZodType<number | null>>(schema: T, b: Bounds | undefined): T {
  if (!b || (b.ge === undefined && b.le === undefined)) return schema;
  return schema.superRefine((v: number | null, ctx) => {
    if (v === null) return;
    if (b.ge !== undefined && v < b.ge) ctx.addIssue({ code: 'custom', message: `ensure this value is greater than or equal to ${b.ge}`, params: { type: 'value_error.number.not_ge' } });
    if (b.le !== undefined && v > b.le) ctx.addIssue({ code: 'custom', message: `ensure this value is less than or equal to ${b.le}`, params: { type: 'value_error.number.not_le' } });
  });
}

/** null when a default may be null, else nothing: a field typed `number` stays `number` with a default of 50. */
type NullIn<D> = null extends D ? null : never;

/** An A1111 `Optional` field: absent or null means the default (a fresh copy of it). */
export function field<T, D extends T | null>(type: FieldType, coerce: z.ZodType<T>, def: D, description?: string): z.ZodType<T | NullIn<D>> {
  // D is T or null, so its clone is T | NullIn<D>; the compiler cannot see that for a generic D.
  const fallback = () => structuredClone(def) as T | NullIn<D>;
  const schema = z.preprocess((v) => (v === null ? undefined : v), coerce.optional()).transform((v): T | NullIn<D> => (v === undefined ? fallback() : v));
  schema.register(fieldDocs, { type, default: def, ...(description ? { description } : {}) });
  return schema;
}

/** The field helpers: `f.int(50)` is a number, `f.str(null)` a string or null, each with its A1111 default. */
export const f = {
  int: <D extends number | null>(def: D, description?: string, bounds?: Bounds) => bounded(field('int', coerceInt, def, description), bounds),
  float: <D extends number | null>(def: D, description?: string, bounds?: Bounds) => bounded(field('float', coerceFloat, def, description), bounds),
  bool: <D extends boolean | null>(def: D, description?: string) => field('bool', coerceBool, def, description),
  str: <D extends string | null>(def: D, description?: string) => field('str', zStr, def, description),
  strList: <D extends string[] | null>(def: D, description?: string) => field('str[]', z.array(zStr, refused('str[]')), def, description),
  dict: <D extends Record<string, unknown> | null>(def: D, description?: string) => field('dict', coerceDict, def, description),
  list: <D extends unknown[] | null>(def: D, description?: string) => field('list', z.array(z.unknown(), refused('list')), def, description),
  /** A field of A1111's `Any` type: taken as sent. */
  any: (description?: string) => field('any', z.unknown(), null, description),
};

/** A required field (no default): absent or null is pydantic's "field required". */
export function required<T>(type: FieldType, coerce: z.ZodType<T>, description?: string): z.ZodType<T> {
  const schema = z
    .any()
    .refine((v) => v !== undefined && v !== null, { error: MISSING, abort: true, params: { type: 'value_error.missing' } })
    .pipe(coerce);
  schema.register(fieldDocs, { type, default: null, required: true, ...(description ? { description } : {}) });
  return schema;
}

/** The lenient coercions by themselves (no default), for schemas built from data such as the options table. */
export const coerce = { int: coerceInt, float: coerceFloat, bool: coerceBool, str: zStr, dict: coerceDict, list: z.array(z.unknown(), refused('list')) };

/** Registers a hand-built field's A1111 type, default and description, as the helpers do. */
export function documented<T extends z.ZodType>(schema: T, doc: FieldDoc): T {
  const s: z.ZodType = schema;
  s.register(fieldDocs, doc);
  return schema;
}

/** A required string inside a nested model (A1111's `FileData.name`), refused as pydantic refuses it. */
export const requiredStr = () => z.string({ error: (iss) => (iss.input === undefined ? MISSING : REFUSAL.str.msg) });

/** pydantic's refusal of a value outside an enumeration, for `z.enum(values, enumError(values))`. */
export const enumError = (values: readonly string[]) => ({ error: `value is not a valid enumeration member; permitted: ${values.map((v) => `'${v}'`).join(', ')}` });

/** A check of our own (one-line text, a non-empty list), reported with the FastAPI error type given. */
export const check = (message: string, type = 'value_error') => ({ error: message, params: { type } });

/** A request model (unknown keys are dropped, as pydantic v1 ignores them). */
export function requestModel<S extends z.ZodRawShape>(shape: S) {
  return z.object(shape, refused('dict'));
}

const NESTED_REFUSAL: Record<string, string> = { string: REFUSAL.str.type, object: REFUSAL.dict.type, number: REFUSAL.float.type, boolean: REFUSAL.bool.type, array: REFUSAL.list.type };

/** The A1111 type the issue's field has, from its registered doc (nested fields: the enclosing field's). */
function issueType(schema: RequestSchema, issue: z.core.$ZodIssue): string {
  if (issue.code === 'custom' && typeof issue.params?.['type'] === 'string') return issue.params['type'];
  if (issue.code === 'invalid_value') return 'type_error.enum';
  const key = issue.path[0];
  const fieldSchema = typeof key === 'string' ? schema.shape[key] : undefined;
  const doc = fieldSchema ? fieldDocs.get(fieldSchema) : undefined;
  if (!doc) return key === undefined ? REFUSAL.dict.type : 'value_error';
  if (issue.path.length > 1) {
    // Inside a field: a list item of a str[] is a str refusal; nested models (lists of objects) say what they expected.
    if (doc.type === 'str[]') return REFUSAL.str.type;
    if (issue.message === MISSING) return 'value_error.missing';
    if (issue.code === 'invalid_type') return NESTED_REFUSAL[issue.expected] ?? 'value_error';
  }
  return REFUSAL[doc.type].type;
}

/** A zod issue as FastAPI reports it: `loc` under `body`, pydantic's message and error type. */
export function fastApiIssue(schema: RequestSchema, issue: z.core.$ZodIssue, loc: (string | number)[] = ['body']): ValidationIssue {
  const path = issue.path.map((p) => (typeof p === 'number' ? p : String(p)));
  return { loc: [...loc, ...path], msg: issue.message, type: issueType(schema, issue) };
}

/** Validates a JSON body into its typed object; throws ValidationError (→ 422) listing every bad field. */
export function parseRequest<S extends RequestSchema>(schema: S, body: unknown, loc: (string | number)[] = ['body']): z.output<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError([{ loc, msg: REFUSAL.dict.msg, type: REFUSAL.dict.type }]);
  }
  const r = schema.safeParse(body);
  if (!r.success) throw new ValidationError(r.error.issues.map((i) => fastApiIssue(schema, i, loc)));
  return r.data;
}

const emptyModel = requestModel({});

/** A route without a request model (interrupt, skip): no body, or a JSON object whose keys are ignored. */
export function parseNoBody(body: unknown): void {
  if (body !== undefined && body !== null) parseRequest(emptyModel, body);
}

/** Keys the client actually sent (non-null), for rules that depend on whether a field was set. */
export function fieldsSet(body: unknown): Set<string> {
  if (!body || typeof body !== 'object') return new Set();
  return new Set(Object.entries(body).filter(([, v]) => v !== undefined && v !== null).map(([k]) => k));
}

/** Each field of a request schema with its A1111 type, default and description. */
export function modelFields(schema: RequestSchema): ({ name: string } & FieldDoc)[] {
  return Object.entries(schema.shape).map(([name, s]) => ({ name, ...(fieldDocs.get(s) ?? { type: 'any', default: null }) }));
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

export function modelJsonSchema(title: string, schema: RequestSchema): object {
  const properties: Record<string, object> = {};
  const fields = modelFields(schema);
  for (const fd of fields) {
    properties[fd.name] = { title: fd.name, ...JSON_TYPES[fd.type], ...(fd.required ? {} : { default: fd.default }), ...(fd.description ? { description: fd.description } : {}) };
  }
  const required = fields.filter((fd) => fd.required).map((fd) => fd.name);
  return { title, type: 'object', properties, ...(required.length ? { required } : {}) };
}
