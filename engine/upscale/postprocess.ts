/**
 * The upscale step of A1111's postprocessing ("Extras", `scripts/postprocessing_upscale.py`): scale by a
 * factor, or to a size (the factor that covers both sides, then optionally centred on a black canvas of
 * exactly that size), with a second upscaler blended in at a visibility. Returns the image and the infotext
 * entries A1111 records, in its order.
 */
import type { RgbImage } from '../image/decode-rgb.ts';
import { pyStr } from '../image/png-info.ts';
import { UserError } from '../util/errors.ts';
import type { TileSettings, UpscalerLibrary } from './upscalers.ts';

export interface ExtrasUpscale {
  /** 0: by `by`; 1: to `toWidth`×`toHeight`. */
  mode: 0 | 1;
  by: number;
  toWidth: number;
  toHeight: number;
  crop: boolean;
  /** Upscaler names; null or "None" skips. */
  upscaler1: string | null;
  upscaler2: string | null;
  upscaler2Visibility: number;
}

/** Pillow's `Image.blend` for 8-bit pixels: a + α(b − a), truncated. */
export function blendRgb(a: RgbImage, b: RgbImage, alpha: number): RgbImage {
  if (a.width !== b.width || a.height !== b.height) throw new Error(`blend: ${a.width}×${a.height} and ${b.width}×${b.height} differ`);
  const data = new Uint8Array(a.data.length);
  for (let i = 0; i < data.length; i++) data[i] = Math.trunc(a.data[i]! + alpha * (b.data[i]! - a.data[i]!));
  return { width: a.width, height: a.height, data };
}

/** Pillow's paste of `img` centred on a black `w`×`h` canvas (offsets `w//2 - iw//2`, floor division). */
function centreOnCanvas(img: RgbImage, w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  const ox = Math.floor(w / 2) - Math.floor(img.width / 2);
  const oy = Math.floor(h / 2) - Math.floor(img.height / 2);
  for (let y = Math.max(0, -oy); y < img.height && y + oy < h; y++) {
    const x0 = Math.max(0, -ox);
    const x1 = Math.min(img.width, w - ox);
    if (x1 > x0) data.set(img.data.subarray((y * img.width + x0) * 3, (y * img.width + x1) * 3), ((y + oy) * w + ox + x0) * 3);
  }
  return { width: w, height: h, data };
}

export async function postprocessUpscale(
  lib: UpscalerLibrary,
  image: RgbImage,
  req: ExtrasUpscale,
  tiles: TileSettings,
): Promise<{ image: RgbImage; info: [string, string][] }> {
  const name = (n: string | null) => (n === null || n === 'None' ? null : n);
  const n1 = name(req.upscaler1);
  const n2 = name(req.upscaler2);
  for (const n of [n1, n2]) if (n !== null && !lib.find(n)) throw new UserError(`could not find upscaler named ${n}`, { status: 422 });
  const info = new Map<string, string>();
  if (n1 === null) return { image, info: [] };
  const upscale = async (n: string): Promise<RgbImage> => {
    let by = req.by;
    if (req.mode === 1) {
      by = Math.max(req.toWidth / image.width, req.toHeight / image.height);
      info.set('Postprocess upscale to', `${req.toWidth}x${req.toHeight}`);
    } else info.set('Postprocess upscale by', pyStr(by, true));
    let out = await lib.upscale(image, n, by, tiles);
    if (req.mode === 1 && req.crop) {
      out = centreOnCanvas(out, req.toWidth, req.toHeight);
      info.set('Postprocess crop to', `${out.width}x${out.height}`);
    }
    return out;
  };
  let out = await upscale(n1);
  info.set('Postprocess upscaler', n1);
  if (n2 !== null && req.upscaler2Visibility > 0) {
    out = blendRgb(out, await upscale(n2), req.upscaler2Visibility);
    info.set('Postprocess upscaler 2', n2);
  }
  return { image: out, info: [...info] };
}
