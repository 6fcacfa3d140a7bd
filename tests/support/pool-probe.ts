// Functions for tests/worker-pool.test.ts to run on a worker thread.
import { threadId } from 'node:worker_threads';
import { UserError } from '../../engine/util/errors.ts';

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
