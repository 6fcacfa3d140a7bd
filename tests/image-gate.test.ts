/**
 * Image decodes and encodes pass one gate counted in pixels: parallel requests with large images wait for
 * room instead of all inflating at once. A unit check of the gate's rules, then real img2img requests whose
 * init images and masks go through it.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { PixelGate, defaultGateLimits, imageGate } from '../engine/image/pixel-gate.ts';
import { FixtureBackend, startTestServer } from './server-fixture-backend.ts';

test('the gate keeps pixels and operations in flight within its limits, in arrival order; one huge image runs alone', async () => {
  const gate = new PixelGate({ pixels: 100, slots: 2 });
  const order: number[] = [];
  const release: (() => void)[] = [];
  const sizes = [60, 30, 50, 10, 200, 5];
  const runs = sizes.map((px, i) =>
    gate.run(px, async () => {
      order.push(i);
      const { pixels, running } = gate.current;
      assert.ok(running <= 2, `${running} running`);
      assert.ok(pixels <= 100 || running === 1, `${pixels} px in flight with ${running} running`);
      await new Promise<void>((r) => release.push(r));
    }),
  );
  // Let every waiting task that fits start, then finish the oldest, until all have run.
  while (order.length < sizes.length || release.length) {
    await new Promise((r) => setImmediate(r));
    release.shift()?.();
  }
  await Promise.all(runs);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5], 'first come, first served');
  assert.equal(gate.peaks.running, 2);
  assert.ok(gate.peaks.waited >= 3);
  assert.deepEqual(gate.current, { pixels: 0, running: 0, waiting: 0, limits: { pixels: 100, slots: 2 } });
  // Sized from memory: 24 GiB allows ~100 Mpx in flight.
  assert.equal(defaultGateLimits(24 * 2 ** 30, 2).pixels, Math.floor((24 * 2 ** 30) / 16 / 16));
});

test('parallel img2img requests with large init images and masks decode within the pixel budget', async () => {
  const before = imageGate.current.limits;
  const t = await startTestServer({ withModel: true, backend: new FixtureBackend() });
  try {
    const side = 1024;
    const png = async (seed: number, channels: 3 | 1) => {
      const noise = Buffer.alloc(64 * 64 * channels);
      for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761 + seed * 97) >>> 24;
      return (await sharp(noise, { raw: { width: 64, height: 64, channels } }).resize(side, side).png({ compressionLevel: 1 }).toBuffer()).toString('base64');
    };
    const [init, mask] = await Promise.all([png(1, 3), png(2, 1)]);
    // Room for two decodes of this size at once, whatever the machine.
    const budget = 2 * side * side;
    imageGate.configure({ pixels: budget, slots: 4 });
    imageGate.resetPeaks();
    const requests = Array.from({ length: 10 }, (_, i) =>
      t.post('/sdapi/v1/img2img', { prompt: `gate ${i}`, init_images: [init], mask, steps: 1, width: 64, height: 64, seed: i, denoising_strength: 0.5 }),
    );
    const rss: number[] = [];
    const sampler = setInterval(() => rss.push(process.memoryUsage().rss), 20);
    const answers = await Promise.all(requests);
    clearInterval(sampler);
    for (const r of answers) assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 200));
    const { peaks } = imageGate;
    console.log(`image gate: parallel img2img with ${side}² init image and mask, peak ${peaks.pixels} px in flight (budget ${budget}), ${peaks.running} at once, ${peaks.waited} waited; RSS peak ${(Math.max(...rss) / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(peaks.pixels <= budget, `${peaks.pixels} px in flight, budget ${budget}`);
    assert.ok(peaks.waited > 0, 'some decodes waited for room');
    assert.equal(imageGate.current.running, 0);
  } finally {
    imageGate.configure(before);
    await t.close();
  }
});
