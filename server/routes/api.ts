/**
 * Route registration that also records each route for OpenAPI and for A1111's 405 answers.
 * A handler returns the JSON body (`null` is sent as `null`, as A1111 does), or `undefined` if it wrote
 * the response itself. Thrown errors reach the A1111-shaped error handler.
 */
import type { Request, Response, Router } from 'express';
import type { RequestSchema } from '../schema.ts';

export interface RouteDoc {
  summary: string;
  tag: string;
  /** Request body model (POST). */
  body?: { name: string; schema: RequestSchema };
  query?: { name: string; type: 'boolean' | 'string' | 'integer'; default?: unknown }[];
  /** Example of the response body, for the docs. */
  example?: unknown;
}

export interface RouteRecord {
  method: 'get' | 'post';
  path: string;
  doc: RouteDoc;
}

type Handler = (req: Request, res: Response) => Promise<unknown> | unknown;

export class Api {
  readonly routes: RouteRecord[] = [];
  constructor(readonly router: Router) {}

  get(path: string, doc: RouteDoc, h: Handler): void {
    this.add('get', path, doc, h);
  }

  post(path: string, doc: RouteDoc, h: Handler): void {
    this.add('post', path, doc, h);
  }

  private add(method: 'get' | 'post', path: string, doc: RouteDoc, h: Handler): void {
    this.routes.push({ method, path, doc });
    this.router[method](path, async (req, res) => {
      const out = await h(req, res);
      if (out !== undefined && !res.headersSent) res.json(out);
    });
  }

  /** After all routes: a known path with another method answers FastAPI's 405. */
  finish(): void {
    const paths = new Set(this.routes.map((r) => r.path));
    for (const p of paths) {
      const methods = this.routes.filter((r) => r.path === p).map((r) => r.method.toUpperCase());
      this.router.all(p, (_req, res) => {
        res.setHeader('Allow', methods.join(', '));
        res.status(405).json({ detail: 'Method Not Allowed' });
      });
    }
  }
}
