/** A1111's `image_grid` with its default `n_rows` -1: rows = round(√n), as many columns as fit the rest, black background. */
import sharp from 'sharp';
import type { Pixels } from './crop.ts';
import { finishRaw } from './sharp-raw.ts';

export function gridShape(n: number): { rows: number; cols: number } {
  const rows = Math.min(n, Math.max(1, Math.round(Math.sqrt(n))));
  return { rows, cols: Math.ceil(n / rows) };
}

/** The pictures (all the first one's size, RGB) laid out row by row. */
export async function imageGrid(images: readonly Pixels[]): Promise<Pixels & { channels: 3 }> {
  const first = images[0];
  if (!first) throw new Error('a grid needs at least one picture');
  const { rows, cols } = gridShape(images.length);
  const { width: w, height: h } = first;
  const canvas = sharp({ create: { width: cols * w, height: rows * h, channels: 3, background: { r: 0, g: 0, b: 0 } } });
  const layers = images.map((im, i) => ({
    input: Buffer.from(im.data.buffer, im.data.byteOffset, im.data.byteLength),
    raw: { width: im.width, height: im.height, channels: im.channels as 1 | 2 | 3 | 4 },
    left: (i % cols) * w,
    top: Math.floor(i / cols) * h,
  }));
  // Compositing adds an alpha band; flatten in a second pass (sharp orders operations itself within one).
  const composed = await canvas.composite(layers).png().toBuffer();
  return finishRaw(sharp(composed).removeAlpha(), 3);
}
