/**
 * Image file → float32 CHW RGB in [-1, 1], the VAE's input. EXIF orientation is applied first (a phone photo
 * trains upright), transparency is flattened onto white, and any colour space (grey, CMYK, 16-bit) ends as 8-bit sRGB.
 */
import sharp from 'sharp';
import { gated, headerPixels } from './pixel-gate.ts';
import { UserError } from '../util/errors.ts';

export interface ImageSize {
  width: number;
  height: number;
}

export interface ImageTensor {
  width: number;
  height: number;
  /** [3, height, width], values in [-1, 1]. */
  data: Float32Array;
}

/** Resize to `resized` (lanczos3), then keep the `crop` window; both in pixels of the oriented image. */
export interface ImageTransform {
  resized: ImageSize;
  crop: { left: number; top: number; width: number; height: number };
  flip?: boolean;
}

export const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp']);

function unreadable(path: string, e: unknown): UserError {
  const msg = e instanceof Error ? e.message.replace(/\s+/g, ' ').trim() : String(e);
  return new UserError(`cannot read image ${path}: ${msg}`, { cause: e });
}

/** Width and height as displayed, i.e. after EXIF orientation; reads only the header. */
export async function probeImage(path: string): Promise<ImageSize & { format: string }> {
  try {
    const m = await sharp(path, { failOn: 'error' }).metadata();
    const { width, height } = m.autoOrient ?? m;
    if (!width || !height) throw new Error('no image size in the file');
    return { width, height, format: m.format ?? 'unknown' };
  } catch (e) {
    throw unreadable(path, e);
  }
}

/** Decodes the whole file so that truncated or corrupt data is found before training, not in the middle of it. */
export async function verifyImage(path: string): Promise<void> {
  try {
    await gated(path, () => sharp(path, { failOn: 'error' }).raw().toBuffer());
  } catch (e) {
    throw unreadable(path, e);
  }
}

/** Loads the image, optionally resized, cropped and flipped, as float32 CHW in [-1, 1]. */
export async function loadImageTensor(path: string, transform?: ImageTransform): Promise<ImageTensor> {
  let pixels: Buffer;
  let width: number;
  let height: number;
  try {
    let img = sharp(path, { failOn: 'error' })
      .autoOrient()
      .flatten({ background: { r: 255, g: 255, b: 255 } })
      .toColourspace('srgb');
    if (transform) {
      img = img
        .resize(transform.resized.width, transform.resized.height, { fit: 'fill', kernel: 'lanczos3' })
        .extract(transform.crop);
    }
    const resized = transform ? transform.resized.width * transform.resized.height : 0;
    const out = await gated((await headerPixels(path)) + resized, () => img.removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
    if (out.info.channels !== 3) throw new Error(`decoded to ${out.info.channels} channels, expected 3`);
    pixels = out.data;
    width = out.info.width;
    height = out.info.height;
  } catch (e) {
    throw unreadable(path, e);
  }
  return { width, height, data: toChw(pixels, width, height, transform?.flip ?? false) };
}

/**
 * HWC uint8 → CHW float32 RGB in [-1, 1], mirrored left-right when `flip`. `channels` 1 (grey, repeated),
 * 3 (RGB) or 4 (RGBA, alpha dropped).
 */
export function toChw(hwc: Uint8Array, width: number, height: number, flip: boolean, channels = 3): Float32Array {
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  const g = channels === 1 ? 0 : 1;
  const b = channels === 1 ? 0 : 2;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const src = (y * width + (flip ? width - 1 - x : x)) * channels;
      const dst = y * width + x;
      out[dst] = hwc[src]! / 127.5 - 1;
      out[plane + dst] = hwc[src + g]! / 127.5 - 1;
      out[2 * plane + dst] = hwc[src + b]! / 127.5 - 1;
    }
  }
  return out;
}
