/** OpenAPI 3.1 document built from the registered routes and their request models; `/docs` renders it offline. */
import type { RouteRecord } from './routes/api.ts';
import { modelFields, modelJsonSchema } from './schema.ts';

export function openApiDocument(routes: RouteRecord[], version: string): object {
  const paths: Record<string, Record<string, object>> = {};
  const schemas: Record<string, object> = {};
  for (const r of routes) {
    const op: Record<string, unknown> = {
      summary: r.doc.summary,
      tags: [r.doc.tag],
      operationId: `${r.method}_${r.path.replace(/[^a-zA-Z0-9]+/g, '_').replace(/^_|_$/g, '')}`,
      responses: {
        '200': { description: 'Successful Response', content: { 'application/json': { schema: {}, ...(r.doc.example !== undefined ? { example: r.doc.example } : {}) } } },
        '422': { description: 'Validation Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/HTTPValidationError' } } } },
      },
    };
    if (r.doc.body) {
      schemas[r.doc.body.name] = modelJsonSchema(r.doc.body.name, r.doc.body.schema);
      op['requestBody'] = { required: true, content: { 'application/json': { schema: { $ref: `#/components/schemas/${r.doc.body.name}` } } } };
    }
    if (r.doc.query) {
      op['parameters'] = r.doc.query.map((q) => ({ name: q.name, in: 'query', required: false, schema: { type: q.type, default: q.default } }));
    }
    (paths[r.path] ??= {})[r.method] = op;
  }
  schemas['HTTPValidationError'] = {
    title: 'HTTPValidationError',
    type: 'object',
    properties: { detail: { type: 'array', items: { type: 'object', properties: { loc: { type: 'array' }, msg: { type: 'string' }, type: { type: 'string' } } } } },
  };
  return {
    openapi: '3.1.0',
    info: { title: 'lora-scripts', description: 'AUTOMATIC1111-compatible Stable Diffusion API', version },
    paths,
    components: { schemas },
  };
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** A self-contained page (no CDN: the server may have no internet) listing every route and its fields. */
export function docsHtml(routes: RouteRecord[], version: string): string {
  const rows = routes
    .map((r) => {
      const fields = r.doc.body
        ? `<details><summary>${modelFields(r.doc.body.schema).length} fields</summary><table>${modelFields(r.doc.body.schema)
            .map((f) => `<tr><td><code>${esc(f.name)}</code></td><td>${f.type}</td><td><code>${esc(JSON.stringify(f.default))}</code></td><td>${esc(f.description ?? '')}</td></tr>`)
            .join('')}</table></details>`
        : '';
      return `<tr><td><b>${r.method.toUpperCase()}</b></td><td><code>${esc(r.path)}</code></td><td>${esc(r.doc.summary)}${fields}</td></tr>`;
    })
    .join('\n');
  return `<!doctype html><html><head><meta charset="utf-8"><title>lora-scripts API</title>
<style>body{font-family:system-ui,sans-serif;margin:2em}td{padding:4px 8px;vertical-align:top;border-bottom:1px solid #ddd}table{border-collapse:collapse}</style></head>
<body><h1>lora-scripts API ${esc(version)}</h1><p>AUTOMATIC1111-compatible. Machine-readable: <a href="openapi.json">/openapi.json</a>.</p>
<table>${rows}</table></body></html>`;
}
