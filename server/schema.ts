/**
 * Request models as field tables, validated the way A1111's pydantic v1 models are: every field optional,
 * lenient coercion ("20" → 20, 1 → true, 7 → 7.0), unknown fields ignored, failures collected as FastAPI's
 * `{loc, msg, type}` issues. The same tables produce the OpenAPI schemas, so docs and behaviour agree.
 */
import { ValidationError, type ValidationIssue } from './errors.ts';

export type FieldType = 'int' | 'float' | 'bool' | 'str' | 'str[]' | 'dict' | 'list' | 'any';

export interface FieldSpec {
  type: FieldType;
  default: unknown;
  description?: string;
}

export type ModelSpec = Record<string, FieldSpec>;

const TRUE = new Set(['1', 'on', 't', 'true', 'y', 'yes']);
const FALSE = new Set(['0', 'off', 'f', 'false', 'n', 'no']);

function coerce(type: FieldType, v: unknown, loc: (string | number)[], issues: ValidationIssue[]): unknown {
  const bad = (msg: string, t: string): undefined => {
    issues.push({ loc, msg, type: t });
    return undefined;
  };
  switch (type) {
    case 'int': {
      if (typeof v === 'boolean') return v ? 1 : 0;
      if (typeof v === 'number' && Number.isFinite(v)) return Math.trunc(v);
      if (typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v)) return parseInt(v, 10);
      return bad('value is not a valid integer', 'type_error.integer');
    }
    case 'float': {
      if (typeof v === 'boolean') return v ? 1 : 0;
      if (typeof v === 'number' && Number.isFinite(v)) return v;
      if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
      return bad('value is not a valid float', 'type_error.float');
    }
    case 'bool': {
      if (typeof v === 'boolean') return v;
      if (v === 0 || v === 1) return v === 1;
      if (typeof v === 'string' && TRUE.has(v.toLowerCase())) return true;
      if (typeof v === 'string' && FALSE.has(v.toLowerCase())) return false;
      return bad('value could not be parsed to a boolean', 'type_error.bool');
    }
    case 'str': {
      if (typeof v === 'string') return v;
      if (typeof v === 'number' && Number.isFinite(v)) return String(v);
      return bad('str type expected', 'type_error.str');
    }
    case 'str[]': {
      if (!Array.isArray(v)) return bad('value is not a valid list', 'type_error.list');
      return v.map((x, i) => coerce('str', x, [...loc, i], issues));
    }
    case 'list':
      if (!Array.isArray(v)) return bad('value is not a valid list', 'type_error.list');
      return v;
    case 'dict':
      if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad('value is not a valid dict', 'type_error.dict');
      return v;
    case 'any':
      return v;
  }
}

/** Validates a JSON body against a model; throws ValidationError (→ 422) listing every bad field. */
export function validateModel<T = Record<string, unknown>>(spec: ModelSpec, body: unknown): T {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ValidationError([{ loc: ['body'], msg: 'value is not a valid dict', type: 'type_error.dict' }]);
  }
  const src = body as Record<string, unknown>;
  const issues: ValidationIssue[] = [];
  const out: Record<string, unknown> = {};
  for (const [key, f] of Object.entries(spec)) {
    const v = src[key];
    // Every A1111 request field is Optional; an explicit null means "use the default".
    out[key] = v === undefined || v === null ? structuredClone(f.default) : coerce(f.type, v, ['body', key], issues);
  }
  if (issues.length > 0) throw new ValidationError(issues);
  return out as T;
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
