/**
 * One dataset's images and captions, for editing them in place (the browser UI):
 * - `GET /sdapi/v1/train/datasets/{name}/items[?resolution=N]`: every image as training reads it — key,
 *   caption and where it comes from, size, repeats, and the bucket, resize and crop it gets at `resolution`
 *   with bucketing on (the trainer's own placement; default: the training config's defaults);
 * - `GET /sdapi/v1/train/datasets/{name}/image?key=…&size=N`: a JPEG thumbnail, longest side N (default 256);
 * - `POST /sdapi/v1/train/datasets/{name}/captions` `{edits: [{key, caption, before?}]}`: written into the
 *   dataset's metadata table by the engine's caption writer (other rows and columns kept, atomic). An edit
 *   whose `before` is no longer the caption on disk (changed meanwhile, e.g. by auto-labelling) is refused
 *   with 409 and nothing is written, so no edit silently replaces another.
 */
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { gated } from '../../engine/image/pixel-gate.ts';
import { bucketName } from '../../engine/train/buckets.ts';
import { writeCaptions } from '../../engine/train/caption-table.ts';
import { loadDataset } from '../../engine/train/dataset.ts';
import { IMAGE_EXTENSIONS } from '../../engine/image/load.ts';
import { isUserError } from '../../engine/util/errors.ts';
import type { TrainConfig } from '../../engine/train/config.ts';
import type { ServerContext } from '../context.ts';
import { checkDatasetName, findTable, listingConfig } from '../datasets.ts';
import { HttpError } from '../errors.ts';
import { captionEditsRequest } from '../requests/datasets.ts';
import { parseRequest } from '../schema.ts';
import { trainingRegistry } from '../training.ts';
import { isInside, trainingSettings, type TrainingSettings } from '../train-settings.ts';
import type { Api } from './api.ts';

async function readItems(s: TrainingSettings, name: string, resolution?: number) {
  const dir = join(s.datasetsDir, checkDatasetName(name));
  const metadata = await findTable(dir);
  const config: TrainConfig = listingConfig(dir, metadata, join(s.trainingDir, '.none'));
  if (resolution !== undefined) {
    Object.assign(config, { resolution, enable_bucket: true, min_bucket_reso: Math.min(resolution, config.min_bucket_reso), max_bucket_reso: Math.max(resolution * 2, config.max_bucket_reso) });
  }
  try {
    const ds = await loadDataset(config);
    return { dir, metadata, warnings: ds.warnings, items: ds.items };
  } catch (e) {
    if (!isUserError(e)) throw e;
    if (/cannot read folder/.test(e.message)) throw new HttpError(404, `dataset '${name}' not found`);
    throw new HttpError(422, e.message);
  }
}

type Items = Awaited<ReturnType<typeof readItems>>;

function listing(name: string, d: Items) {
  return {
    name,
    metadata: d.metadata,
    warnings: d.warnings,
    items: d.items.map((i) => ({
      key: i.key,
      caption: i.caption,
      caption_source: i.captionSource,
      width: i.width,
      height: i.height,
      repeats: i.repeats,
      bucket: bucketName(i.placement.bucket),
      resized: i.placement.resized,
      crop: i.placement.crop,
    })),
  };
}

export function register(api: Api, ctx: ServerContext): void {
  const settings = trainingSettings(ctx);
  const tag = 'training';
  // Edits of one dataset are applied one after the other: each reads the table the previous one wrote.
  const queues = new Map<string, Promise<unknown>>();
  const serial = <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    const run = (queues.get(name) ?? Promise.resolve()).catch(() => {}).then(fn);
    queues.set(name, run);
    return run;
  };

  api.get(
    '/sdapi/v1/train/datasets/:name/items',
    { summary: "A dataset's images as training reads them: caption and its source, size, and the bucket, resize and crop at ?resolution (bucketing on)", tag, query: [{ name: 'resolution', type: 'integer' }] },
    async (req) => {
      const name = String(req.params['name']);
      let reso: number | undefined;
      if (req.query['resolution'] !== undefined) {
        reso = Number(req.query['resolution']);
        if (!Number.isInteger(reso) || reso < 64 || reso > 4096 || reso % 64 !== 0) throw new HttpError(422, `resolution: expected a multiple of 64 from 64 to 4096, got ${String(req.query['resolution'])}`);
      }
      return listing(name, await readItems(settings, name, reso));
    },
  );

  api.post(
    '/sdapi/v1/train/datasets/:name/captions',
    {
      summary: "Save edited captions {edits: [{key, caption, before?}]} into the dataset's metadata table; 409 (nothing written) when a caption changed on disk since `before`",
      tag,
      body: { name: 'CaptionEditsRequest', schema: captionEditsRequest },
    },
    async (req) => {
      const name = String(req.params['name']);
      const { edits } = parseRequest(captionEditsRequest, req.body);
      return serial(name, async () => {
        const d = await readItems(settings, name);
        if (trainingRegistry(ctx).usesFolder(d.dir)) throw new HttpError(409, `dataset '${name}' is used by a queued or running training; edit its captions when that has ended`);
        const byKey = new Map(d.items.map((i) => [i.key, i]));
        const unknown = edits.filter((e) => !byKey.has(e.key));
        if (unknown.length) throw new HttpError(404, `dataset '${name}' has no image ${unknown.map((e) => `'${e.key}'`).join(', ')}`);
        const stale = edits.filter((e) => e.before !== undefined && e.before.trim() !== byKey.get(e.key)!.caption);
        if (stale.length) {
          throw new HttpError(409, `captions changed on the server since they were loaded: ${stale.map((e) => `${e.key} (now '${byKey.get(e.key)!.caption}')`).join(', ')}; reload and edit again`);
        }
        const changes = await writeCaptions(new Map(edits.map((e) => [e.key, e.caption])), { root: d.dir, target: 'metadata', table: d.metadata, mode: 'overwrite' });
        return { ...listing(name, await readItems(settings, name)), changed: changes.filter((c) => c.action !== 'kept').map((c) => c.key) };
      });
    },
  );

  api.get(
    '/sdapi/v1/train/datasets/:name/image',
    { summary: 'A thumbnail (JPEG) of one dataset image, longest side ?size', tag, query: [{ name: 'key', type: 'string' }, { name: 'size', type: 'integer', default: 256 }] },
    async (req, res) => {
      const dir = join(settings.datasetsDir, checkDatasetName(String(req.params['name'])));
      const key = String(req.query['key'] ?? '');
      const file = join(dir, key);
      if (!key || !isInside(dir, file) || key.split('/').some((c) => c.startsWith('.')) || !IMAGE_EXTENSIONS.has(extname(key).toLowerCase())) {
        throw new HttpError(422, `key: '${key}' is not an image of this dataset`);
      }
      const size = Math.min(1024, Math.max(16, Math.round(Number(req.query['size'] ?? 256)) || 256));
      const jpeg = await gated(file, () =>
        sharp(file, { limitInputPixels: 64 * 1024 * 1024 })
          .rotate()
          .resize(size, size, { fit: 'inside', withoutEnlargement: true })
          .flatten({ background: '#808080' })
          .jpeg({ quality: 82 })
          .toBuffer(),
      ).catch((e: Error) => {
          throw new HttpError(/missing|no such file/i.test(e.message) ? 404 : 422, `cannot read ${key}: ${e.message}`);
        });
      res.setHeader('Cache-Control', 'no-cache');
      res.type('image/jpeg').send(jpeg);
      return undefined;
    },
  );
}
