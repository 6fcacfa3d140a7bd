/**
 * Pictures as A1111 saves them, with the infotext where it puts it: PNG in a `parameters` text chunk,
 * JPEG and WebP in the EXIF UserComment (engine/image/exif.ts). The CLI, the server and training samples all
 * encode through this, so the same pixels and infotext give the same bytes.
 */
import type { Pixels } from './crop.ts';
import { jpegWithUserComment, webpWithUserComment } from './exif.ts';
import { writePngText } from './png-info.ts';
import { rawSharp } from './sharp-raw.ts';

export type SamplesFormat = 'png' | 'jpg' | 'jpeg' | 'webp';

export interface EncodeOptions {
  /** A1111 option jpeg_quality (JPEG and lossy WebP), default 80. */
  jpegQuality?: number;
  /** A1111 option webp_lossless. */
  webpLossless?: boolean;
}

export async function encodeImage(img: Pixels, format: SamplesFormat, infotext: string | null, opts: EncodeOptions = {}): Promise<Buffer> {
  const s = rawSharp(img);
  if (format === 'png') {
    const png = await s.png().toBuffer();
    return infotext ? writePngText(png, { parameters: infotext }) : png;
  }
  if (format === 'webp') {
    const webp = await s.webp({ lossless: opts.webpLossless ?? false, quality: opts.jpegQuality ?? 80 }).toBuffer();
    return infotext ? webpWithUserComment(webp, infotext, img.width, img.height) : webp;
  }
  const jpeg = await s.jpeg({ quality: opts.jpegQuality ?? 80 }).toBuffer();
  return infotext ? jpegWithUserComment(jpeg, infotext) : jpeg;
}
