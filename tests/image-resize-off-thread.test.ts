/** The server's picture resizes run on a worker thread and give the same bytes as on the calling thread. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resizeImageOffThread } from '../engine/image/resize-off-thread.ts';
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
