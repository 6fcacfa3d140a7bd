/** A1111's picture resize modes (`modules/images.py` resize_image), with Pillow's Lanczos (engine/image/pil-resize.ts). */
import type { Pixels } from './crop.ts';
import { pilResize, type PilFilterName } from './pil-resize.ts';

const resized = (img: Pixels, w: number, h: number, filter: PilFilterName): Pixels =>
  img.width === w && img.height === h ? img : { width: w, height: h, channels: img.channels, data: pilResize(img.data, img.width, img.height, img.channels, w, h, filter) };

/** Pastes `src` at (dx, dy) onto `dst` (clipped). */
function paste(dst: Pixels, src: Pixels, dx: number, dy: number): void {
  const c = dst.channels;
  for (let y = Math.max(0, -dy); y < src.height && y + dy < dst.height; y++)
    for (let x = Math.max(0, -dx); x < src.width && x + dx < dst.width; x++)
      for (let k = 0; k < c; k++) dst.data[((y + dy) * dst.width + x + dx) * c + k] = src.data[(y * src.width + x) * c + k]!;
}

/**
 * A1111's `resize_image` without an upscaler: mode 0 (just resize: stretch), 1 (crop and resize: cover,
 * centred) and 2 (resize and fill: fit inside, centred, the bands left over filled by stretching the edge
 * rows or columns). img2img's resize_mode, only-masked inpainting and the hires fix's pixel upscale all
 * resize through this, with Lanczos unless the upscaler is Nearest.
 */
export function resizeImage(mode: 0 | 1 | 2, img: Pixels, width: number, height: number, filter: PilFilterName = 'lanczos'): Pixels {
  if (mode === 0) return resized(img, width, height, filter);
  const ratio = width / height;
  const srcRatio = img.width / img.height;
  const cover = mode === 1;
  const srcW = (cover ? ratio > srcRatio : ratio < srcRatio) ? width : Math.floor((img.width * height) / img.height);
  const srcH = (cover ? ratio <= srcRatio : ratio >= srcRatio) ? height : Math.floor((img.height * width) / img.width);
  const scaled = resized(img, srcW, srcH, filter);
  const out: Pixels = { width, height, channels: img.channels, data: new Uint8Array(width * height * img.channels) };
  const ox = Math.floor(width / 2) - Math.floor(srcW / 2);
  const oy = Math.floor(height / 2) - Math.floor(srcH / 2);
  paste(out, scaled, ox, oy);
  if (mode === 2) {
    const c = img.channels;
    if (ratio < srcRatio && oy > 0) {
      for (let y = 0; y < height; y++) {
        if (y >= oy && y < oy + srcH) continue;
        const from = y < oy ? 0 : srcH - 1;
        for (let x = 0; x < width; x++) for (let k = 0; k < c; k++) out.data[(y * width + x) * c + k] = scaled.data[(from * srcW + Math.min(srcW - 1, x)) * c + k]!;
      }
    } else if (ratio > srcRatio && ox > 0) {
      for (let y = 0; y < height; y++)
        for (let x = 0; x < width; x++) {
          if (x >= ox && x < ox + srcW) continue;
          const from = x < ox ? 0 : srcW - 1;
          for (let k = 0; k < c; k++) out.data[(y * width + x) * c + k] = scaled.data[(Math.min(srcH - 1, y) * srcW + from) * c + k]!;
        }
    }
  }
  return out;
}
