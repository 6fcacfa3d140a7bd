// SdGenerator's lowMemory: the same images, no merged-stack cache, and ONNX Runtime's arena off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { SdGenerator } from '../engine/generate/generator.ts';

const dir = join(fixturesDir, 'sd-tiny');

test('lowMemory generates the same images with a LoRA stack, keeping no merged stack cached', async () => {
  const opts = { threads: 1, tokenizer: join(dir, 'diffusers', 'tokenizer'), ...(await sdTinySingleFileOptions()) };
  const fast = await SdGenerator.load(join(dir, 'sd-tiny.safetensors'), opts);
  const lean = await SdGenerator.load(join(dir, 'sd-tiny.safetensors'), { ...opts, lowMemory: true });
  const loras = [{ path: join(dir, 'lora-kohya', 'lora_a.safetensors'), te: 0.8, unet: 0.8 }];
  const req = { prompt: 'a cat', negativePrompt: '', seeds: [5], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
  for (const g of [fast, lean]) {
    await g.generate({ ...req, loras });
    await g.generate(req);
  }
  // Back to the stack: the default generator copies it from its cache, the lean one merges it again.
  const a = await fast.generate({ ...req, loras });
  const b = await lean.generate({ ...req, loras });
  assert.equal(a.lora?.fromCache, true);
  assert.equal(b.lora?.fromCache, false);
  assert.equal(lean.merger.cache.entries, 0);
  assert.ok(fast.merger.cache.entries >= 1);
  assert.deepEqual(b.images, a.images);
});
