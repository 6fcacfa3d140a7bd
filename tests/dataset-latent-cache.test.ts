import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, writeFile, rm, readdir, rename, truncate, readFile, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { LatentCache, latentCacheKey, hashFile, type EncodeFn } from '../engine/train/latent-cache.ts';
import { placeImage, makeBuckets, randomCrop } from '../engine/train/buckets.ts';
import { probeImage, type ImageTensor } from '../engine/image/load.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { UserError } from '../engine/util/errors.ts';

let dir: string;
const buckets = makeBuckets({ resolution: 64, minReso: 64, maxReso: 128, step: 64 });

/**
 * A deterministic stand-in for the VAE encoder with the same contract (8× smaller grid, 4 channels): 8×8 average
 * pooling of R, G, B and their mean. It lets the test check that cached values are exactly what encode returned.
 */
function poolingEncoder(): { encode: EncodeFn; calls: () => number } {
  let calls = 0;
  const encode: EncodeFn = async (img: ImageTensor) => {
    calls++;
    const h = img.height / 8;
    const w = img.width / 8;
    const out = new Float32Array(4 * h * w);
    const plane = img.width * img.height;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        let all = 0;
        for (let c = 0; c < 3; c++) {
          let s = 0;
          for (let dy = 0; dy < 8; dy++) for (let dx = 0; dx < 8; dx++) s += img.data[c * plane + (y * 8 + dy) * img.width + x * 8 + dx]!;
          out[c * h * w + y * w + x] = s / 64;
          all += s / 64;
        }
        out[3 * h * w + y * w + x] = all / 3;
      }
    return out;
  };
  return { encode, calls: () => calls };
}

async function image(name: string, w: number, h: number, seed: number): Promise<{ path: string; placement: ReturnType<typeof placeImage> }> {
  const raw = Buffer.alloc(w * h * 3);
  let s = seed;
  for (let i = 0; i < raw.length; i++) raw[i] = (s = (s * 1103515245 + 12345) >>> 0) >>> 24;
  const path = join(dir, name);
  await sharp(raw, { raw: { width: w, height: h, channels: 3 } }).png().toFile(path);
  return { path, placement: placeImage(await probeImage(path), buckets) };
}

async function entries(cacheDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const shard of await readdir(cacheDir).catch(() => [])) for (const f of await readdir(join(cacheDir, shard))) out.push(f);
  return out.sort();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lora-latents-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('first call encodes and writes a safetensors entry; the second is a hit with identical values', async () => {
  const cacheDir = join(dir, 'c1');
  const cache = new LatentCache(cacheDir, 'vae-A');
  const img = await image('a.png', 150, 90, 1);
  const { encode, calls } = poolingEncoder();
  const first = await cache.getOrEncode(img, {}, encode);
  assert.equal(first.hit, false);
  assert.deepEqual(first.shape, [4, img.placement.bucket.height / 8, img.placement.bucket.width / 8]);
  const second = await cache.getOrEncode(img, {}, encode);
  assert.equal(second.hit, true);
  assert.equal(calls(), 1);
  assert.deepEqual(second.shape, first.shape);
  assert.deepEqual(second.data, first.data);
  // The entry is a plain safetensors file that records its key and what it was made from.
  const f = await SafetensorsFile.open(cache.pathFor(first.key));
  try {
    assert.deepEqual(await f.readFloat32('latent'), first.data);
    assert.equal(f.metadata['lora_scripts.latent_cache_key'], first.key);
    const input = JSON.parse(f.metadata['lora_scripts.latent_cache_input']!);
    assert.equal(input.source, img.path);
    assert.equal(input.contentHash, createHash('sha256').update(await readFile(img.path)).digest('hex'));
  } finally {
    await f.close();
  }
  assert.deepEqual(await entries(cacheDir), [`${first.key}.safetensors`], 'no temporary files left');
});

