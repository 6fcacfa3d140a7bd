/** An img2img mask as A1111 prepares it: inverted on request (`inpainting_mask_invert`), then blurred (`mask_blur_x/y`). */
import type { Pixels } from './crop.ts';
import { finishRaw, rawSharp } from './sharp-raw.ts';

/**
 * Inverts and blurs a one-channel mask. A1111 blurs each axis with its own Gaussian (cv2, σ = mask_blur_x,
 * mask_blur_y); libvips blurs both axes with one σ, so the larger is used, and σ below 0.3 (a kernel of one
 * pixel) leaves the mask sharp.
 */
export async function prepareMask(mask: Pixels, invert: boolean, blurX: number, blurY: number): Promise<Pixels & { channels: 1 }> {
  let s = rawSharp(mask);
  if (invert) s = s.negate();
  const sigma = Math.max(blurX, blurY);
  if (sigma >= 0.3) s = s.blur(sigma);
  return finishRaw(s, 1);
}
