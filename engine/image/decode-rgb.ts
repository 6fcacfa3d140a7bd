/**
 * Any image file (or encoded buffer) → interleaved 8-bit sRGB pixels, as Pillow's `Image.convert("RGB")` gives
 * them to the CLIP and WD14 preprocessors: alpha is dropped, not composited (unless a background is given),
 * grey is replicated to three channels, CMYK and 16-bit inputs end as 8-bit sRGB. Unlike Pillow, the EXIF
 * orientation is applied first, so a phone photo is captioned upright.
 */
import sharp from 'sharp';
import { gated } from './pixel-gate.ts';
import { UserError } from '../util/errors.ts';

export interface RgbImage {
  width: number;
  height: number;
  /** HWC, 3 bytes per pixel. */
  data: Uint8Array;
}

export async function decodeRgb(source: string | Buffer, opts: { background?: { r: number; g: number; b: number } } = {}): Promise<RgbImage> {
  const what = typeof source === 'string' ? source : 'the image data';
  try {
    let img = sharp(source, { failOn: 'error' }).autoOrient();
    if (opts.background) img = img.flatten({ background: opts.background });
    // 'srgb' is libvips' 8-bit sRGB interpretation: 16-bit inputs are scaled down, not clipped.
    const out = await gated(source, () => img.toColourspace('srgb').removeAlpha().raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true }));
    if (out.info.channels !== 3) throw new Error(`decoded to ${out.info.channels} channels, expected 3`);
    return { width: out.info.width, height: out.info.height, data: new Uint8Array(out.data.buffer, out.data.byteOffset, out.data.byteLength) };
  } catch (e) {
    const msg = e instanceof Error ? e.message.replace(/\s+/g, ' ').trim() : String(e);
    throw new UserError(`cannot read image ${what}: ${msg}`, { cause: e });
  }
}
