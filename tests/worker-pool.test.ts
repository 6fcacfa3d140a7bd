/**
 * The engine's worker pool: functions of a module run on another thread, typed arrays go by transfer both
 * ways, a UserError stays a UserError (a server answers it with 4xx), and a worker that dies fails only its
 * own task and is replaced by the next call.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { threadId } from 'node:worker_threads';
import { WorkerPool, WorkerTaskError } from '../engine/util/worker-pool.ts';
import { UserError } from '../engine/util/errors.ts';

const probe = new URL('./support/pool-probe.ts', import.meta.url).href;

test('worker pool: transfer both ways, user errors kept, a crashed worker replaced', async () => {
  const pool = new WorkerPool(probe, 'probe', { size: 2 });
  try {
    const a = Float32Array.from({ length: 1000 }, (_, i) => i);
    const r = await pool.run<{ sum: number; thread: number }>('sum', [a]);
    assert.equal(r.sum, (999 * 1000) / 2);
    assert.notEqual(r.thread, threadId, 'ran on another thread');

    const sent = Float32Array.from([1, 2, 3]);
    const back = await pool.run<Float32Array>('doubled', [sent], [sent.buffer]);
    assert.equal(sent.length, 0, 'the buffer was moved to the worker, not copied');
    assert.deepEqual([...back], [2, 4, 6]);

    await assert.rejects(pool.run('refuse', ['steps']), (e: unknown) => e instanceof UserError && e.status === 422 && /steps: refused/.test(e.message));
    await assert.rejects(pool.run('nothing', []), (e: unknown) => e instanceof WorkerTaskError && /exports no function nothing/.test(e.message));

    // Two at once (size 2), one of them kills its worker: only that task fails.
    const [crashed, fine] = await Promise.allSettled([pool.run('crash', []), pool.run<{ sum: number }>('sum', [Float32Array.from([5])])]);
    assert.equal(crashed.status, 'rejected');
    assert.match(String((crashed as PromiseRejectedResult).reason), /exited \(code 3\)/);
    assert.equal(fine.status === 'fulfilled' && fine.value.sum, 5);
    assert.equal((await pool.run<{ sum: number }>('sum', [Float32Array.from([7])])).sum, 7, 'a new worker took over');
  } finally {
    await pool.close();
  }
});

test('worker pool: a module running in a worker starts a pool of its own (as the LoRA merge does inside the generation thread)', async () => {
  const pool = new WorkerPool(probe, 'probe');
  try {
    const r = await pool.run<{ sum: number; outer: number; inner: number }>('nestedSum', [Float32Array.from([1, 2, 3])]);
    assert.equal(r.sum, 6);
    assert.notEqual(r.outer, threadId);
    assert.notEqual(r.inner, r.outer, 'the nested pool ran on a thread of its own, not on its caller as a fallback');
  } finally {
    await pool.close();
  }
});
