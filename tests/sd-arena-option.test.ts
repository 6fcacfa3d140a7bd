// StableDiffusion's memArena 'unet': the UNet's sessions keep ONNX Runtime's arena, the text encoder's and the
// VAE's do not; the images are those of either plain setting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { SdGenerator } from '../engine/generate/generator.ts';

const dir = join(fixturesDir, 'sd-tiny');

test("memArena 'unet' generates the images the arena on and off give", async () => {
  const opts = { threads: 1, tokenizer: join(dir, 'diffusers', 'tokenizer'), ...(await sdTinySingleFileOptions()) };
  const req = { prompt: 'a cat', negativePrompt: 'blurry', seeds: [3], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
  const images = [];
  for (const memArena of [true, false, 'unet'] as const) {
    const g = await SdGenerator.load(join(dir, 'sd-tiny.safetensors'), { ...opts, memArena });
    images.push((await g.generate(req)).images);
  }
  assert.deepEqual(images[2], images[0]);
  assert.deepEqual(images[1], images[0]);
});
