/** POST /sdapi/v1/txt2img and /sdapi/v1/img2img. */
import type { Response } from 'express';
import type { ServerContext } from '../context.ts';
import { prepareGeneration, submitGeneration, type GenerationKind } from '../generation.ts';
import { img2imgRequest, txt2imgRequest } from '../requests/generation.ts';
import type { Api } from './api.ts';

const example = { images: ['<base64 PNG>'], parameters: {}, info: '{"prompt": "...", "all_seeds": [1], "infotexts": ["..."]}' };

async function handle(ctx: ServerContext, kind: GenerationKind, body: unknown, res: Response): Promise<unknown> {
  const prepared = await prepareGeneration(ctx, kind, body);
  const job = submitGeneration(ctx, prepared, typeof res.locals['user'] === 'string' ? res.locals['user'] : '');
  // A client that goes away must not leave its job queued or running for nobody.
  const onClose = () => {
    if (!res.writableFinished) job.cancel();
  };
  res.on('close', onClose);
  try {
    return await job.promise;
  } finally {
    res.off('close', onClose);
  }
}

export function register(api: Api, ctx: ServerContext): void {
  api.post('/sdapi/v1/txt2img', { summary: 'Text to image', tag: 'generation', body: { name: 'StableDiffusionTxt2ImgProcessingAPI', schema: txt2imgRequest }, example }, (req, res) =>
    handle(ctx, 'txt2img', req.body, res),
  );
  api.post('/sdapi/v1/img2img', { summary: 'Image to image', tag: 'generation', body: { name: 'StableDiffusionImg2ImgProcessingAPI', schema: img2imgRequest }, example }, (req, res) =>
    handle(ctx, 'img2img', req.body, res),
  );
}
