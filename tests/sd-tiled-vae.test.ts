// Tiled VAE decode and encode on the sd-tiny fixture: tiles agree with the untiled network when they share the
// image's GroupNorm statistics, stay near it with estimated ones, and the pipeline's vaeTiling option reaches them.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { ClipConditioner } from '../engine/sd/conditioning.ts';
import { Pipeline } from '../engine/sd/pipeline.ts';
import { loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { decodeTiled, encodeTiled, parseVaeTiling, tileGrid, tilesNeeded, vaeReceptiveRadius, type VaeTileOptions } from '../engine/sd/tiled-vae.ts';

const dir = join(fixturesDir, 'sd-tiny');
let model: StableDiffusion;

// Overlap as far as the decoder sees; a latent of several tiles in both directions, not a multiple of the tile
// (sd-tiny: overlap 10, tiles of 24, a 40 × 28 latent in 3 × 2 tiles).
let H: number;
let W: number;
let TILES: VaeTileOptions;

before(async () => {
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
  const overlap = Math.ceil(vaeReceptiveRadius(model.arch.vae));
  TILES = { tile: 2 * overlap + 4, overlap, statsSize: 1024 };
  H = Math.round((TILES.tile * 5) / 3);
  W = TILES.tile + 4;
});

/** A latent with image-like structure (smooth shapes per channel) plus fine detail. */
function latent(C: number): Float32Array {
  return new Float32Array(C * H * W).map((_, i) => {
    const c = Math.floor(i / (H * W));
    const y = Math.floor((i % (H * W)) / W);
    const x = i % W;
    return 2 * Math.sin(y * 0.3 + c) * Math.cos(x * 0.2 - c) + 0.5 * Math.sin(i * 12.9898);
  });
}

function stats(a: Float32Array, b: Float32Array): { meanAbs: number; maxAbs: number; range: number } {
  let s = 0;
  let m = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    s += d;
    m = Math.max(m, d);
    lo = Math.min(lo, b[i]!);
    hi = Math.max(hi, b[i]!);
  }
  return { meanAbs: s / a.length, maxAbs: m, range: hi - lo };
}

test('tileGrid covers an axis with equal tiles no longer than asked and at least the overlap between neighbours', () => {
  for (let n = 1; n <= 200; n++) {
    for (const [tile, overlap] of [[64, 16], [24, 10], [8, 0], [16, 8]] as const) {
      const { size, starts } = tileGrid(n, tile, overlap);
      assert.ok(size <= Math.min(n, tile), `n=${n}: size ${size}`);
      assert.equal(starts[0], 0);
      assert.equal(starts[starts.length - 1]! + size, n, `n=${n}: the last tile ends at the edge`);
      for (let i = 1; i < starts.length; i++) assert.ok(starts[i - 1]! + size - starts[i]! >= overlap, `n=${n} tile=${tile}: overlap between ${i - 1} and ${i}`);
    }
  }
});

test('tiling option: auto tiles above one tile, parse errors name the field', () => {
  assert.equal(tilesNeeded('auto', 64, 64), false);
  assert.equal(tilesNeeded('auto', 64, 65), true);
  assert.equal(tilesNeeded('off', 500, 500), false);
  assert.equal(tilesNeeded('on', 8, 8), true);
  assert.equal(parseVaeTiling(undefined), 'auto');
  assert.equal(parseVaeTiling(true), 'on');
  assert.throws(() => parseVaeTiling('sometimes', 'vae_tiling'), /vae_tiling must be one of auto, on, off/);
});

test('tiled decode with whole-image statistics matches the untiled decoder', async () => {
  const C = model.arch.vae.embedDim;
  const z = latent(C);
  const full = await model.decode(z, { batch: 1, height: H, width: W });
  const tiled = await decodeTiled(model, z, H, W, TILES);
  const d = stats(tiled, full);
  // Measured on sd-tiny: mean 0.2 %, max 3.7 % of the output's range (the max at tile borders, where a
  // tile's convolutions saw zero padding; the blend weights there are small but not zero). Tiles normalised
  // by their own statistics instead: mean 1.4 %.
  assert.ok(d.meanAbs <= 0.005 * d.range, `mean |tiled − untiled| ${d.meanAbs} vs range ${d.range}`);
  assert.ok(d.maxAbs <= 0.05 * d.range, `max |tiled − untiled| ${d.maxAbs} vs range ${d.range}`);
});

test('with statistics estimated on a half-size copy, the tiled decode stays near the untiled one', async () => {
  const C = model.arch.vae.embedDim;
  const z = latent(C);
  const full = await model.decode(z, { batch: 1, height: H, width: W });
  const tiled = await decodeTiled(model, z, H, W, { ...TILES, statsSize: Math.ceil(Math.max(H, W) / 2) });
  // The estimate is what bounds memory for large images; it misses the variance of detail finer than the copy
  // keeps. Measured on sd-tiny with this latent's pixel-level noise: mean 1.9 %, max 17 % of the range.
  const d = stats(tiled, full);
  assert.ok(d.meanAbs <= 0.04 * d.range, `mean |tiled − untiled| ${d.meanAbs} vs range ${d.range}`);
});

test('tiled encode with whole-image statistics matches the untiled encoder', async () => {
  const C = model.arch.vae.embedDim;
  const img = (await model.decode(latent(C), { batch: 1, height: H, width: W })).map((v) => Math.max(-1, Math.min(1, v)));
  const full = await model.encode(img, { batch: 1, height: H * 8, width: W * 8 });
  const tiled = await encodeTiled(model, img, H * 8, W * 8, TILES);
  const d = stats(tiled, full);
  assert.ok(d.meanAbs <= 0.005 * d.range, `mean |tiled − untiled| ${d.meanAbs} vs range ${d.range}`);
  assert.ok(d.maxAbs <= 0.05 * d.range, `max |tiled − untiled| ${d.maxAbs} vs range ${d.range}`);
});

test('the pipeline decodes through the tiled path when vaeTiling is on', async () => {
  const pipe = new Pipeline(model, new ClipConditioner(model, await loadClipTokenizer(join(dir, 'diffusers/tokenizer'))));
  const req = { prompt: 'a cat', negativePrompt: '', seeds: [3], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
  const built = model.sessionBuilds;
  const off = await pipe.generate({ ...req, vaeTiling: 'off' });
  const on = await pipe.generate({ ...req, vaeTiling: 'on' });
  // One tile covers 64²: the tiled path runs the split decoder with the image's own statistics, so it agrees
  // with the whole decoder to float rounding; the split parts are sessions of their own.
  assert.ok(model.sessionBuilds > built + 1);
  const d = stats(on.images, off.images);
  assert.ok(d.maxAbs <= 1e-4, `max |on − off| ${d.maxAbs}`);
});