test('the key changes with content, crop, flip, bucket and VAE, and not with the file name', async () => {
  const img = await image('b.png', 100, 70, 2);
  const base = {
    contentHash: await hashFile(img.path),
    bucket: img.placement.bucket,
    resized: img.placement.resized,
    crop: img.placement.crop,
    flip: false,
    vaeId: 'vae-A',
  };
  const k = latentCacheKey(base);
  assert.match(k, /^[0-9a-f]{64}$/);
  assert.equal(latentCacheKey({ ...base, crop: { ...base.crop } }), k, 'equal inputs, equal key');
  const variants = [
    { ...base, contentHash: createHash('sha256').update('other').digest('hex') },
    { ...base, flip: true },
    { ...base, vaeId: 'vae-B' },
    { ...base, crop: { ...base.crop, left: base.crop.left + 1 } },
    { ...base, bucket: { width: 128, height: 64 } },
    { ...base, resized: { width: base.resized.width + 1, height: base.resized.height } },
  ];
  const keys = new Set([k, ...variants.map(latentCacheKey)]);
  assert.equal(keys.size, variants.length + 1);

  const cacheDir = join(dir, 'c2');
  const { encode, calls } = poolingEncoder();
  const cache = new LatentCache(cacheDir, 'vae-A');
  const plain = await cache.getOrEncode(img, {}, encode);
  const flipped = await cache.getOrEncode(img, { flip: true }, encode);
  assert.equal(flipped.hit, false);
  assert.notDeepEqual(flipped.data, plain.data, 'the flipped image was encoded, not the plain one');
  const crop = randomCrop(img.placement, 1, 'b.png', 0);
  const cropped = await cache.getOrEncode(img, { crop }, encode);
  assert.equal(cropped.hit, crop.left === img.placement.crop.left && crop.top === img.placement.crop.top);
  const otherVae = await new LatentCache(cacheDir, 'vae-B').getOrEncode(img, {}, encode);
  assert.equal(otherVae.hit, false, 'another VAE never gets these latents');
  const before = calls();

  // Renaming keeps the content hash: still a hit.
  const renamed = join(dir, 'b-renamed.png');
  await rename(img.path, renamed);
  const again = await new LatentCache(cacheDir, 'vae-A').getOrEncode({ path: renamed, placement: img.placement }, {}, encode);
  assert.equal(again.hit, true);
  assert.equal(calls(), before);

  // Editing the image in place (same name, same size) changes the content hash, also for an instance that
  // hashed the old file already: re-encoded with the new pixels.
  await rename(renamed, img.path);
  assert.equal((await cache.getOrEncode(img, {}, encode)).hit, true);
  const edited = await image('b.png', 100, 70, 3);
  const re = await cache.getOrEncode(edited, {}, encode);
  assert.equal(re.hit, false);
  assert.notDeepEqual(re.data, plain.data);
});

test('a damaged or foreign entry is deleted and re-encoded', async () => {
  const cacheDir = join(dir, 'c3');
  const cache = new LatentCache(cacheDir, 'vae-A');
  const img = await image('c.png', 64, 64, 4);
  const { encode, calls } = poolingEncoder();
  const first = await cache.getOrEncode(img, {}, encode);
  await truncate(cache.pathFor(first.key), 40);
  assert.equal(await cache.get(first.key), undefined);
  assert.deepEqual(await entries(cacheDir), [], 'the truncated entry was removed');
  const again = await cache.getOrEncode(img, {}, encode);
  assert.equal(again.hit, false);
  assert.deepEqual(again.data, first.data);
  // A valid file stored under the wrong name (e.g. copied by hand) does not carry this key: rejected.
  const other = await image('d.png', 64, 64, 5);
  const otherEntry = await cache.getOrEncode(other, {}, encode);
  await copyFile(cache.pathFor(otherEntry.key), cache.pathFor(first.key));
  const third = await cache.getOrEncode(img, {}, encode);
  assert.equal(third.hit, false);
  assert.deepEqual(third.data, first.data);
  assert.equal(calls(), 4);
});

test('NaN latents are refused and not cached; a wrong-sized latent is a bug report', async () => {
  const cacheDir = join(dir, 'c4');
  const cache = new LatentCache(cacheDir, 'vae-A');
  const img = await image('e.png', 64, 64, 6);
  await assert.rejects(
    cache.getOrEncode(img, {}, async () => new Float32Array(4 * 8 * 8).fill(Number.NaN)),
    (e: unknown) => e instanceof UserError && /NaN or infinite latents for .*e\.png; nothing was cached/.test(e.message),
  );
  await assert.rejects(cache.getOrEncode(img, {}, async () => new Float32Array(7)), /encode returned 7 values/);
  assert.deepEqual(await entries(cacheDir), []);
});

test('prune removes entries no longer wanted; clear removes everything', async () => {
  const cacheDir = join(dir, 'c5');
  const cache = new LatentCache(cacheDir, 'vae-A');
  const { encode } = poolingEncoder();
  const a = await cache.getOrEncode(await image('f.png', 64, 64, 7), {}, encode);
  const b = await cache.getOrEncode(await image('g.png', 64, 64, 8), {}, encode);
  await writeFile(join(cacheDir, a.key.slice(0, 2), `.${a.key}.safetensors.tmp-1-abcd`), 'partial');
  assert.equal(await cache.prune(new Set([a.key])), 2, 'the unwanted entry and the leftover temporary file');
  assert.deepEqual(await entries(cacheDir), [`${a.key}.safetensors`]);
  assert.equal(await cache.get(b.key), undefined);
  assert.ok(await cache.get(a.key));
  await cache.clear();
  assert.deepEqual(await entries(cacheDir), []);
});
