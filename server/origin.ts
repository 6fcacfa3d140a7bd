/**
 * Which browser pages may drive this server. A local tool without `--api-auth` is otherwise open to any web
 * page the user visits: a cross-origin "simple" POST needs no preflight and a WebSocket has no CORS at all.
 * So every HTTP request and every socket.io handshake is checked here:
 *
 * - `Origin` present: allowed when it is the server's own (same scheme-less host:port as the request's
 *   `Host`) or listed in `--cors-allow-origins` / matched by `--cors-allow-origins-regex` (`*` allows all);
 * - no `Origin` (curl, A1111 client libraries, same-origin GETs, link navigations): allowed, unless the
 *   browser's `Sec-Fetch-Site` says a page of another site made it as a subresource request;
 * - bound to a loopback address, the `Host` header must name a loopback host (or an allowed origin's host):
 *   a DNS-rebinding page talks to 127.0.0.1 under its own name and would otherwise count as "own origin".
 */
import type { IncomingMessage } from 'node:http';
import type { RequestHandler } from 'express';
import { HttpError, sendError } from './errors.ts';

export interface OriginRules {
  /** Exact origins (`*` = any). */
  origins: readonly string[];
  regex: RegExp | null;
  /** The server is bound to a loopback address only. */
  loopbackOnly: boolean;
}

const LOOPBACK_HOST = /^(?:localhost|127(?:\.\d{1,3}){3}|\[::1\]|\[::ffff:127(?:\.\d{1,3}){3}\])$/i;

function hostName(hostPort: string): string {
  // `[::1]:7860` → `[::1]`, `localhost:7860` → `localhost`.
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d+)?$/.exec(hostPort);
  return (m?.[1] ?? hostPort).toLowerCase();
}

export function originListed(rules: OriginRules, origin: string): boolean {
  return rules.origins.includes('*') || rules.origins.includes(origin) || (rules.regex?.test(origin) ?? false);
}

/** null when the request may proceed, else why it is refused. */
export function originRefusal(rules: OriginRules, headers: IncomingMessage['headers']): string | null {
  const host = String(headers.host ?? '');
  const origin = typeof headers.origin === 'string' ? headers.origin : undefined;
  if (rules.loopbackOnly && !LOOPBACK_HOST.test(hostName(host))) {
    const listedHost = rules.origins.some((o) => {
      try {
        return new URL(o).host.toLowerCase() === host.toLowerCase();
      } catch {
        return false;
      }
    });
    if (!listedHost && !rules.origins.includes('*')) return `Host '${host}' is not a loopback name; this server only answers requests addressed to it by localhost/127.0.0.1`;
  }
  if (origin === undefined) {
    const site = headers['sec-fetch-site'];
    const mode = headers['sec-fetch-mode'];
    if ((site === 'cross-site' || site === 'same-site') && mode !== 'navigate') return `a ${site} request without Origin is refused`;
    return null;
  }
  if (originListed(rules, origin)) return null;
  let own = false;
  try {
    own = origin !== 'null' && new URL(origin).host.toLowerCase() === host.toLowerCase();
  } catch {
    own = false;
  }
  return own ? null : `cross-origin request from ${origin} refused; start the server with --cors-allow-origins ${origin} to allow that page`;
}

/** Express middleware: 403 for requests from pages the rules do not allow. */
export function originMiddleware(rules: OriginRules): RequestHandler {
  return (req, res, next) => {
    const why = originRefusal(rules, req.headers);
    if (why === null) return next();
    sendError(res, new HttpError(403, why));
  };
}
