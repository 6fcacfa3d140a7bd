/**
 * transformers' `CLIPImageProcessor`, step by step, from a model's `preprocessor_config.json`:
 * to RGB (alpha dropped), resize the shortest edge to `size.shortest_edge` (long edge truncated, Pillow's
 * filter `resample`), centre crop to `crop_size`, rescale by `rescale_factor`, normalise with `image_mean` /
 * `image_std`; CHW float32. Decoding (EXIF rotation, grey, CMYK, 16-bit) is engine/image/decode-rgb.ts,
 * the resize engine/image/pil-resize.ts.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { decodeRgb, type RgbImage } from '../image/decode-rgb.ts';
import { cropPixels } from '../image/crop.ts';
import { pilFilterName, pilResize, type PilFilterName } from '../image/pil-resize.ts';
import { UserError } from '../util/errors.ts';

export interface ClipPreprocessConfig {
  /** Shortest edge after resizing, or an exact size. */
  resize: { shortestEdge: number } | { height: number; width: number } | null;
  crop: { height: number; width: number } | null;
  filter: PilFilterName;
  rescale: number | null;
  mean: [number, number, number] | null;
  std: [number, number, number] | null;
}

/** OpenAI CLIP's normalisation (also OpenCLIP's default for the LAION models). */
export const OPENAI_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

/** What CLIPImageProcessor does for a model with square inputs of `size` pixels and no config file (OpenCLIP files). */
export function defaultClipPreprocess(size: number): ClipPreprocessConfig {
  return { resize: { shortestEdge: size }, crop: { height: size, width: size }, filter: 'bicubic', rescale: 1 / 255, mean: OPENAI_MEAN, std: OPENAI_STD };
}

const sizeSpec = z.union([
  z.number().int().positive(),
  z.object({ shortest_edge: z.number().int().positive() }),
  z.object({ height: z.number().int().positive(), width: z.number().int().positive() }),
]);
const triple = z.union([z.number(), z.tuple([z.number(), z.number(), z.number()])]);
const configSchema = z.object({
  do_resize: z.boolean().default(true),
  size: sizeSpec.optional(),
  resample: z.number().int().default(3),
  do_center_crop: z.boolean().default(true),
  crop_size: sizeSpec.optional(),
  do_rescale: z.boolean().default(true),
  rescale_factor: z.number().default(1 / 255),
  do_normalize: z.boolean().default(true),
  image_mean: triple.default(OPENAI_MEAN),
  image_std: triple.default(OPENAI_STD),
});

const asTriple = (v: number | [number, number, number]): [number, number, number] => (typeof v === 'number' ? [v, v, v] : v);

/** Reads `preprocessor_config.json`; `fallbackSize` (the model's image size) fills a missing `size`/`crop_size`. */
export async function readClipPreprocessConfig(path: string, fallbackSize: number): Promise<ClipPreprocessConfig> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const r = configSchema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new UserError(`${path}: ${i.path.join('.') || 'file'}: ${i.message}`);
  }
  const c = r.data;
  const size = c.size ?? { shortest_edge: fallbackSize };
  const crop = c.crop_size ?? fallbackSize;
  let filter: PilFilterName;
  try {
    filter = pilFilterName(c.resample);
  } catch (e) {
    throw new UserError(`${path}: resample: ${(e as Error).message}`);
  }
  return {
    resize: !c.do_resize
      ? null
      : typeof size === 'number'
        ? { shortestEdge: size }
        : 'shortest_edge' in size
          ? { shortestEdge: size.shortest_edge }
          : { height: size.height, width: size.width },
    crop: !c.do_center_crop ? null : typeof crop === 'number' ? { height: crop, width: crop } : 'shortest_edge' in crop ? { height: crop.shortest_edge, width: crop.shortest_edge } : crop,
    filter,
    rescale: c.do_rescale ? c.rescale_factor : null,
    mean: c.do_normalize ? asTriple(c.image_mean) : null,
    std: c.do_normalize ? asTriple(c.image_std) : null,
  };
}

/** transformers' `get_resize_output_image_size` for `shortest_edge`: the long side is truncated, not rounded. */
export function shortestEdgeSize(width: number, height: number, edge: number): { width: number; height: number } {
  if (width <= height) return { width: edge, height: Math.trunc((edge * height) / width) };
  return { width: Math.trunc((edge * width) / height), height: edge };
}

/** The resize step alone (uint8 HWC), for checking against Pillow. */
export function resizeForClip(img: RgbImage, cfg: ClipPreprocessConfig): RgbImage {
  if (!cfg.resize) return img;
  const size = 'shortestEdge' in cfg.resize ? shortestEdgeSize(img.width, img.height, cfg.resize.shortestEdge) : cfg.resize;
  if (size.width === img.width && size.height === img.height) return img;
  return { ...size, data: pilResize(img.data, img.width, img.height, 3, size.width, size.height, cfg.filter) };
}

/** Centre crop as transformers does it (top = (H - h) // 2); a side shorter than the crop is padded with zeros. */
function centerCrop(img: RgbImage, h: number, w: number): RgbImage {
  const top = Math.floor((img.height - h) / 2);
  const left = Math.floor((img.width - w) / 2);
  const { data } = cropPixels({ ...img, channels: 3 }, [left, top, left + w, top + h]);
  return { width: w, height: h, data };
}

/** RGB pixels → `pixel_values` [3, H, W]. */
export function clipPixelValues(img: RgbImage, cfg: ClipPreprocessConfig): { data: Float32Array; height: number; width: number } {
  let x = resizeForClip(img, cfg);
  if (cfg.crop) x = centerCrop(x, cfg.crop.height, cfg.crop.width);
  const plane = x.width * x.height;
  const out = new Float32Array(3 * plane);
  const scale = cfg.rescale ?? 1;
  for (let c = 0; c < 3; c++) {
    const m = cfg.mean?.[c] ?? 0;
    const s = cfg.std?.[c] ?? 1;
    for (let i = 0; i < plane; i++) out[c * plane + i] = (x.data[i * 3 + c]! * scale - m) / s;
  }
  return { data: out, height: x.height, width: x.width };
}

/** An image file or encoded buffer → `pixel_values` [3, H, W]. */
export async function loadClipPixels(source: string | Buffer, cfg: ClipPreprocessConfig): Promise<Float32Array> {
  return clipPixelValues(await decodeRgb(source), cfg).data;
}
