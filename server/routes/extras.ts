/**
 * A1111's postprocessing API: POST /sdapi/v1/extra-single-image and /sdapi/v1/extra-batch-images (upscaling;
 * face restoration is not available and its fields are accepted and ignored), GET /sdapi/v1/upscalers.
 * The work is the engine's (engine/upscale/postprocess.ts); here are the request shapes, the queue and the
 * response: `{html_info, image}` / `{html_info, images}`, images encoded in `samples_format` like A1111's
 * `encode_pil_to_base64`, a PNG keeping the input's text chunks plus `postprocessing` (the infotext).
 */
import { isPng, readPngText, writePngText } from '../../engine/image/png-info.ts';
import type { RgbImage } from '../../engine/image/decode-rgb.ts';
import type { ExtrasUpscale } from '../../engine/upscale/postprocess.ts';
import { postprocessUpscaleOffThread } from '../../engine/upscale/postprocess-off-thread.ts';
import type { ServerContext } from '../context.ts';
import { ValidationError } from '../errors.ts';
import { checkSamplesFormat, decodeImageInput, encodeImage, toRaw } from '../images.ts';
import { extrasBatchRequest, extrasSingleRequest, type ExtrasRequest } from '../requests/extras.ts';
import { parseRequest } from '../schema.ts';
import type { Api } from './api.ts';

function upscaleRequest(req: ExtrasRequest): ExtrasUpscale {
  return {
    mode: req.resize_mode === 1 ? 1 : 0,
    by: req.upscaling_resize,
    toWidth: req.upscaling_resize_w,
    toHeight: req.upscaling_resize_h,
    crop: req.upscaling_crop,
    upscaler1: req.upscaler_1,
    upscaler2: req.upscaler_2,
    upscaler2Visibility: req.extras_upscaler_2_visibility,
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
async function run(ctx: ServerContext, req: ExtrasRequest, inputs: Decoded[]): Promise<{ images: string[]; html_info: string }> {
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
        const r = await postprocessUpscaleOffThread(ctx.upscalers, d.image, up, tiles);
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
    { summary: 'Upscale one image (Extras)', tag: 'extras', body: { name: 'ExtrasSingleImageRequest', schema: extrasSingleRequest }, example: { html_info: '<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>', image: '<base64>' } },
    async (req) => {
      const r = parseRequest(extrasSingleRequest, req.body);
      const image = r.image;
      if (image.trim() === '') throw new ValidationError([{ loc: ['body', 'image'], msg: 'an image is required', type: 'value_error.missing' }]);
      const out = await run(ctx, r, [await decode(ctx, image)]);
      return { html_info: out.html_info, image: out.images[0] };
    },
  );

  api.post(
    '/sdapi/v1/extra-batch-images',
    { summary: 'Upscale several images (Extras)', tag: 'extras', body: { name: 'ExtrasBatchImagesRequest', schema: extrasBatchRequest }, example: { html_info: '<p>…</p>', images: ['<base64>'] } },
    async (req) => {
      const r = parseRequest(extrasBatchRequest, req.body);
      const list = r.imageList;
      if (list.length > ctx.limits.maxImages) throw new ValidationError([{ loc: ['body', 'imageList'], msg: `${list.length} images, over the limit of ${ctx.limits.maxImages} (raise with --max-images)`, type: 'value_error.limit' }]);
      const inputs: Decoded[] = [];
      for (const item of list) inputs.push(await decode(ctx, item.data));
      const out = await run(ctx, r, inputs);
      return { html_info: out.html_info, images: out.images };
    },
  );
}
