/** Interleaved 8-bit pictures and Pillow-style box crops, shared by inpainting and CLIP preprocessing. */

export interface Pixels {
  width: number;
  height: number;
  /** 1 (mask) or 3 (RGB), interleaved. */
  channels: number;
  data: Uint8Array;
}

/** [x1, y1, x2, y2), as Pillow boxes. */
export type Region = [number, number, number, number];

/** Pillow's crop (outside the picture is black). */
export function cropPixels(img: Pixels, [x1, y1, x2, y2]: Region): Pixels {
  const w = x2 - x1;
  const h = y2 - y1;
  const c = img.channels;
  const data = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    const sy = y1 + y;
    if (sy < 0 || sy >= img.height) continue;
    for (let x = 0; x < w; x++) {
      const sx = x1 + x;
      if (sx < 0 || sx >= img.width) continue;
      for (let k = 0; k < c; k++) data[(y * w + x) * c + k] = img.data[(sy * img.width + sx) * c + k]!;
    }
  }
  return { width: w, height: h, channels: c, data };
}
