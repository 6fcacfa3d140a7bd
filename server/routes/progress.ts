/** GET /sdapi/v1/progress, POST /sdapi/v1/interrupt, POST /sdapi/v1/skip (never wait for the queue). */
import type { ServerContext } from '../context.ts';
import { checkSamplesFormat } from '../images.ts';
import { progressResponse } from '../progress.ts';
import { parseNoBody } from '../schema.ts';
import type { Api } from './api.ts';

export function register(api: Api, ctx: ServerContext): void {
  api.get(
    '/sdapi/v1/progress',
    { summary: 'Progress of the running job, with a live preview', tag: 'progress', query: [{ name: 'skip_current_image', type: 'boolean', default: false }] },
    async (req) => {
      const skip = String(req.query['skip_current_image'] ?? 'false').toLowerCase();
      return progressResponse(ctx.queue.current(), ctx.previews, {
        skipCurrentImage: skip === 'true' || skip === '1',
        format: checkSamplesFormat(ctx.options.get('live_previews_image_format') ?? 'png'),
      });
    },
  );
  api.post('/sdapi/v1/interrupt', { summary: 'Stop the running job at its next step; it returns what it has', tag: 'progress', example: {} }, (req) => {
    parseNoBody(req.body);
    ctx.queue.interrupt();
    return {};
  });
  api.post('/sdapi/v1/skip', { summary: 'Skip the current batch of the running job', tag: 'progress', example: null }, (req) => {
    parseNoBody(req.body);
    ctx.queue.skip();
    return null;
  });
}
