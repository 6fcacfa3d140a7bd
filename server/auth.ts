/**
 * `--api-auth user:pass[,user2:pass2]`: HTTP Basic on every route and on the socket.io handshake.
 * Unlike A1111 (whose Lora extension routes are unprotected) the LoRA list is protected too: it reveals
 * file paths and training metadata.
 */
import { timingSafeEqual, createHash } from 'node:crypto';
import type { RequestHandler } from 'express';
import { UserError } from '../engine/util/errors.ts';
import { HttpError, errorBody, sendError } from './errors.ts';

export type Credentials = Map<string, string>;

export function parseApiAuth(spec: string): Credentials {
  const creds: Credentials = new Map();
  for (const pair of spec.split(',')) {
    if (pair.trim() === '') continue;
    const i = pair.indexOf(':');
    if (i <= 0 || i === pair.length - 1) throw new UserError(`--api-auth: expected user:password, got '${pair}'`);
    creds.set(pair.slice(0, i), pair.slice(i + 1));
  }
  if (creds.size === 0) throw new UserError('--api-auth: no user:password given');
  return creds;
}

// Comparing fixed-length digests keeps the comparison time independent of where the strings differ.
function sameSecret(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db);
}

/** The user these Basic credentials name, or the A1111 401 detail. */
function basicUser(creds: Credentials, header: string | undefined): { user: string } | { error: string } {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? '');
  if (!m) return { error: 'Not authenticated' };
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return { error: 'Not authenticated' };
  const user = decoded.slice(0, i);
  const pass = decoded.slice(i + 1);
  let ok = false;
  for (const [u, p] of creds) if (sameSecret(u, user) && sameSecret(p, pass)) ok = true;
  return ok ? { user } : { error: 'Incorrect username or password' };
}

/** 'ok', or the A1111 401 detail for this Authorization header value. */
export function checkBasic(creds: Credentials, header: string | undefined): 'ok' | string {
  const r = basicUser(creds, header);
  return 'user' in r ? 'ok' : r.error;
}

/**
 * Sets `res.locals.user` to the authenticated user name (`''` without `--api-auth`): queued work is owned
 * by it, so one user's task ids and queue events stay theirs.
 */
export function basicAuthMiddleware(creds: Credentials | null): RequestHandler {
  return (req, res, next) => {
    if (!creds) {
      res.locals['user'] = '';
      return next();
    }
    const u = basicUser(creds, req.headers.authorization);
    if ('user' in u) {
      res.locals['user'] = u.user;
      return next();
    }
    const r = u.error;
    // A page that asks for the credentials itself (the browser UI) says so with X-Requested-With; without
    // the WWW-Authenticate challenge the browser shows no login dialog of its own over the page's.
    if (req.headers['x-requested-with'] === 'XMLHttpRequest') {
      res.status(401).json(errorBody(new HttpError(401, r)).body);
      return;
    }
    sendError(res, new HttpError(401, r));
  };
}

/**
 * socket.io clients authenticate with the same Basic header (`extraHeaders`) or with
 * `auth: { username, password }` (browsers cannot set headers on WebSocket upgrades).
 */
export function socketAuthOk(creds: Credentials | null, headers: Record<string, unknown>, auth: unknown): boolean {
  return socketUser(creds, headers, auth) !== null;
}

/** The socket's user (`''` without `--api-auth`), or null when it is not authenticated. */
export function socketUser(creds: Credentials | null, headers: Record<string, unknown>, auth: unknown): string | null {
  if (!creds) return '';
  const h = headers['authorization'];
  if (typeof h === 'string') {
    const r = basicUser(creds, h);
    if ('user' in r) return r.user;
  }
  const a = auth as { username?: unknown; password?: unknown } | undefined;
  if (a && typeof a.username === 'string' && typeof a.password === 'string') {
    const r = basicUser(creds, 'Basic ' + Buffer.from(`${a.username}:${a.password}`).toString('base64'));
    if ('user' in r) return r.user;
  }
  return null;
}
