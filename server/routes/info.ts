/** POST /sdapi/v1/png-info and GET /sdapi/v1/memory. */
import { freemem, totalmem } from 'node:os';
import { isPng, parseInfotext, readPngText } from '../../engine/image/png-info.ts';
import type { ServerContext } from '../context.ts';
import { decodeImageInput } from '../images.ts';
import { readUserComment } from '../../engine/image/exif.ts';
import sharp from 'sharp';
import { pngInfoRequest } from '../requests/generation.ts';
import { parseRequest } from '../schema.ts';
import type { Api } from './api.ts';

export function register(api: Api, ctx: ServerContext): void {
  api.post(
    '/sdapi/v1/png-info',
    { summary: 'Generation parameters stored in an image', tag: 'info', body: { name: 'PNGInfoRequest', schema: pngInfoRequest }, example: { info: 'prompt\nSteps: 20, …', items: {}, parameters: { Prompt: 'prompt', Steps: '20' } } },
    async (req) => {
      const { image } = parseRequest(pngInfoRequest, req.body);
      if (image.trim() === '') return { info: '', items: {}, parameters: {} };
      const bytes = await decodeImageInput(image, ctx.imagePolicy());
      const items: Record<string, string> = isPng(bytes) ? readPngText(bytes) : {};
      let info = items['parameters'] ?? '';
      delete items['parameters'];
      if (!info) {
        // JPEG/WebP (and PNGs written by EXIF-only tools): A1111 reads the EXIF UserComment.
        const exif = (await sharp(bytes).metadata()).exif;
        info = (exif && readUserComment(exif)) || '';
      }
      return { info, items, parameters: info ? parseInfotext(info) : {} };
    },
  );
  // Some clients probe A1111's UI-mode ping to see whether the server is up.
  api.get('/internal/ping', { summary: 'Liveness probe (A1111 UI-mode route)', tag: 'info', example: {} }, () => ({}));
  api.get('/sdapi/v1/memory', { summary: 'Memory use', tag: 'info' }, () => {
    const rss = process.memoryUsage().rss;
    const total = totalmem();
    return {
      ram: { free: total - rss, used: rss, total, system_free: freemem() },
      cuda: { error: 'lora-scripts runs on ONNX Runtime; CUDA memory statistics are not available' },
    };
  });
}
