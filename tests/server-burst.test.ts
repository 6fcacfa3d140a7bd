/**
 * A burst of 20 concurrent requests, txt2img and img2img mixed, each kind with its own LoRA stack, against the
 * real engine on the fixture model. The queue runs them one at a time while the merger switches stacks between
 * jobs; every response must be exactly what the same request gives when sent alone.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';

let t: TestServer;

before(async () => {
  t = await startTestServer({ withModel: true });
  await t.post('/sdapi/v1/reload-checkpoint');
});
after(() => t.close());

async function initImage(): Promise<string> {
  const px = Buffer.alloc(64 * 64 * 3);
  for (let i = 0; i < px.length; i++) px[i] = (i * 37) % 251;
  return (await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer()).toString('base64');
}

test('20 concurrent mixed requests with different LoRA stacks all come back correct', async () => {
  const init = await initImage();
  const common = { steps: 3, width: 64, height: 64, sampler_name: 'Euler a', cfg_scale: 6 };
  const kinds: { route: string; body: object }[] = [
    { route: 'txt2img', body: { ...common, prompt: 'a cat', seed: 11 } },
    { route: 'txt2img', body: { ...common, prompt: 'a cat <lora:lora_a:0.8>', seed: 11 } },
    { route: 'txt2img', body: { ...common, prompt: 'a cat <lora:lora_a:0.8> <lora:lora_b:0.4>', seed: 11 } },
    { route: 'img2img', body: { ...common, prompt: 'a dog <lora:lora_b:1>', seed: 12, init_images: [init], denoising_strength: 0.6 } },
    { route: 'img2img', body: { ...common, prompt: 'a dog', seed: 12, init_images: [init], denoising_strength: 0.6 } },
  ];
  // Reference: each kind alone.
  const alone: string[] = [];
  for (const k of kinds) {
    const r = await t.post(`/sdapi/v1/${k.route}`, k.body);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    alone.push(r.body.images[0]);
  }
  assert.equal(new Set(alone).size, kinds.length, 'every kind should give a different image');

  const order = Array.from({ length: 20 }, (_, i) => (i * 3) % kinds.length);
  const responses = await Promise.all(order.map((k) => t.post(`/sdapi/v1/${kinds[k]!.route}`, kinds[k]!.body)));
  responses.forEach((r, i) => {
    assert.equal(r.status, 200, `request ${i}: ${JSON.stringify(r.body)}`);
    const k = order[i]!;
    assert.equal(r.body.images[0], alone[k], `request ${i} (kind ${k}) differs from the same request sent alone`);
    const info = JSON.parse(r.body.info);
    assert.equal(info.prompt, (kinds[k]!.body as { prompt: string }).prompt);
  });
});
