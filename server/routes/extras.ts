/**
 * A1111's postprocessing API: POST /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images (upscaling;
 * face restoration is not available and its fields are accepted and ignored), GET /sdapi/v1/upscalers.
 * The work is the engine's (engine/upscale/postprocess.ts); here are the request shapes, the queue and the
 * response: `{html_info, image}` / `{html_info, images}`, images encoded in `samples_format` like A1111's
 * `encode_pil_to_base64`, a PNG keeping the input's text chunks plus `postprocessing` (the infotext).
 */
import { isPng, readPngText, writePngText } from '../../engine/image/png-info.ts';
import type { RgbImage } from '../../engine/image/decode-rgb.ts';
import { postprocessUpscale, type ExtrasUpscale } from '../../engine/upscale/postprocess.ts';
import type { ServerContext } from '../context.ts';
import { ValidationError, type ValidationIssue } from '../errors.ts';
import { checkSamplesFormat, decodeImageInput, encodeImage, toRaw } from '../images.ts';
import { validateModel, type ModelSpec } from '../schema.ts';
import type { Api } from './api.ts';

/** A1111's `ExtrasBaseRequest` (modules/api/models.py); ranges are its pydantic `ge`/`le`. */
const extrasBase: ModelSpec = {
  resize_mode: { type: 'int', default: 0, description: '0: scale by upscaling_resize; 1: to upscaling_resize_w × upscaling_resize_h' },
  show_extras_results: { type: 'bool', default: true },
  gfpgan_visibility: { type: 'float', default: 0, description: 'accepted; face restoration is not available' },
  codeformer_visibility: { type: 'float', default: 0, description: 'accepted; face restoration is not available' },
  codeformer_weight: { type: 'float', default: 0 },
  upscaling_resize: { type: 'float', default: 2, description: '1 to 8' },
  upscaling_resize_w: { type: 'int', default: 512 },
  upscaling_resize_h: { type: 'int', default: 512 },
  upscaling_crop: { type: 'bool', default: true },
  upscaler_1: { type: 'str', default: 'None', description: 'a name from /sdapi/v1/upscalers' },
  upscaler_2: { type: 'str', default: 'None' },
  extras_upscaler_2_visibility: { type: 'float', default: 0, description: '0 to 1' },
  upscale_first: { type: 'bool', default: false },
};
const RANGES: Record<string, [number, number]> = {
  resize_mode: [0, 1],
  gfpgan_visibility: [0, 1],
  codeformer_visibility: [0, 1],
  codeformer_weight: [0, 1],
  upscaling_resize: [1, 8],
  upscaling_resize_w: [1, Infinity],
  upscaling_resize_h: [1, Infinity],
  extras_upscaler_2_visibility: [0, 1],
};
const singleModel: ModelSpec = { ...extrasBase, image: { type: 'str', default: '', description: 'base64 image' } };
const batchModel: ModelSpec = { ...extrasBase, imageList: { type: 'list', default: [], description: '[{data: base64, name}]' } };

type Extras = Record<string, unknown>;

function validate(spec: ModelSpec, body: unknown): Extras {
  const req = validateModel<Extras>(spec, body);
  const issues: ValidationIssue[] = [];
  for (const [k, [lo, hi]] of Object.entries(RANGES)) {
    const v = req[k] as number;
    if (v < lo) issues.push({ loc: ['body', k], msg: `ensure this value is greater than or equal to ${lo}`, type: 'value_error.number.not_ge' });
    if (v > hi) issues.push({ loc: ['body', k], msg: `ensure this value is less than or equal to ${hi}`, type: 'value_error.number.not_le' });
  }
  if (issues.length) throw new ValidationError(issues);
  return req;
}

function upscaleRequest(req: Extras): ExtrasUpscale {
  return {
    mode: req['resize_mode'] === 1 ? 1 : 0,
    by: req['upscaling_resize'] as number,
    toWidth: req['upscaling_resize_w'] as number,
    toHeight: req['upscaling_resize_h'] as number,
    crop: req['upscaling_crop'] as boolean,
    upscaler1: req['upscaler_1'] as string,
    upscaler2: req['upscaler_2'] as string,
    upscaler2Visibility: req['extras_upscaler_2_visibility'] as number,
  };
}

/** A1111's `plaintext_to_html`: escaped lines joined by `<br>`, in one paragraph. */
function plaintextToHtml(text: string): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
  return `<p>${text.split('\n').map(esc).join('<br>\n')}</p>`;
}

/** The infotext as A1111 joins `pp.info`: `k: v` (bare `k` when equal), JSON-quoted where it holds `,`, `:` or a newline. */
function infotext(info: [string, string][]): string {
  return info.map(([k, v]) => (k === v ? k : `${k}: ${/[,:\n]/.test(v) ? JSON.stringify(v) : v}`)).join(', ');
}

interface Decoded {
  image: RgbImage;
  /** PNG text chunks of the input, kept on a PNG output as A1111 keeps `image.info`. */
  text: Record<string, string>;
}

async function decode(ctx: ServerContext, data: string): Promise<Decoded> {
  const bytes = await decodeImageInput(data, ctx.imagePolicy());
  const raw = await toRaw(bytes, 3, ctx.imagePolicy().maxPixels);
  return { image: { width: raw.width, height: raw.height, data: raw.data }, text: isPng(bytes) ? readPngText(bytes) : {} };
}

