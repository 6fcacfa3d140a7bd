import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { Goldens } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { ClipConditioner, type Conditioner, type Conditioning } from '../engine/sd/conditioning.ts';
import { Pipeline } from '../engine/sd/pipeline.ts';
import { loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { SAMPLERS } from '../engine/sampling/registry.ts';

const dir = join(fixturesDir, 'sd-tiny');
let golden: Goldens;
let model: StableDiffusion;
let pipe: Pipeline;

before(async () => {
  golden = await Goldens.open(dir);
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
  pipe = new Pipeline(model, new ClipConditioner(model, await loadClipTokenizer(join(dir, 'diffusers/tokenizer'))));
});

/** Contexts taken from the golden text-encoder output, by prompt name: the goldens start from token ids, not text. */
async function goldenConditioner(): Promise<Conditioner> {
  const h = await golden.read('golden/text_encoder.safetensors', 'last_hidden_state');
  const [, T, D] = h.shape as [number, number, number];
  const rows: Record<string, Conditioning> = {
    positive: { data: h.data.slice(0, T * D), tokens: T },
    negative: { data: h.data.slice(T * D, 2 * T * D), tokens: T },
  };
  return { encode: async (p) => rows[p]! };
}

test('txt2img with Euler reproduces diffusers\' trajectory and decoded image', async () => {
  const g = new Pipeline(model, await goldenConditioner());
  const noise = await golden.read('golden/inputs.safetensors', 'sample_noise');
  const [, , h, w] = noise.shape as number[];
  const timesteps = await golden.read('golden/schedule.safetensors', 'euler_timesteps');
  const cfg = golden.manifest.config.cfg_scale as number;
  const seen: number[] = [];
  const out = await g.generate(
    { prompt: 'positive', negativePrompt: 'negative', seeds: [1], width: w! * 8, height: h! * 8, steps: timesteps.data.length, cfgScale: cfg, sampler: 'Euler', initialNoise: noise.data },
    { onStep: (s) => seen.push(s) },
  );
  assert.deepEqual(seen, Array.from({ length: timesteps.data.length }, (_, i) => i + 1));
  assert.equal(out.sampler, 'Euler');
  await golden.expectClose(out.images, 'golden/sample_euler.safetensors', 'image');
});

test('every registered sampler generates a finite image, and a seed always gives the same one', async () => {
  for (const s of SAMPLERS) {
    const req = { prompt: 'a red cube', negativePrompt: '', seeds: [7], width: 64, height: 64, steps: 4, cfgScale: 5, sampler: s.name };
    const a = await pipe.generate(req);
    assert.equal(a.images.length, 3 * 64 * 64, s.name);
    assert.ok(a.images.every(Number.isFinite), `${s.name}: non-finite pixels`);
    const b = await pipe.generate(req);
    assert.deepEqual(b.images, a.images, `${s.name}: not deterministic`);
  }
});

test('seeds, batches and prompts change the image; a batch equals its images made one by one', async () => {
  const base = { prompt: 'a red cube', negativePrompt: 'blurry', width: 64, height: 64, steps: 3, cfgScale: 5, sampler: 'Euler a' };
  const batch = await pipe.generate({ ...base, seeds: [11, 12] });
  const one = await pipe.generate({ ...base, seeds: [11] });
  const two = await pipe.generate({ ...base, seeds: [12] });
  const n = 3 * 64 * 64;
  const close = (a: Float32Array, b: Float32Array) => a.every((v, i) => Math.abs(v - b[i]!) < 1e-4);
  assert.ok(close(batch.images.subarray(0, n), one.images));
  assert.ok(close(batch.images.subarray(n), two.images));
  assert.ok(!close(one.images, two.images), 'different seeds gave the same image');
  const other = await pipe.generate({ ...base, prompt: 'a (blue:1.4) sphere, BREAK two', seeds: [11] });
  assert.ok(!close(other.images, one.images), 'a different prompt gave the same image');
});

test('img2img at low strength stays near the encoded image; inpainting leaves the kept region alone', async () => {
  const W = 64;
  const img = new Float32Array(3 * W * W).map((_, i) => Math.sin(i / 50) * 0.8);
  const base = { prompt: 'a red cube', negativePrompt: '', seeds: [3], width: W, height: W, steps: 4, cfgScale: 5, sampler: 'Euler' };
  const zero = await pipe.generate({ ...base, img2img: { images: [img], denoisingStrength: 0 } });
  const recon = await model.decode(
    (await model.encode(img, { batch: 1, height: W, width: W })).map((v) => v),
    { batch: 1, height: W / 8, width: W / 8 },
  );
  const rms = (a: Float32Array, b: Float32Array) => Math.sqrt(a.reduce((acc, v, i) => acc + (v - b[i]!) ** 2, 0) / a.length);

  const mask = new Float32Array(W * W);
  for (let y = 0; y < W; y++) for (let x = W / 2; x < W; x++) mask[y * W + x] = 1; // repaint the right half
  const full = await pipe.generate({ ...base, img2img: { images: [img], denoisingStrength: 0.9 } });
  const inpaint = await pipe.generate({ ...base, img2img: { images: [img], denoisingStrength: 0.9, mask } });
  const half = await pipe.generate({ ...base, img2img: { images: [img], denoisingStrength: 0.5 } });
  // A1111 still runs the last step of the schedule at strength 0 (t_enc = 0), so the image moves a little;
  // more strength must move it further from the original.
  const d0 = rms(zero.images, recon);
  const d5 = rms(half.images, recon);
  const d9 = rms(full.images, recon);
  assert.ok(d0 < d5 && d5 < d9, `distance from the original by strength 0/0.5/0.9: ${d0} ${d5} ${d9}`);
  // Outside the mask the original pixels come back exactly; inside, the image is repainted.
  let keptMax = 0;
  let repainted = 0;
  for (let c = 0; c < 3; c++)
    for (let y = 0; y < W; y++)
      for (let x = 0; x < W; x++) {
        const i = c * W * W + y * W + x;
        if (x < W / 2) keptMax = Math.max(keptMax, Math.abs(inpaint.images[i]! - img[i]!));
        else repainted += (inpaint.images[i]! - img[i]!) ** 2;
      }
  assert.ok(keptMax < 1e-6, `kept region moved by ${keptMax}`);
  assert.ok(Math.sqrt(repainted / (3 * W * W / 2)) > 0.05, 'the masked half was not repainted');
});

test('an interrupt stops sampling at the next step and still returns an image', async () => {
  let steps = 0;
  const out = await pipe.generate(
    { prompt: 'x', negativePrompt: '', seeds: [5], width: 64, height: 64, steps: 10, cfgScale: 5, sampler: 'Euler' },
    { onStep: () => steps++, shouldStop: () => (steps >= 3 ? 'interrupt' : null) },
  );
  assert.equal(out.stopped, 'interrupt');
  assert.equal(steps, 3);
  assert.equal(out.images.length, 3 * 64 * 64);
});

test('bad sizes and strengths are refused with the field name', async () => {
  const base = { prompt: 'x', negativePrompt: '', seeds: [5], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
  await assert.rejects(pipe.generate({ ...base, width: 65 }), /width must be a multiple of 8/);
  await assert.rejects(pipe.generate({ ...base, img2img: { images: [new Float32Array(3 * 64 * 64)], denoisingStrength: 2 } }), /denoising_strength/);
});

test('hires fix doubles the size with a second pass, for latent and image upscalers', async () => {
  const base = { prompt: 'a red cube', negativePrompt: '', seeds: [9], width: 64, height: 64, steps: 3, cfgScale: 5, sampler: 'Euler' };
  const low = await pipe.generate(base);
  for (const upscaler of ['Latent', 'Lanczos']) {
    const steps: [number, number][] = [];
    const hi = await pipe.generate({ ...base, hires: { scale: 2, upscaler, denoisingStrength: 0.5, steps: 2 } }, { onStep: (s, t) => steps.push([s, t]) });
    assert.equal(hi.width, 128);
    assert.equal(hi.height, 128);
    assert.equal(hi.images.length, 3 * 128 * 128);
    assert.ok(hi.images.every(Number.isFinite));
    assert.deepEqual(steps.map((s) => s[0]), [1, 2, 3, 4, 5], upscaler);
    assert.ok(steps.every((s) => s[1] === 5));
    // The second pass refines the first: a 2× downsample of the result stays closer to the low-res image than
    // chance. Only for the latent upscaler: the image path round-trips through the fixture's random VAE.
    if (upscaler !== 'Latent') continue;
    let d = 0;
    let dRand = 0;
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 64; y++)
        for (let x = 0; x < 64; x++) {
          const v = hi.images[c * 128 * 128 + 2 * y * 128 + 2 * x]!;
          d += (v - low.images[c * 64 * 64 + y * 64 + x]!) ** 2;
          dRand += (v - low.images[c * 64 * 64 + ((y + 32) % 64) * 64 + ((x + 32) % 64)]!) ** 2;
        }
    assert.ok(d < dRand, `${upscaler}: hires result unrelated to the first pass (${d} vs ${dRand})`);
  }
});
