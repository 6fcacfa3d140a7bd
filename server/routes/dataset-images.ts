/**
 * Images added to a dataset over HTTP (the WebUI extension's "send to dataset", the browser UI): each image
 * checked to be a PNG, JPEG or WebP, written atomically, its caption written by engine/train/caption-table.ts
 * (the same code as caption editing and `lora-scripts label`), so an existing hand edit follows the mode.
 */
import { mkdir, stat, writeFile, rename } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import type { Request } from 'express';
import { writeCaptions } from '../../engine/train/caption-table.ts';
import type { ServerContext } from '../context.ts';
import { checkDatasetName } from '../datasets.ts';
import { HttpError } from '../errors.ts';
import { addImagesRequest } from '../requests/datasets.ts';
import { parseRequest } from '../schema.ts';
import { trainingSettings, type TrainingSettings } from '../train-settings.ts';
import { trainingRegistry } from '../training.ts';
import { safeUploadName } from '../uploads.ts';
import type { Api } from './api.ts';

const ADD_MAX_PIXELS = 64 * 1024 * 1024;

function datasetDir(settings: TrainingSettings, name: string): string {
  return join(settings.datasetsDir, checkDatasetName(name));
}

function refuseWhileTraining(ctx: ServerContext, dir: string, name: string): void {
  if (trainingRegistry(ctx).usesFolder(dir)) throw new HttpError(409, `dataset '${name}' is used by a queued or running training; edit it when that has ended`);
}

export function register(api: Api, ctx: ServerContext): void {
  const settings = trainingSettings(ctx);
  const tag = 'training';

  api.post(
    '/sdapi/v1/train/datasets/:name/images',
    {
      summary: "Add images to a dataset (created if absent): {images: [{image: base64 or data URL, file_name?, caption?}], mode: 'missing' (default) | 'overwrite' | 'append'}. An existing file of the same name is kept and only its caption follows the mode. Answers 201 with what was added.",
      tag,
      body: { name: 'AddImagesRequest', schema: addImagesRequest },
      example: { added: ['img-1.png'], kept: [], changes: [] },
    },
    async (req: Request, res) => {
      const name = String(req.params['name']);
      const dir = datasetDir(settings, name);
      const { images, mode } = parseRequest(addImagesRequest, req.body);
      const prepared: { file: string; bytes: Buffer; caption: string | null; exists: boolean }[] = [];
      for (const [i, item] of images.entries()) {
        const field = `images[${i}]`;
        const { image, file_name: fileName, caption } = item;
        const bytes = Buffer.from(image.startsWith('data:') ? image.slice(image.indexOf(',') + 1) : image, 'base64');
        const meta = await sharp(bytes, { limitInputPixels: ADD_MAX_PIXELS })
          .metadata()
          .catch((e: Error) => {
            throw new HttpError(422, `${field}.image: not a readable image (${e.message})`);
          });
        const ext = meta.format === 'jpeg' ? '.jpg' : meta.format === 'png' ? '.png' : meta.format === 'webp' ? '.webp' : null;
        if (!ext || !meta.width || !meta.height) throw new HttpError(422, `${field}.image: expected a PNG, JPEG or WebP image, got ${meta.format ?? 'unknown data'}`);
        let file: string;
        if (fileName === undefined || fileName === null) file = `img-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}${ext}`;
        else {
          file = safeUploadName(fileName);
          if (extname(file).toLowerCase() !== ext && !(ext === '.jpg' && extname(file).toLowerCase() === '.jpeg'))
            throw new HttpError(422, `${field}.file_name: '${file}' does not match the image's format (${meta.format}); use a ${ext} name`);
        }
        if (prepared.some((p) => p.file === file)) throw new HttpError(422, `${field}.file_name: '${file}' appears twice in this request`);
        const exists = Boolean((await stat(join(dir, file)).catch(() => null))?.isFile());
        prepared.push({ file, bytes, caption: caption ?? null, exists });
      }
      await mkdir(dir, { recursive: true });
      refuseWhileTraining(ctx, dir, name);
      for (const p of prepared) {
        if (p.exists) continue;
        const tmp = join(dir, `.${p.file}.tmp-${randomBytes(4).toString('hex')}`);
        await writeFile(tmp, p.bytes);
        await rename(tmp, join(dir, p.file));
      }
      const updates = new Map(prepared.filter((p) => p.caption !== null).map((p) => [p.file, p.caption!]));
      const changes = updates.size ? await writeCaptions(updates, { root: dir, target: 'metadata', mode }) : [];
      res.status(201);
      return { dataset: name, added: prepared.filter((p) => !p.exists).map((p) => p.file), kept: prepared.filter((p) => p.exists).map((p) => p.file), changes };
    },
  );
}
