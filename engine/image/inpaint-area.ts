/**
 * A1111's "Inpaint area: Only masked" (`inpaint_full_res`): the masked part of the picture, grown by
 * `inpaint_full_res_padding` and then to the aspect of the requested size (`masking.get_crop_region_v2`,
 * `expand_crop_region`), is cut out and resized to that size ("resize and fill"), generated there, resized
 * back ("crop and resize") and pasted into the full picture through the mask (`apply_overlay`). So a small
 * masked area gets the model's whole resolution, and the rest of the picture keeps its size and pixels.
 * Resizes are A1111's `images.resize_image` (engine/image/resize-mode.ts).
 */
import { cropPixels, type Pixels, type Region } from './crop.ts';
import { resizeImage } from './resize-mode.ts';

/** The bounding box of the mask's non-zero pixels grown by `pad` and clipped to the picture; null for a blank mask. */
export function maskCropRegion(mask: Pixels, pad: number): Region | null {
  let [x1, y1, x2, y2] = [Infinity, Infinity, -1, -1];
  for (let y = 0; y < mask.height; y++)
    for (let x = 0; x < mask.width; x++)
      if (mask.data[(y * mask.width + x) * mask.channels]! > 0) {
        x1 = Math.min(x1, x);
        y1 = Math.min(y1, y);
        x2 = Math.max(x2, x + 1);
        y2 = Math.max(y2, y + 1);
      }
  if (x2 < 0) return null;
  return [Math.max(x1 - pad, 0), Math.max(y1 - pad, 0), Math.min(x2 + pad, mask.width), Math.min(y2 + pad, mask.height)];
}

/**
 * Widens [lo, hi) by `diff` (half on each side, the odd one after), then shifts it back inside [0, limit):
 * one axis of A1111's expand_crop_region.
 */
function growSpan(lo: number, hi: number, diff: number, limit: number): [number, number] {
  lo -= Math.floor(diff / 2);
  hi += diff - Math.floor(diff / 2);
  if (hi >= limit) {
    const d = hi - limit;
    hi -= d;
    lo -= d;
  }
  if (lo < 0) {
    hi -= lo;
    lo = 0;
  }
  if (hi >= limit) hi = limit;
  return [lo, hi];
}

/** Grows the region's shorter side (centred, kept inside the picture) until it has the processing size's aspect. */
export function expandCropRegion(region: Region, procW: number, procH: number, imgW: number, imgH: number): Region {
  const [x1, y1, x2, y2] = region;
  const ratioProc = procW / procH;
  if ((x2 - x1) / (y2 - y1) > ratioProc) {
    const [top, bottom] = growSpan(y1, y2, Math.trunc((x2 - x1) / ratioProc - (y2 - y1)), imgH);
    return [x1, top, x2, bottom];
  }
  const [left, right] = growSpan(x1, x2, Math.trunc((y2 - y1) * ratioProc - (x2 - x1)), imgW);
  return [left, y1, right, y2];
}

export interface InpaintArea {
  /** Where the generated picture goes back (already expanded to the processing aspect). */
  region: Region;
  /** The blurred full-size mask the result is composited through (A1111 `mask_for_overlay`). */
  overlay: Pixels;
}

/** The area to generate for this mask at this processing size, or null when the mask is blank (A1111 then runs plain img2img). */
export function inpaintArea(mask: Pixels, padding: number, width: number, height: number): InpaintArea | null {
  const r = maskCropRegion(mask, padding);
  if (!r) return null;
  return { region: expandCropRegion(r, width, height, mask.width, mask.height), overlay: mask };
}

/** The picture (or the mask) cut to the area and resized to the processing size, as the generation gets it. */
export function cutArea(img: Pixels, area: InpaintArea, width: number, height: number): Pixels {
  return resizeImage(2, cropPixels(img, area.region), width, height);
}

/** Pillow's rounded x / 255. */
const div255 = (v: number): number => {
  const t = v + 128;
  return ((t >> 8) + t) >> 8;
};

/** The generated area resized back into its region of `original`, seen only through the mask (A1111 `apply_overlay`). */
export function pasteArea(original: Pixels, generated: Pixels, area: InpaintArea): Pixels {
  const [x1, y1, x2, y2] = area.region;
  const back = resizeImage(1, generated, x2 - x1, y2 - y1);
  const out: Pixels = { ...original, data: original.data.slice() };
  const m = area.overlay;
  for (let y = Math.max(0, y1); y < Math.min(y2, out.height); y++)
    for (let x = Math.max(0, x1); x < Math.min(x2, out.width); x++) {
      const a = m.data[(y * m.width + x) * m.channels]!;
      if (a === 0) continue;
      const o = (y * out.width + x) * 3;
      const g = ((y - y1) * back.width + (x - x1)) * 3;
      for (let k = 0; k < 3; k++) out.data[o + k] = div255(back.data[g + k]! * a + original.data[o + k]! * (255 - a));
    }
  return out;
}
