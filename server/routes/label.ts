/**
 * Auto-labelling routes: `POST /sdapi/v1/interrogate` in A1111's shape, and labelling jobs over the uploaded
 * datasets (a lora-scripts extension) under `/sdapi/v1/label`. Settings use the same keys as
 * `lora-scripts label --config` (engine/label/options.ts).
 */
import { join } from 'node:path';
import { stat } from 'node:fs/promises';
import { parseLabelSettings } from '../../engine/label/options.ts';
import { isUserError } from '../../engine/util/errors.ts';
import type { ServerContext } from '../context.ts';
import { checkDatasetName } from '../datasets.ts';
import { HttpError } from '../errors.ts';
import { decodeImageInput } from '../images.ts';
import { labelService, listLabelModels, type LabelJob } from '../labelling.ts';
import { interrogateRequest, labelRequest } from '../requests/label.ts';
import { parseRequest } from '../schema.ts';
import { trainingSettings } from '../train-settings.ts';
import type { Api } from './api.ts';

function summary(job: LabelJob) {
  const { changes: _c, ...rest } = job;
  return { ...rest, changed: job.changes.filter((c) => c.action !== 'kept').length };
}

function asSettings(settings: Record<string, unknown>, where: string) {
  try {
    return parseLabelSettings(settings, where);
  } catch (e) {
    if (isUserError(e)) throw new HttpError(422, e.message);
    throw e;
  }
}

export function register(api: Api, ctx: ServerContext): void {
  const service = labelService(ctx);
  const tag = 'labelling';

  api.get('/sdapi/v1/label/models', { summary: 'Captioning models found in <data-dir>/models/CLIP and <data-dir>/models/WD14 (nothing is downloaded)', tag }, () => listLabelModels(ctx));

  api.post(
    '/sdapi/v1/label',
    {
      summary:
        'Caption an uploaded dataset: {dataset, model: clip|wd14|both, mode: missing|overwrite|append, target: metadata|sidecar, trigger, dry_run, clip_model, wd14_model, …the keys of `lora-scripts label --config`}. Answers 202 {id}; progress on socket.io `label-progress`.',
      tag,
      body: { name: 'LabelRequest', schema: labelRequest },
      example: { id: 'label-0123456789ab', status: 'queued' },
    },
    async (req, res) => {
      const { dataset, clip_model: clipModel, wd14_model: wd14Model, ...settings } = parseRequest(labelRequest, req.body);
      const name = checkDatasetName(dataset);
      const folder = join(trainingSettings(ctx).datasetsDir, name);
      if (!(await stat(folder).catch(() => null))?.isDirectory()) throw new HttpError(404, `dataset '${name}' not found`);
      const names = { clip: clipModel || null, wd14: wd14Model || null };
      const r = await service.resolve(asSettings(settings, 'label request'), names, settings['model'] !== undefined);
      const job = service.submit({ dataset: name, folder, settings: r.settings, clipModel: names.clip, wd14Model: names.wd14 }, r.clip, r.wd14);
      res.status(202);
      return { id: job.id, status: job.status, model: job.settings.model, clip_model: job.clip_model, wd14_model: job.wd14_model };
    },
  );

  api.get('/sdapi/v1/label/jobs', { summary: 'Labelling jobs of this server run, oldest first', tag }, () => service.list().map(summary));

  api.get('/sdapi/v1/label/jobs/:id', { summary: 'One labelling job: status, progress, result and every caption change (file, before, after, action)', tag }, (req) => {
    const job = service.get(String(req.params['id']));
    if (!job) throw new HttpError(404, `labelling job '${String(req.params['id'])}' not found`);
    return { ...job, changed: summary(job).changed };
  });

  api.post('/sdapi/v1/label/jobs/:id/cancel', { summary: 'Cancel a labelling job: a waiting one is dropped, a running one stops after the current image (captions written so far stay)', tag }, (req) => {
    const job = service.get(String(req.params['id']));
    if (!job) throw new HttpError(404, `labelling job '${String(req.params['id'])}' not found`);
    if (!service.cancel(job.id)) throw new HttpError(409, `labelling job '${job.id}' has already ended (${job.status})`);
    return { id: job.id, cancel: true };
  });

  api.post(
    '/sdapi/v1/interrogate',
    {
      summary: "A1111's interrogate: {image, model: clip|deepdanbooru} → {caption}. clip uses a CLIP model from models/CLIP; deepdanbooru uses the WD14 tagger in models/WD14.",
      tag: 'default',
      body: { name: 'InterrogateRequest', schema: interrogateRequest },
      example: { caption: 'a cat, a photograph, natural light' },
    },
    async (req) => {
      const { image: data, model } = parseRequest(interrogateRequest, req.body);
      // A1111 answers an unknown model with 404 "Model not found".
      if (model !== 'clip' && model !== 'deepdanbooru') throw new HttpError(404, 'Model not found');
      if (!data) throw new HttpError(404, 'Image not found');
      const image = await decodeImageInput(data, ctx.imagePolicy());
      const settings = asSettings({ model: model === 'clip' ? 'clip' : 'wd14' }, 'interrogate');
      const r = await service.resolve(settings, { clip: null, wd14: null }, true);
      const caption = await service.interrogate(image, r.settings, r.clip, r.wd14);
      // As A1111's deepbooru answer (deepbooru_escape on by default): brackets escaped so the tags paste into a prompt.
      return { caption: model === 'deepdanbooru' ? caption.replace(/([\\()])/g, '\\$1') : caption };
    },
  );
}
