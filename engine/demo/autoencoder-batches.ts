/**
 * The autoencoder's training batches: seeded square crops of toy-world pictures, each with a per-pixel loss
 * weight that counts the shapes' pixels more than the background's. A flat background covers 90–98% of a
 * toy-world picture, so plain per-pixel MSE is mostly background and a codec trained on it learns the
 * background's colour long before the shape's.
 */
import { toChw } from '../image/load.ts';
import { seededRandom } from '../train/seeded-random.ts';
import { COLOURS, type Scene } from './toy-world.ts';

export interface CodecPicture {
  scene: Scene;
  /** RGB bytes [size, size, 3]. */
  rgb: Uint8Array;
}

export interface AutoencoderBatch {
  /** [batch, 3, crop, crop] in [-1, 1]. */
  images: Float32Array;
  /** [batch, 1, crop, crop]: 1 on the background, 1 + `shapeWeight` elsewhere. */
  weights: Float32Array;
}

/** Batch `i` of `batch` crops of side `crop` from `pictures` of side `size`, drawn from (seed, i) alone. */
export function autoencoderBatch(pictures: readonly CodecPicture[], size: number, crop: number, batch: number, shapeWeight: number, seed: number, i: number): AutoencoderBatch {
  const random = seededRandom(seed, 'vae-batch', i);
  const images = new Float32Array(batch * 3 * crop * crop);
  const weights = new Float32Array(batch * crop * crop);
  const c = new Uint8Array(crop * crop * 3);
  for (let b = 0; b < batch; b++) {
    const p = pictures[Math.min(pictures.length - 1, Math.floor(random() * pictures.length))]!;
    const ox = Math.floor(random() * (size - crop + 1));
    const oy = Math.floor(random() * (size - crop + 1));
    for (let y = 0; y < crop; y++) c.set(p.rgb.subarray(((oy + y) * size + ox) * 3, ((oy + y) * size + ox + crop) * 3), y * crop * 3);
    images.set(toChw(c, crop, crop, false), b * 3 * crop * crop);
    const [r, g, bl] = COLOURS[p.scene.background];
    for (let q = 0; q < crop * crop; q++) {
      const background = c[q * 3] === r && c[q * 3 + 1] === g && c[q * 3 + 2] === bl;
      weights[b * crop * crop + q] = background ? 1 : 1 + shapeWeight;
    }
  }
  return { images, weights };
}
