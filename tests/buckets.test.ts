import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  makeBuckets,
  selectBucket,
  coverSize,
  cropFor,
  placeImage,
  randomCrop,
  epochBatches,
  batchesPerEpoch,
  bucketName,
  type Size,
} from '../engine/train/buckets.ts';
import { seededRandom } from '../engine/train/seeded-random.ts';

const SD15 = { resolution: 512, minReso: 256, maxReso: 1024, step: 64 };

test("512² with 256–1024 gives kohya's 17 buckets, 256×1024 through 512×512 to 1024×256", () => {
  const b = makeBuckets(SD15);
  // training-landscape.md §1a: "Derived: 512² gives 17 buckets, from 256×1024 through 512×512 to 1024×256".
  assert.equal(b.length, 17);
  const names = b.map(bucketName);
  for (const n of ['256x1024', '512x512', '1024x256']) assert.ok(names.includes(n), n);
});

test('bucket invariants hold for many settings', () => {
  for (const resolution of [256, 512, 640, 768, 1024]) {
    for (const [minReso, maxReso] of [
      [256, 1024],
      [64, 2048],
      [320, 768],
    ] as const) {
      if (resolution < minReso || resolution > maxReso) continue;
      const b = makeBuckets({ resolution, minReso, maxReso, step: 64 });
      const names = new Set(b.map(bucketName));
      assert.equal(names.size, b.length, 'no duplicates');
      assert.ok(names.has(`${resolution}x${resolution}`), 'the square is present');
      for (const { width, height } of b) {
        assert.equal(width % 64, 0);
        assert.equal(height % 64, 0);
        assert.ok(width * height <= resolution * resolution, `${width}x${height} area`);
        assert.ok(names.has(`${height}x${width}`), 'both orientations');
        if (width !== resolution || height !== resolution) {
          assert.ok(width >= minReso && width <= maxReso && height >= minReso && height <= maxReso, `${width}x${height} in range`);
        }
      }
      // Each bucket, in one of its orientations, has the longest second side the area allows for its first side.
      const maximal = (w: number, h: number) => h === maxReso || w * (h + 64) > resolution * resolution;
      for (const { width, height } of b) {
        if (width === height) continue;
        assert.ok(maximal(width, height) || maximal(height, width), `${width}x${height} is maximal`);
      }
    }
  }
});

test('each image goes to the bucket closest in aspect ratio (checked by brute force)', () => {
  const b = makeBuckets(SD15);
  const rnd = seededRandom(7, 'sizes');
  for (let n = 0; n < 500; n++) {
    const image = { width: 16 + Math.floor(rnd() * 4000), height: 16 + Math.floor(rnd() * 4000) };
    const chosen = selectBucket(image, b);
    const ar = image.width / image.height;
    const err = (s: Size) => Math.abs(s.width / s.height - ar);
    assert.ok(b.every((o) => err(chosen) <= err(o)), `${image.width}x${image.height} → ${bucketName(chosen)}`);
  }
  assert.equal(bucketName(selectBucket({ width: 3000, height: 3000 }, b)), '512x512');
  assert.equal(bucketName(selectBucket({ width: 100, height: 2000 }, b)), '256x1024');
  assert.equal(bucketName(selectBucket({ width: 1920, height: 1080 }, b)), '640x384');
});

test('resize covers the bucket exactly on one side and keeps the aspect ratio; the crop is centered', () => {
  const b = makeBuckets(SD15);
  const rnd = seededRandom(8, 'sizes');
  for (let n = 0; n < 500; n++) {
    const image = { width: 16 + Math.floor(rnd() * 4000), height: 16 + Math.floor(rnd() * 4000) };
    const p = placeImage(image, b);
    const { resized, bucket, crop } = p;
    assert.ok(resized.width >= bucket.width && resized.height >= bucket.height, 'covers');
    assert.ok(resized.width === bucket.width || resized.height === bucket.height, 'one side matches');
    // The cover scale is the larger of the two side ratios; sides are rounded to whole pixels.
    const scale = Math.max(bucket.width / image.width, bucket.height / image.height);
    assert.ok(Math.abs(resized.width - image.width * scale) <= 0.5 + 1e-9);
    assert.ok(Math.abs(resized.height - image.height * scale) <= 0.5 + 1e-9);
    assert.equal(crop.width, bucket.width);
    assert.equal(crop.height, bucket.height);
    assert.ok(Math.abs(crop.left - (resized.width - crop.width - crop.left)) <= 1, 'centered horizontally');
    assert.ok(Math.abs(crop.top - (resized.height - crop.height - crop.top)) <= 1, 'centered vertically');
  }
  // 1920×1080 → bucket 640×384 (ar 1.667 vs 1.778): height matches, 683 wide, 21 px each side.
  assert.deepEqual(coverSize({ width: 1920, height: 1080 }, { width: 640, height: 384 }), { width: 683, height: 384 });
  assert.deepEqual(cropFor({ width: 683, height: 384 }, { width: 640, height: 384 }), { left: 21, top: 0, width: 640, height: 384 });
});

test('random crops stay inside, are deterministic per (seed, image, epoch) and vary between epochs', () => {
  const p = placeImage({ width: 1000, height: 700 }, makeBuckets(SD15));
  const crops = Array.from({ length: 20 }, (_, e) => randomCrop(p, 1, 'a.png', e));
  for (const c of crops) {
    assert.ok(c.left >= 0 && c.left + c.width <= p.resized.width);
    assert.ok(c.top >= 0 && c.top + c.height <= p.resized.height);
  }
  assert.deepEqual(randomCrop(p, 1, 'a.png', 3), crops[3]);
  assert.ok(new Set(crops.map((c) => `${c.left},${c.top}`)).size > 1);
});

test('epoch batches: every repeat once, one bucket per batch, deterministic, reshuffled per epoch', () => {
  const b = makeBuckets(SD15);
  const rnd = seededRandom(9, 'sizes');
  const placements = Array.from({ length: 40 }, () => placeImage({ width: 200 + Math.floor(rnd() * 1800), height: 200 + Math.floor(rnd() * 1800) }, b));
  const repeats = placements.map((_, i) => 1 + (i % 3));
  const batches = epochBatches(placements, repeats, 4, 5, 0);
  const seen = new Array<number>(placements.length).fill(0);
  for (const batch of batches) {
    assert.ok(batch.length >= 1 && batch.length <= 4);
    assert.equal(new Set(batch.map((i) => bucketName(placements[i]!.bucket))).size, 1, 'one bucket per batch');
    for (const i of batch) seen[i]!++;
  }
  assert.deepEqual(seen, repeats);
  assert.equal(batches.length, batchesPerEpoch(placements, repeats, 4));
  assert.deepEqual(epochBatches(placements, repeats, 4, 5, 0), batches);
  assert.notDeepEqual(epochBatches(placements, repeats, 4, 5, 1), batches);
});
