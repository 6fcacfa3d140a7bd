/**
 * Files of one training job's folder (states, logs, intermediate saves, sample images, job.json):
 * `GET /sdapi/v1/train/jobs/{id}/files` lists them, `GET /sdapi/v1/train/jobs/{id}/file?path=…` sends one.
 * Paths are relative to the job's work_dir and never leave it.
 */
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { ServerContext } from '../context.ts';
import { HttpError } from '../errors.ts';
import { trainingRegistry } from '../training.ts';
import { isInside } from '../train-settings.ts';
import type { Api } from './api.ts';

async function workDir(ctx: ServerContext, id: string): Promise<string> {
  const registry = trainingRegistry(ctx);
  await registry.ready;
  const job = registry.get(id);
  if (!job) throw new HttpError(404, `training job '${id}' not found`);
  return job.outputs.work_dir;
}

export function register(api: Api, ctx: ServerContext): void {
  const tag = 'training';
  api.get('/sdapi/v1/train/jobs/:id/files', { summary: "Files in a training job's folder: path (relative), size, modified", tag }, async (req) => {
    const dir = await workDir(ctx, String(req.params['id']));
    const entries = await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
    const out: { path: string; size: number; modified: string }[] = [];
    for (const e of entries) {
      if (!e.isFile() || e.name.startsWith('.')) continue;
      const abs = join(e.parentPath, e.name);
      const st = await stat(abs).catch(() => null);
      if (st) out.push({ path: relative(dir, abs).split(sep).join('/'), size: st.size, modified: st.mtime.toISOString() });
    }
    return out.sort((a, b) => a.path.localeCompare(b.path));
  });

  api.get(
    '/sdapi/v1/train/jobs/:id/file',
    { summary: "One file of a training job's folder (path relative to it)", tag, query: [{ name: 'path', type: 'string' }] },
    async (req, res) => {
      const dir = await workDir(ctx, String(req.params['id']));
      const rel = String(req.query['path'] ?? '');
      const abs = join(dir, rel);
      if (!rel || !isInside(dir, abs) || rel.split(/[\\/]/).some((c) => c.startsWith('.'))) throw new HttpError(422, `path '${rel}' is not a file of this job`);
      const st = await stat(abs).catch(() => null);
      if (!st?.isFile()) throw new HttpError(404, `job file '${rel}' not found`);
      await new Promise<void>((resolve, reject) => res.sendFile(abs, { dotfiles: 'deny', headers: { 'Cache-Control': 'no-cache' } }, (e) => (e ? reject(e) : resolve())));
      return undefined;
    },
  );
}
