import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isGlobalAddress, resizeForImg2img, prepareMask, makeGrid } from '../server/images.ts';
import type { RawImage } from '../server/backend.ts';

/** Left half red, right half blue. */
function halves(w: number, h: number): RawImage {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set(x < w / 2 ? [255, 0, 0] : [0, 0, 255], (y * w + x) * 3);
  return { width: w, height: h, channels: 3, data };
}
const px = (im: RawImage, x: number, y: number) => [...im.data.subarray((y * im.width + x) * im.channels, (y * im.width + x + 1) * im.channels)];

test('resize_mode 0 stretches, 1 crops the centre, 2 fits and repeats the edges', async () => {
  const src = halves(40, 10);
  const stretch = await resizeForImg2img(src, 20, 20, 0);
  assert.deepEqual([stretch.width, stretch.height], [20, 20]);
  assert.deepEqual(px(stretch, 2, 10), [255, 0, 0]);
  assert.deepEqual(px(stretch, 17, 10), [0, 0, 255]);
  // Cover: a 20×20 window from the middle of a 40×10 image scaled to 80×20 → the centre 20 columns: split in the middle.
  const crop = await resizeForImg2img(src, 20, 20, 1);
  assert.deepEqual(px(crop, 2, 10), [255, 0, 0]);
  assert.deepEqual(px(crop, 17, 10), [0, 0, 255]);
  // Fit inside 20×20 → 20×5 band in the middle; rows above and below copy the band's edge rows.
  const fill = await resizeForImg2img(src, 20, 20, 2);
  assert.deepEqual([fill.width, fill.height], [20, 20]);
  assert.deepEqual(px(fill, 1, 0), [255, 0, 0]);
  assert.deepEqual(px(fill, 18, 19), [0, 0, 255]);
  const same = await resizeForImg2img(src, 40, 10, 0);
  assert.equal(same, src, 'no work when the size already matches');
});

test('masks: invert and blur keep one channel', async () => {
  const m: RawImage = { width: 16, height: 16, channels: 1, data: new Uint8Array(256).fill(255) };
  const inv = await prepareMask(m, true, 0, 0);
  assert.equal(inv.channels, 1);
  assert.equal(Math.max(...inv.data), 0);
  const half: RawImage = { width: 16, height: 16, channels: 1, data: Uint8Array.from({ length: 256 }, (_, i) => (i % 16 < 8 ? 0 : 255)) };
  const blurred = await prepareMask(half, false, 2, 2);
  const edge = blurred.data[8 * 16 + 8]!;
  assert.ok(edge > 0 && edge < 255, `blurred edge ${edge}`);
});

test('grid: round(√n) rows', async () => {
  const one = (v: number): RawImage => ({ width: 2, height: 2, channels: 3, data: new Uint8Array(12).fill(v) });
  const g = await makeGrid([one(10), one(20), one(30), one(40), one(50)]);
  assert.deepEqual([g.width, g.height], [6, 4], '5 images: 2 rows × 3 columns');
  assert.deepEqual(px(g, 4, 0), [30, 30, 30]);
  assert.deepEqual(px(g, 5, 3), [0, 0, 0]);
});

test('only public addresses count as global', () => {
  for (const ip of ['127.0.0.1', '10.0.0.1', '172.16.5.4', '192.168.0.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '0:0:0:0:0:ffff:7f00:1', '::ffff:a00:1', '::ffff:10.0.0.1', '2001:db8::1', 'not-an-ip']) {
    assert.equal(isGlobalAddress(ip), false, ip);
  }
  for (const ip of ['8.8.8.8', '1.1.1.1', '151.101.1.69', '2606:4700::1111', '::ffff:8.8.8.8', '::ffff:808:808']) assert.equal(isGlobalAddress(ip), true, ip);
});
