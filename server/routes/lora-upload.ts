/**
 * Adding LoRAs and reading them as the engine does: `POST /sdapi/v1/loras/upload` (multipart, one
 * `.safetensors` that must classify as a LoRA; staged in the LoRA folder and renamed into place) and
 * `GET /sdapi/v1/loras/{name}/details` (format, module count, ranks, alphas, SD family, hash), and
 * `GET /sdapi/v1/lora-previews` (the names of the LoRAs that have a preview image, so a page asks only for those).
 */
import { randomBytes } from 'node:crypto';
import { rename, rm, stat } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import multer from 'multer';
import { classify } from '../../engine/inspect/classify.ts';
import { describeLora } from '../../engine/lora/describe.ts';
import { SafetensorsFile } from '../../engine/safetensors/index.ts';
import { previewOf } from './lora-files.ts';
import type { ServerContext } from '../context.ts';
import { HttpError } from '../errors.ts';
import { multipartParseError } from '../multipart-error.ts';
import type { Api } from './api.ts';

const LORA_KINDS = new Set(['kohya-lora', 'diffusers-lora', 'peft-lora', 'lycoris']);
const FILE_NAME = /^[^/\\:*?"<>|\u0000-\u001f.][^/\\:*?"<>|\u0000-\u001f]{0,150}\.safetensors$/i;
const TRUE = new Set(['1', 'true', 'yes', 'on']);

function maxUploadBytes(): number {
  const mb = Number(process.env['LORA_SCRIPTS_LORA_UPLOAD_MAX_MB'] ?? 2048);
  return (Number.isFinite(mb) && mb > 0 ? mb : 2048) * 1024 * 1024;
}

function entry(ctx: ServerContext, name: unknown) {
  const e = typeof name === 'string' && name ? ctx.loras.resolve(name) : null;
  if (!e) throw new HttpError(404, `LoRA '${String(name ?? '')}' not found`);
  return e;
}

export function register(api: Api, ctx: ServerContext): void {
  const tag = 'models';
  const dir = ctx.layout.loraDir;

  api.post(
    '/sdapi/v1/loras/upload',
    { summary: 'Upload one LoRA (.safetensors, multipart); ?replace=true replaces a file of the same name. Answers 201 with its list entry.', tag, query: [{ name: 'replace', type: 'boolean', default: false }] },
    async (req, res) => {
      // Not a .safetensors name while it is checked, so a LoRA-folder scan meanwhile does not list it.
      const staged = join(dir, `.upload-${randomBytes(6).toString('hex')}.part`);
      let original = '';
      const upload = multer({
        storage: multer.diskStorage({ destination: dir, filename: (_r, file, cb) => ((original = file.originalname), cb(null, basename(staged))) }),
        limits: { files: 1, fileSize: maxUploadBytes(), fields: 4 },
        // Without it busboy cuts '../x.safetensors' to 'x.safetensors'; the name check below refuses it instead.
        preservePath: true,
        defParamCharset: 'utf8',
        fileFilter: (_r, file, cb) => {
          if (!FILE_NAME.test(file.originalname)) cb(new HttpError(422, `'${file.originalname}' is not accepted: send one .safetensors file with a plain name`));
          else cb(null, true);
        },
      }).single('file');
      try {
        await new Promise<void>((resolve, reject) =>
          upload(req, res, (e: unknown) => {
            const m = e as { code?: string } | undefined;
            if (m?.code === 'LIMIT_FILE_SIZE') reject(new HttpError(413, `the file is larger than ${maxUploadBytes() / 1024 / 1024} MiB (LORA_SCRIPTS_LORA_UPLOAD_MAX_MB)`));
            else if (m?.code) reject(new HttpError(422, `upload refused: ${(e as Error).message}; send one .safetensors file in the field 'file'`));
            else if (e) reject(multipartParseError(e) ?? e);
            else resolve();
          }),
        );
        if (!req.file) throw new HttpError(422, "no file: send one .safetensors file in the multipart field 'file'");
        let kind: string;
        try {
          const f = await SafetensorsFile.open(staged);
          try {
            kind = (await classify(f)).kind;
          } finally {
            await f.close();
          }
        } catch (e) {
          throw new HttpError(422, `${original} is not a readable safetensors file: ${(e as Error).message}`);
        }
        if (!LORA_KINDS.has(kind)) throw new HttpError(422, `${original} is not a LoRA (it reads as ${kind}); checkpoints go in the checkpoint folder`);
        const target = join(dir, original);
        const replace = TRUE.has(String(req.query['replace'] ?? '').toLowerCase());
        if (!replace && (await stat(target).catch(() => null))) throw new HttpError(409, `the LoRA folder already has ${original}; add ?replace=true to replace it`);
        await rename(staged, target);
        await ctx.loras.refresh();
        const e = ctx.loras.list().find((l) => l.path === target);
        res.status(201);
        return { name: e?.name ?? basename(original, extname(original)), alias: e?.alias, path: target };
      } finally {
        await rm(staged, { force: true });
      }
    },
  );

  api.get('/sdapi/v1/loras/:name/details', { summary: 'One LoRA as the engine reads it: format, module count, ranks, alphas, SD family, hash', tag }, async (req) => {
    const e = entry(ctx, req.params['name']);
    if (extname(e.path).toLowerCase() !== '.safetensors') throw new HttpError(422, `${basename(e.path)} is not a safetensors file; only those are read`);
    const d = await describeLora(e.path).catch((err: Error) => {
      throw new HttpError(422, `cannot read ${basename(e.path)}: ${err.message}`);
    });
    return { name: e.name, alias: e.alias, format: d.format, modules: d.modules, parts: d.parts, kinds: d.kinds, ranks: d.ranks, alphas: d.alphas, sd_version: d.sdVersion, hash: d.shortHash };
  });

  api.get('/sdapi/v1/lora-previews', { summary: 'Names of the LoRAs that have a preview image beside them', tag }, async () => {
    const out: string[] = [];
    for (const e of ctx.loras.list()) if (await previewOf(e.path)) out.push(e.name);
    return out;
  });
}
