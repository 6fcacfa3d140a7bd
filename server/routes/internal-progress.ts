/**
 * A1111's UI-mode task routes that API clients poll too: POST /internal/progress (one task by id: queued,
 * active or completed, with a live preview) and GET /internal/pending-tasks.
 */
import type { ServerContext } from '../context.ts';
import { checkSamplesFormat } from '../images.ts';
import { progressFraction } from '../progress.ts';
import type { RunningState } from '../queue.ts';
import { internalProgressRequest } from '../requests/progress.ts';
import { parseRequest } from '../schema.ts';
import type { Api } from './api.ts';

// A1111 remembers the last 16 finished task ids.
const FINISHED_KEPT = 16;

export function register(api: Api, ctx: ServerContext): void {
  const finished: string[] = [];
  ctx.queue.on('end', (state: RunningState) => {
    finished.push(state.id);
    if (finished.length > FINISHED_KEPT) finished.shift();
  });

  api.post(
    '/internal/progress',
    {
      summary: 'Progress of one task by id (A1111 UI-mode route)',
      tag: 'progress',
      body: { name: 'ProgressRequest', schema: internalProgressRequest },
      example: { active: false, queued: true, completed: false, progress: null, eta: null, live_preview: null, id_live_preview: -1, textinfo: 'In queue: 1/1' },
    },
    async (req, res) => {
      const owner = typeof res.locals['user'] === 'string' ? res.locals['user'] : '';
      const body = parseRequest(internalProgressRequest, req.body);
      const id = body.id_task ?? '';
      // Another user's tasks stay out of sight, as in the queue's own listings.
      const current = ctx.queue.current();
      const running = current && (current.owner === null || current.owner === owner) ? current : null;
      const pending = ctx.queue.pendingIds(owner);
      const active = running !== null && running.id === id;
      const queued = pending.includes(id);
      const completed = finished.includes(id);
      if (!active || !running) {
        const textinfo = queued ? `In queue: ${pending.indexOf(id) + 1}/${pending.length}` : 'Waiting...';
        return { active, queued, completed, progress: null, eta: null, live_preview: null, id_live_preview: -1, textinfo };
      }
      const progress = progressFraction(running);
      const elapsed = (Date.now() - running.startedAt) / 1000;
      const eta = progress > 0 ? elapsed / progress - elapsed : null;
      // A preview is made at most once per step, so the step numbers it: a client that has it gets null.
      const previewId = running.jobNo * (running.total + 1) + running.step;
      let livePreview: string | null = null;
      if (body.live_preview && previewId !== body.id_live_preview) {
        const format = checkSamplesFormat(ctx.options.get('live_previews_image_format') ?? 'png');
        const b64 = await ctx.previews.get(running, format);
        if (b64) livePreview = `data:image/${format};base64,${b64}`;
      }
      return { active, queued, completed, progress, eta, live_preview: livePreview, id_live_preview: livePreview ? previewId : body.id_live_preview, textinfo: running.textinfo };
    },
  );

  api.get('/internal/pending-tasks', { summary: 'Ids of the waiting tasks, oldest first (A1111 UI-mode route)', tag: 'progress', example: { size: 0, tasks: [] } }, (_req, res) => {
    const tasks = ctx.queue.pendingIds(typeof res.locals['user'] === 'string' ? res.locals['user'] : '');
    return { size: tasks.length, tasks };
  });
}
