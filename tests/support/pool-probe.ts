// Functions for tests/worker-pool.test.ts to run on a worker thread.
import { threadId } from 'node:worker_threads';
import { UserError } from '../../engine/util/errors.ts';
import { WorkerPool } from '../../engine/util/worker-pool.ts';

export function sum(values: Float32Array): { sum: number; thread: number } {
  let s = 0;
  for (const v of values) s += v;
  return { sum: s, thread: threadId };
}

export function doubled(values: Float32Array): Float32Array {
  for (let i = 0; i < values.length; i++) values[i]! *= 2;
  return values;
}

export function refuse(field: string): never {
  throw new UserError(`${field}: refused by the worker`, { status: 422 });
}

export function crash(): never {
  process.exit(3);
}

/** Runs `sum` on a pool of its own, started from inside a worker the way engine modules start theirs. */
export async function nestedSum(values: Float32Array): Promise<{ sum: number; outer: number; inner: number }> {
  const inner = new WorkerPool(import.meta.url, 'nested probe');
  try {
    const r = await inner.run<{ sum: number; thread: number }>('sum', [values]);
    return { sum: r.sum, outer: threadId, inner: r.thread };
  } finally {
    await inner.close();
  }
}
