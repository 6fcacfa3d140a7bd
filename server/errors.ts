/**
 * A1111's error shapes. Endpoint errors answer `{error, detail, body, errors}` with the exception's status
 * (500 by default); request validation answers FastAPI's `{detail: [{loc, msg, type}]}` with 422; unknown
 * routes `{detail: "Not Found"}`. Stack traces stay in the server log, never in a response.
 */
import type { ErrorRequestHandler, Response } from 'express';
import { isUserError } from '../engine/util/errors.ts';

/** Like A1111's `HTTPException(status_code, detail)`. */
export class HttpError extends Error {
  override name = 'HTTPException';
  constructor(
    readonly status: number,
    readonly detail: string,
    /** Exception class name to report, for errors A1111 raises as other types (RuntimeError, KeyError). */
    readonly errorName = 'HTTPException',
  ) {
    super(detail);
  }
}

export interface ValidationIssue {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Request validation failure, answered as FastAPI's 422. */
export class ValidationError extends Error {
  constructor(readonly issues: ValidationIssue[]) {
    super(issues.map((i) => `${i.loc.join('.')}: ${i.msg}`).join('; '));
  }
}

export interface ErrorBody {
  error: string;
  detail: string;
  body: string;
  errors: string;
}

export function errorBody(e: unknown): { status: number; body: ErrorBody } {
  if (e instanceof HttpError) {
    // Under A1111's pinned Starlette, str(HTTPException) is empty; RuntimeError/KeyError carry their message.
    const errors = e.errorName === 'HTTPException' ? '' : e.detail;
    const detail = e.errorName === 'HTTPException' ? e.detail : '';
    return { status: e.status, body: { error: e.errorName, detail, body: '', errors } };
  }
  if (isUserError(e)) return { status: e.status, body: { error: 'UserError', detail: e.message, body: '', errors: e.message } };
  const name = e instanceof Error ? e.constructor.name || 'Error' : 'Error';
  const msg = e instanceof Error ? e.message : String(e);
  return { status: 500, body: { error: name, detail: '', body: '', errors: msg } };
}

export function sendError(res: Response, e: unknown): void {
  const { status, body } = errorBody(e);
  if (status === 401) res.setHeader('WWW-Authenticate', 'Basic');
  res.status(status).json(body);
}

interface BodyParserError extends Error {
  type?: string;
  limit?: number;
  status?: number;
}

/** The last express middleware: maps everything thrown by a route to A1111's shapes. */
export function errorHandler(log: (msg: string) => void): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    if (res.headersSent) {
      res.end();
      return;
    }
    const bp = err as BodyParserError;
    if (bp && typeof bp.type === 'string' && bp.type.startsWith('entity.')) {
      if (bp.type === 'entity.too.large') {
        res.status(413).json({ error: 'PayloadTooLarge', detail: `request body is larger than the limit of ${bp.limit} bytes`, body: '', errors: '' });
        return;
      }
      if (bp.type === 'entity.parse.failed') {
        res.status(422).json({ detail: [{ loc: ['body', 0], msg: `JSON decode error: ${bp.message}`, type: 'value_error.jsondecode' }] });
        return;
      }
      res.status(bp.status ?? 400).json({ error: 'BadRequest', detail: bp.message, body: '', errors: '' });
      return;
    }
    if (err instanceof ValidationError) {
      res.status(422).json({ detail: err.issues });
      return;
    }
    const { status } = errorBody(err);
    // A stack only helps for bugs; an expected condition (no checkpoint, a bad file) is one line.
    const expected = err instanceof HttpError || isUserError(err);
    if (status >= 500) log(`error: ${err instanceof Error ? (expected ? err.message : (err.stack ?? err.message)) : String(err)}`);
    sendError(res, err);
  };
}