/** Runs the upscale of every image on the queue (one device) and encodes the results. */
async function run(ctx: ServerContext, req: Extras, inputs: Decoded[]): Promise<{ images: string[]; html_info: string }> {
  const format = checkSamplesFormat(ctx.options.get('samples_format') ?? 'png');
  const tiles = { tile: Number(ctx.options.get('ESRGAN_tile') ?? 192), overlap: Number(ctx.options.get('ESRGAN_tile_overlap') ?? 8) };
  const up = upscaleRequest(req);
  const maxPixels = ctx.imagePolicy().maxPixels;
  for (const [i, d] of inputs.entries()) {
    const scale = up.mode === 1 ? Math.max(up.toWidth / d.image.width, up.toHeight / d.image.height) : up.by;
    const px = d.image.width * scale * d.image.height * scale;
    if (up.upscaler1 && up.upscaler1 !== 'None' && px > maxPixels) {
      throw new ValidationError([{ loc: ['body', up.mode === 1 ? 'upscaling_resize_w' : 'upscaling_resize'], msg: `image ${i + 1} would be upscaled to ${Math.round(px)} pixels, over the limit of ${maxPixels}`, type: 'value_error.limit' }]);
    }
  }
  if (up.upscaler1 && up.upscaler1 !== 'None' && !ctx.upscalers.find(up.upscaler1)) await ctx.upscalers.refresh();
  return ctx.queue.submit({
    kind: 'extras',
    run: async (job) => {
      const images: string[] = [];
      let text = '';
      for (const [i, d] of inputs.entries()) {
        job.progress({ step: i, total: inputs.length, jobNo: i, jobCount: inputs.length });
        const r = await postprocessUpscale(ctx.upscalers, d.image, up, tiles);
        text = infotext(r.info);
        const raw = { width: r.image.width, height: r.image.height, channels: 3 as const, data: r.image.data };
        let out: Buffer;
        if (format === 'png') {
          out = await encodeImage(raw, 'png', null);
          const chunks = ctx.options.get('enable_pnginfo') !== false ? { ...d.text, postprocessing: text } : d.text;
          if (Object.keys(chunks).length) out = writePngText(out, chunks);
        } else {
          out = await encodeImage(raw, format, d.text['parameters'] ?? null, { jpegQuality: Number(ctx.options.get('jpeg_quality') ?? 80), webpLossless: Boolean(ctx.options.get('webp_lossless')) });
        }
        images.push(out.toString('base64'));
      }
      return { images, html_info: plaintextToHtml(text) };
    },
  }).promise;
}

export function register(api: Api, ctx: ServerContext): void {
  api.get('/sdapi/v1/upscalers', { summary: 'Upscalers: None, Lanczos, Nearest and the ESRGAN-family models in models/ESRGAN', tag: 'lists' }, async () => {
    await ctx.upscalers.refresh();
    // A1111 reports the scaler's model_name (ESRGAN_4x for every ESRGAN file) and the file as model_path.
    return ctx.upscalers.list().map((u) => ({ name: u.name, model_name: u.kind === 'esrgan' ? 'ESRGAN_4x' : null, model_path: u.path, model_url: null, scale: u.scale }));
  });

  api.post(
    '/sdapi/v1/extra-single-image',
    { summary: 'Upscale one image (Extras)', tag: 'extras', body: { name: 'ExtrasSingleImageRequest', spec: singleModel }, example: { html_info: '<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>', image: '<base64>' } },
    async (req) => {
      const r = validate(singleModel, req.body);
      const image = r['image'] as string;
      if (image.trim() === '') throw new ValidationError([{ loc: ['body', 'image'], msg: 'an image is required', type: 'value_error.missing' }]);
      const out = await run(ctx, r, [await decode(ctx, image)]);
      return { html_info: out.html_info, image: out.images[0] };
    },
  );

  api.post(
    '/sdapi/v1/extra-batch-images',
    { summary: 'Upscale several images (Extras)', tag: 'extras', body: { name: 'ExtrasBatchImagesRequest', spec: batchModel }, example: { html_info: '<p>…</p>', images: ['<base64>'] } },
    async (req) => {
      const r = validate(batchModel, req.body);
      const list = r['imageList'] as unknown[];
      // A1111's FileData: both fields required, strings.
      const issues: ValidationIssue[] = [];
      list.forEach((item, i) => {
        const o = item && typeof item === 'object' && !Array.isArray(item) ? (item as Record<string, unknown>) : null;
        if (!o) return issues.push({ loc: ['body', 'imageList', i], msg: 'value is not a valid dict', type: 'type_error.dict' });
        for (const k of ['data', 'name']) {
          if (o[k] === undefined || o[k] === null) issues.push({ loc: ['body', 'imageList', i, k], msg: 'field required', type: 'value_error.missing' });
          else if (typeof o[k] !== 'string') issues.push({ loc: ['body', 'imageList', i, k], msg: 'str type expected', type: 'type_error.str' });
        }
      });
      if (issues.length) throw new ValidationError(issues);
      if (list.length > ctx.limits.maxImages) throw new ValidationError([{ loc: ['body', 'imageList'], msg: `${list.length} images, over the limit of ${ctx.limits.maxImages} (raise with --max-images)`, type: 'value_error.limit' }]);
      const inputs: Decoded[] = [];
      for (const item of list) inputs.push(await decode(ctx, (item as { data: string }).data));
      const out = await run(ctx, r, inputs);
      return { html_info: out.html_info, images: out.images };
    },
  );
}
