/**
 * Aspect-ratio buckets as kohya sd-scripts defines them (model_util.make_bucket_resolutions and BucketManager):
 * sides are multiples of `step` between min and max, area at most resolution², plus the square; each image goes
 * to the bucket closest in aspect ratio, is scaled to cover it, then cropped (center, or random per epoch).
 */
import { seededRandom, shuffled, type Random } from './seeded-random.ts';

export interface Size {
  width: number;
  height: number;
}

export interface Crop {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** How one image becomes one bucket-sized picture: resize to `resized`, then cut out `crop`. */
export interface ImagePlacement {
  bucket: Size;
  resized: Size;
  crop: Crop;
}

export interface BucketOptions {
  resolution: number;
  minReso: number;
  maxReso: number;
  step: number;
}

/** Every bucket for a target area, sorted by width then height. */
export function makeBuckets({ resolution, minReso, maxReso, step }: BucketOptions): Size[] {
  const area = resolution * resolution;
  const seen = new Map<string, Size>();
  const add = (width: number, height: number) => seen.set(`${width}x${height}`, { width, height });
  const square = Math.floor(Math.sqrt(area) / step) * step;
  add(square, square);
  for (let w = minReso; w <= maxReso; w += step) {
    const h = Math.min(maxReso, Math.floor(Math.floor(area / w) / step) * step);
    if (h >= minReso) {
      add(w, h);
      add(h, w);
    }
  }
  return [...seen.values()].sort((a, b) => a.width - b.width || a.height - b.height);
}

/** The bucket whose aspect ratio is closest to the image's; ties go to the first in bucket order, as kohya's argmin. */
export function selectBucket(image: Size, buckets: readonly Size[]): Size {
  if (buckets.length === 0) throw new Error('no buckets');
  const ar = image.width / image.height;
  let best = buckets[0]!;
  let bestErr = Infinity;
  for (const b of buckets) {
    const err = Math.abs(b.width / b.height - ar);
    if (err < bestErr) {
      bestErr = err;
      best = b;
    }
  }
  return best;
}

/**
 * Size after scaling the image so it covers the bucket: the side that is relatively shorter matches the bucket
 * exactly and the other is rounded half up, as kohya does, never below the bucket.
 */
export function coverSize(image: Size, bucket: Size): Size {
  const scale =
    image.width / image.height > bucket.width / bucket.height ? bucket.height / image.height : bucket.width / image.width;
  return {
    width: Math.max(bucket.width, Math.floor(image.width * scale + 0.5)),
    height: Math.max(bucket.height, Math.floor(image.height * scale + 0.5)),
  };
}

/** Where the bucket-sized window sits in the resized image: centered, or at a random offset when `random` is given. */
export function cropFor(resized: Size, bucket: Size, random?: Random): Crop {
  const spareX = resized.width - bucket.width;
  const spareY = resized.height - bucket.height;
  const left = random ? Math.floor(random() * (spareX + 1)) : Math.floor(spareX / 2);
  const top = random ? Math.floor(random() * (spareY + 1)) : Math.floor(spareY / 2);
  return { left, top, width: bucket.width, height: bucket.height };
}

/**
 * The crop SDXL is conditioned on for one image, as kohya records it (`BucketManager.get_crop_ltrb`, after
 * Stability AI's preprocessing): where the image would sit if scaled to fit inside the bucket, as
 * [top, left] in bucket pixels. It does not follow the actual (cover) crop, random or not.
 */
export function sdxlCropTopLeft(bucket: Size, original: Size): [number, number] {
  const bucketAr = bucket.width / bucket.height;
  const imageAr = original.width / original.height;
  const [w, h] = bucketAr > imageAr ? [bucket.height * imageAr, bucket.height] : [bucket.width, bucket.width / imageAr];
  return [Math.floor((bucket.height - h) / 2), Math.floor((bucket.width - w) / 2)];
}

/** Places an image in its bucket with a center crop. */
export function placeImage(image: Size, buckets: readonly Size[]): ImagePlacement {
  const bucket = selectBucket(image, buckets);
  const resized = coverSize(image, bucket);
  return { bucket, resized, crop: cropFor(resized, bucket) };
}

/** The crop a random-crop run uses for one image in one epoch; the same seed, key and epoch give the same crop. */
export function randomCrop(placement: ImagePlacement, seed: number, key: string, epoch: number): Crop {
  return cropFor(placement.resized, placement.bucket, seededRandom(seed, 'crop', key, epoch));
}

export const bucketName = (b: Size) => `${b.width}x${b.height}`;

/**
 * One epoch's micro-batches: each image index appears `repeats[i]` times, batches never mix buckets, the order
 * within buckets and of the batches is shuffled deterministically from seed and epoch. The last batch of a bucket
 * may be smaller than batchSize.
 */
export function epochBatches(
  placements: readonly ImagePlacement[],
  repeats: readonly number[],
  batchSize: number,
  seed: number,
  epoch: number,
): number[][] {
  const byBucket = new Map<string, number[]>();
  placements.forEach((p, i) => {
    const key = bucketName(p.bucket);
    let list = byBucket.get(key);
    if (!list) byBucket.set(key, (list = []));
    for (let r = 0; r < (repeats[i] ?? 1); r++) list.push(i);
  });
  const batches: number[][] = [];
  for (const key of [...byBucket.keys()].sort()) {
    const order = shuffled(byBucket.get(key)!, seededRandom(seed, 'bucket-order', key, epoch));
    for (let i = 0; i < order.length; i += batchSize) batches.push(order.slice(i, i + batchSize));
  }
  return shuffled(batches, seededRandom(seed, 'batch-order', epoch));
}

/** Micro-batches per epoch without building them: Σ over buckets of ceil(images × repeats / batchSize). */
export function batchesPerEpoch(placements: readonly ImagePlacement[], repeats: readonly number[], batchSize: number): number {
  const counts = new Map<string, number>();
  placements.forEach((p, i) => counts.set(bucketName(p.bucket), (counts.get(bucketName(p.bucket)) ?? 0) + (repeats[i] ?? 1)));
  let n = 0;
  for (const c of counts.values()) n += Math.ceil(c / batchSize);
  return n;
}
