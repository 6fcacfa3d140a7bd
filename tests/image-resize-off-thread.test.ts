/** The server's picture resizes and only-masked cut/paste run on a worker thread and give the same bytes as on the calling thread. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cutAreaOffThread, pasteAreaOffThread, resizeImageOffThread } from '../engine/image/resize-off-thread.ts';
import { cutArea, inpaintArea, pasteArea } from '../engine/image/inpaint-area.ts';
import { resizeImage } from '../engine/image/resize-mode.ts';

test('resize off the thread: the same bytes as resizeImage for every mode and filter; the caller keeps its picture', async () => {
  const img = { width: 37, height: 23, channels: 3 as const, data: Uint8Array.from({ length: 37 * 23 * 3 }, (_, i) => (i * 37 + (i >> 5)) & 255) };
  const before = img.data.slice();
  for (const mode of [0, 1, 2] as const) {
    for (const filter of ['lanczos', 'nearest'] as const) {
      const here = resizeImage(mode, img, 50, 31, filter);
      const there = await resizeImageOffThread(mode, img, 50, 31, filter);
      assert.deepEqual([there.width, there.height, there.channels], [50, 31, 3]);
      assert.deepEqual(Buffer.from(there.data), Buffer.from(here.data), `mode ${mode} ${filter}`);
    }
  }
  assert.equal(img.data.byteLength, before.byteLength, 'the caller\'s buffer was not transferred away');
  assert.deepEqual(Buffer.from(img.data), Buffer.from(before));
});

test('only-masked cut and paste off the thread: the same bytes as on the calling thread', async () => {
  const w = 40;
  const h = 30;
  const img = { width: w, height: h, channels: 3 as const, data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 13) & 255) };
  const mask = { width: w, height: h, channels: 1 as const, data: Uint8Array.from({ length: w * h }, (_, i) => ((i % w) > 12 && (i % w) < 25 && i / w > 8 && i / w < 20 ? 255 : 0)) };
  const area = inpaintArea(mask, 4, 32, 32);
  assert.ok(area, 'the mask is not blank');
  const cutHere = cutArea(img, area, 32, 32);
  const cutThere = await cutAreaOffThread(img, area, 32, 32);
  assert.deepEqual(Buffer.from(cutThere.data), Buffer.from(cutHere.data));
  const generated = { width: 32, height: 32, channels: 3 as const, data: Uint8Array.from({ length: 32 * 32 * 3 }, (_, i) => (i * 7) & 255) };
  const pastedHere = pasteArea(img, generated, area);
  const pastedThere = await pasteAreaOffThread(img, generated, area);
  assert.deepEqual(Buffer.from(pastedThere.data), Buffer.from(pastedHere.data));
  assert.notDeepEqual(Buffer.from(pastedHere.data), Buffer.from(img.data), 'the paste changed the masked region');
});
