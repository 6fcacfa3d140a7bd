/** Interleaved 8-bit pictures in and out of sharp (libvips), for the operations done there: blur, composite, encode. */
import sharp from 'sharp';
import type { Pixels } from './crop.ts';

export function rawSharp(img: Pixels): sharp.Sharp {
  return sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), { raw: { width: img.width, height: img.height, channels: img.channels as 1 | 2 | 3 | 4 } });
}

/** The pipeline's pixels with `channels` bands (libvips widens single-band input to sRGB on some operations). */
export async function finishRaw<C extends number>(s: sharp.Sharp, channels: C): Promise<Pixels & { channels: C }> {
  const { data, info } = await (channels === 1 ? s.extractChannel(0) : s).raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== channels) throw new Error(`expected ${channels} channels, got ${info.channels}`);
  return { width: info.width, height: info.height, channels, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}
