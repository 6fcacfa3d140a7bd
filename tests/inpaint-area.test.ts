/**
 * "Inpaint area: Only masked" (inpaint_full_res): the crop geometry by hand from A1111's rules, then img2img on
 * a real server (engine backend, sd-tiny): the picture keeps its own size, everything outside the area keeps
 * its pixels, the masked part is generated, the infotext says so, and a blank mask falls back to img2img.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { expandCropRegion, maskCropRegion } from '../engine/image/inpaint-area.ts';
import { resizeImage } from '../engine/image/resize-mode.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';

test('crop region: mask bounding box + padding, grown to the processing aspect and kept inside the picture', () => {
  const mask = { width: 96, height: 80, channels: 1, data: new Uint8Array(96 * 80) };
  for (let y = 20; y < 30; y++) mask.data.fill(255, y * 96 + 60, y * 96 + 72);
  // Box [60, 20, 72, 30) + 4 → [56, 16, 76, 34): 20 × 18, wider than 1:1, so 2 rows more, split 1 above, 1 below.
  assert.deepEqual(maskCropRegion(mask, 4), [56, 16, 76, 34]);
  assert.deepEqual(expandCropRegion([56, 16, 76, 34], 64, 64, 96, 80), [56, 15, 76, 35]);
  // At the bottom edge the grown rows come from above instead.
  assert.deepEqual(expandCropRegion([10, 70, 40, 80], 64, 64, 96, 80), [10, 50, 40, 80]);
  // Taller than the processing aspect: columns are added, shifted back inside at the left edge.
  assert.deepEqual(expandCropRegion([0, 0, 10, 40], 64, 64, 96, 80), [0, 0, 40, 40]);
  assert.equal(maskCropRegion({ ...mask, data: new Uint8Array(96 * 80) }, 4), null);
  // Crop and resize covers, centred: a 4×2 picture into 2×2 keeps its middle.
  const strip = { width: 4, height: 2, channels: 1, data: Uint8Array.from([0, 10, 20, 30, 0, 10, 20, 30]) };
  assert.equal(resizeImage(1, strip, 2, 2).width, 2);
});

let t: TestServer;
let original: Buffer;
let originalB64 = '';
let maskB64 = '';
before(async () => {
  t = await startTestServer({ withModel: true });
  await t.post('/sdapi/v1/reload-checkpoint');
  const px = Buffer.alloc(96 * 80 * 3);
  for (let y = 0; y < 80; y++) for (let x = 0; x < 96; x++) px.set([(x * 5) % 256, (y * 3) % 256, 90], (y * 96 + x) * 3);
  original = px;
  originalB64 = (await sharp(px, { raw: { width: 96, height: 80, channels: 3 } }).png().toBuffer()).toString('base64');
  const m = Buffer.alloc(96 * 80);
  for (let y = 20; y < 30; y++) m.fill(255, y * 96 + 60, y * 96 + 72);
  maskB64 = (await sharp(m, { raw: { width: 96, height: 80, channels: 1 } }).png().toBuffer()).toString('base64');
});
after(() => t.close());

const req = { prompt: 'a red cat', steps: 3, width: 64, height: 64, sampler_name: 'Euler', seed: 3, denoising_strength: 0.9, mask_blur: 0, inpainting_fill: 1 };

test('img2img only masked: original size, untouched outside the area, generated inside, infotext entries', async () => {
  const r = await t.post('/sdapi/v1/img2img', { ...req, init_images: [originalB64], mask: maskB64, inpaint_full_res: true, inpaint_full_res_padding: 4 });
  assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
  const { data, info } = await sharp(Buffer.from(r.body.images[0], 'base64')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height], [96, 80]);
  let outsideChanged = 0;
  let insideChanged = 0;
  for (let y = 0; y < 80; y++)
    for (let x = 0; x < 96; x++) {
      const i = (y * 96 + x) * 3;
      const changed = data[i] !== original[i] || data[i + 1] !== original[i + 1] || data[i + 2] !== original[i + 2];
      const inMask = y >= 20 && y < 30 && x >= 60 && x < 72;
      if (inMask && changed) insideChanged++;
      if (!inMask && changed) outsideChanged++;
    }
  assert.equal(outsideChanged, 0, 'with mask_blur 0 nothing outside the mask changes');
  assert.ok(insideChanged > 60, `only ${insideChanged} of 120 masked pixels changed`);
  const text = JSON.parse(r.body.info).infotexts[0] as string;
  assert.match(text, /Inpaint area: Only masked, Masked area padding: 4/);
  const again = await t.post('/sdapi/v1/img2img', { ...req, init_images: [originalB64], mask: maskB64, inpaint_full_res: true, inpaint_full_res_padding: 4 });
  assert.equal(again.body.images[0], r.body.images[0], 'same seed, same picture');
  // The whole picture at the request size (not only masked) is another picture, at 64×64.
  const whole = await t.post('/sdapi/v1/img2img', { ...req, init_images: [originalB64], mask: maskB64, inpaint_full_res: false });
  assert.equal((await sharp(Buffer.from(whole.body.images[0], 'base64')).metadata()).width, 64);
});

test('img2img only masked with a blank mask runs plain img2img at the request size, with A1111 note', async () => {
  const blank = (await sharp(Buffer.alloc(96 * 80), { raw: { width: 96, height: 80, channels: 1 } }).png().toBuffer()).toString('base64');
  const r = await t.post('/sdapi/v1/img2img', { ...req, init_images: [originalB64], mask: blank, inpaint_full_res: true });
  assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
  assert.equal((await sharp(Buffer.from(r.body.images[0], 'base64')).metadata()).width, 64);
  assert.ok((JSON.parse(r.body.info).notes as string[]).some((n) => /mask is blank/.test(n)));
});
