/**
 * Tiled upscaling as A1111 does it (`images.split_grid` / `combine_grid` around `upscale_with_model`): tiles of
 * a fixed size spread evenly with at least `overlap` pixels shared, the last row/column flush with the far
 * edge (an image smaller than a tile is cut with black padding on the top/left, as Pillow's crop gives),
 * each tile upscaled alone, then joined with linear ramps across the overlaps. The ramps and blends follow
 * Pillow's `paste` with an 8-bit mask (its rounded division by 255), so results match A1111's to the level.
 */
import type { RgbImage } from '../image/decode-rgb.ts';
import { UserError } from '../util/errors.ts';

export interface Tile {
  x: number;
  y: number;
  image: RgbImage;
}

export interface TileGrid {
  tileW: number;
  tileH: number;
  imageW: number;
  imageH: number;
  overlap: number;
  /** Row by row; every tile is tileW × tileH. */
  rows: Tile[][];
}

/** Pillow's `crop`: pixels outside the image are black. */
export function cropRgb(img: RgbImage, x: number, y: number, w: number, h: number): RgbImage {
  const out = new Uint8Array(w * h * 3);
  for (let r = 0; r < h; r++) {
    const sy = y + r;
    if (sy < 0 || sy >= img.height) continue;
    const x0 = Math.max(0, -x);
    const x1 = Math.min(w, img.width - x);
    if (x1 > x0) out.set(img.data.subarray((sy * img.width + x + x0) * 3, (sy * img.width + x + x1) * 3), (r * w + x0) * 3);
  }
  return { width: w, height: h, data: out };
}

/** Pillow's rounded `x / 255` for x in [0, 255²]. */
const div255 = (v: number): number => {
  const t = v + 128;
  return ((t >> 8) + t) >> 8;
};

/**
 * Pastes `src` at (dx, dy) onto `dst`, clipped to `dst`. With `mask(sx, sy)` (0–255) each pixel is blended
 * as Pillow's paste with an "L" mask does; without it the pixels are copied.
 */
function paste(dst: RgbImage, src: RgbImage, dx: number, dy: number, mask?: (sx: number, sy: number) => number): void {
  for (let sy = Math.max(0, -dy); sy < src.height && sy + dy < dst.height; sy++) {
    for (let sx = Math.max(0, -dx); sx < src.width && sx + dx < dst.width; sx++) {
      const si = (sy * src.width + sx) * 3;
      const di = ((sy + dy) * dst.width + sx + dx) * 3;
      const m = mask ? mask(sx, sy) : 255;
      for (let c = 0; c < 3; c++) dst.data[di + c] = m === 255 ? src.data[si + c]! : div255(dst.data[di + c]! * (255 - m) + src.data[si + c]! * m);
    }
  }
}

export function splitGrid(img: RgbImage, tileW: number, tileH: number, overlap: number): TileGrid {
  if (!(overlap >= 0 && overlap < tileW && overlap < tileH)) throw new UserError(`tile overlap ${overlap} must be at least 0 and smaller than the tile (${tileW}×${tileH})`);
  const { width: w, height: h } = img;
  const cols = Math.ceil((w - overlap) / (tileW - overlap));
  const rowsN = Math.ceil((h - overlap) / (tileH - overlap));
  const dx = cols > 1 ? (w - tileW) / (cols - 1) : 0;
  const dy = rowsN > 1 ? (h - tileH) / (rowsN - 1) : 0;
  const rows: Tile[][] = [];
  for (let r = 0; r < rowsN; r++) {
    let y = Math.trunc(r * dy);
    if (y + tileH >= h) y = h - tileH;
    const row: Tile[] = [];
    for (let c = 0; c < cols; c++) {
      let x = Math.trunc(c * dx);
      if (x + tileW >= w) x = w - tileW;
      row.push({ x, y, image: cropRgb(img, x, y, tileW, tileH) });
    }
    rows.push(row);
  }
  return { tileW, tileH, imageW: w, imageH: h, overlap, rows };
}

/** A1111's 8-bit ramp over `overlap` pixels: trunc(i · 255 / overlap) in float32. */
function ramp(overlap: number): Uint8Array {
  return Uint8Array.from({ length: overlap }, (_, i) => Math.trunc(Math.fround(Math.fround(i * 255) / overlap)));
}

export function combineGrid(grid: TileGrid): RgbImage {
  const { overlap: ov, imageW, imageH, tileH } = grid;
  const r = ramp(ov);
  const out: RgbImage = { width: imageW, height: imageH, data: new Uint8Array(imageW * imageH * 3) };
  for (const row of grid.rows) {
    const y = row[0]!.y;
    const line: RgbImage = { width: imageW, height: tileH, data: new Uint8Array(imageW * tileH * 3) };
    for (const t of row) {
      if (t.x === 0) {
        paste(line, t.image, 0, 0);
        continue;
      }
      paste(line, cropRgb(t.image, 0, 0, ov, tileH), t.x, 0, (sx) => r[sx]!);
      paste(line, cropRgb(t.image, ov, 0, t.image.width - ov, tileH), t.x + ov, 0);
    }
    if (y === 0) {
      paste(out, line, 0, 0);
      continue;
    }
    paste(out, cropRgb(line, 0, 0, imageW, ov), 0, y, (_sx, sy) => r[sy]!);
    paste(out, cropRgb(line, 0, ov, imageW, tileH - ov), 0, y + ov);
  }
  return out;
}

/** Upscales every tile with `f` (all by the same factor) and scales the grid to match, as `upscale_with_model`. */
export async function upscaleTiles(grid: TileGrid, f: (tile: RgbImage) => Promise<RgbImage>): Promise<TileGrid> {
  let s = 0;
  const rows: Tile[][] = [];
  for (const row of grid.rows) {
    const out: Tile[] = [];
    for (const t of row) {
      const image = await f(t.image);
      s = Math.trunc(image.width / t.image.width);
      out.push({ x: t.x * s, y: t.y * s, image });
    }
    rows.push(out);
  }
  return { tileW: grid.tileW * s, tileH: grid.tileH * s, imageW: grid.imageW * s, imageH: grid.imageH * s, overlap: grid.overlap * s, rows };
}
