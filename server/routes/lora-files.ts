/**
 * A LoRA's own files by name (as `/sdapi/v1/loras` lists them): `GET /sdapi/v1/loras/{name}/file` sends the
 * file itself (as a download), `GET /sdapi/v1/loras/{name}/preview` the preview image beside it
 * (`<stem>.preview.png|jpg|jpeg|webp`, then `<stem>.png|jpg|jpeg|webp`, A1111's conventions), 404 if none.
 */
import { stat } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import type { Response } from 'express';
import type { ServerContext } from '../context.ts';
import { HttpError } from '../errors.ts';
import type { Api } from './api.ts';

const PREVIEW_EXTS = ['.preview.png', '.preview.jpg', '.preview.jpeg', '.preview.webp', '.png', '.jpg', '.jpeg', '.webp'];

/** The preview image beside a LoRA file, or null. */
export async function previewOf(loraPath: string): Promise<string | null> {
  const stem = join(dirname(loraPath), basename(loraPath, extname(loraPath)));
  for (const ext of PREVIEW_EXTS) if ((await stat(stem + ext).catch(() => null))?.isFile()) return stem + ext;
  return null;
}

function send(res: Response, file: string, download: boolean): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const opts = { headers: { 'Cache-Control': 'no-cache' } };
    const done = (e?: Error) => (e ? reject(e) : resolve());
    if (download) res.download(file, basename(file), opts, done);
    else res.sendFile(file, opts, done);
  });
}

export function register(api: Api, ctx: ServerContext): void {
  const tag = 'models';
  const entry = (name: string) => {
    const e = ctx.loras.resolve(name);
    if (!e) throw new HttpError(404, `LoRA '${name}' not found`);
    return e;
  };

  api.get('/sdapi/v1/loras/:name/file', { summary: 'Download a LoRA file by name or alias', tag }, async (req, res) => {
    const e = entry(String(req.params['name']));
    await send(res, e.path, true);
    return undefined;
  });

  api.get('/sdapi/v1/loras/:name/preview', { summary: "A LoRA's preview image, if one lies beside it", tag }, async (req, res) => {
    const e = entry(String(req.params['name']));
    const preview = await previewOf(e.path);
    if (!preview) throw new HttpError(404, `LoRA '${e.name}' has no preview image`);
    await send(res, preview, false);
    return undefined;
  });
}
