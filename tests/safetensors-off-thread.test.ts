/**
 * Large half-precision tensors convert to float32 on a worker thread when read: a server loading a
 * checkpoint keeps answering. Same bits as the conversion on this thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SafetensorsFile, toFloat32, writeSafetensors } from '../engine/safetensors/index.ts';
import { OFF_THREAD_MIN_VALUES } from '../engine/safetensors/typed.ts';

test('readFloat32 converts large F16/BF16 tensors off the event loop, bit for bit', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'st-off-thread-'));
  try {
    const n = 4 * OFF_THREAD_MIN_VALUES;
    const half = new Uint16Array(n);
    for (let i = 0; i < n; i++) half[i] = (Math.imul(i, 2654435761) >>> 16) & 0xffff;
    const small = half.slice(0, 1000);
    const path = join(dir, 'big.safetensors');
    await writeSafetensors(path, {
      big_f16: { dtype: 'F16', shape: [n], data: half },
      big_bf16: { dtype: 'BF16', shape: [n / 4, 4], data: half },
      small: { dtype: 'F16', shape: [1000], data: small },
    });
    const f = await SafetensorsFile.open(path);
    try {
      // Warm the worker once, then measure the loop while the big tensors convert.
      await f.readFloat32('big_bf16');
      const loop = monitorEventLoopDelay({ resolution: 5 });
      loop.enable();
      const t0 = performance.now();
      const [a, b, c] = [await f.readFloat32('big_f16'), await f.readFloat32('big_bf16'), await f.readFloat32('small')];
      const seconds = (performance.now() - t0) / 1000;
      loop.disable();
      const here = toFloat32('F16', half);
      const stall = loop.max / 1e6;
      // The same conversion on this thread, for scale.
      const t1 = performance.now();
      toFloat32('BF16', half);
      const inlineMs = performance.now() - t1;
      console.log(`float16: ${n / 1e6} M values ×2 read and converted in ${seconds.toFixed(2)} s, longest event-loop stall ${stall.toFixed(0)} ms (the same BF16 conversion on this thread: ${inlineMs.toFixed(0)} ms)`);
      assert.ok(Buffer.from(a.buffer).equals(Buffer.from(here.buffer)), 'F16 bits differ');
      assert.ok(Buffer.from(b.buffer).equals(Buffer.from(toFloat32('BF16', half).buffer)), 'BF16 bits differ');
      assert.deepEqual([...c], [...toFloat32('F16', small)]);
      assert.ok(stall < Math.max(250, inlineMs), `the loop stalled ${stall.toFixed(0)} ms`);
    } finally {
      await f.close();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
