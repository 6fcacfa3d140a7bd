/**
 * socket.io events of training jobs, beside the queue's `progress`/`job-start`/`job-end`:
 * - `train-progress`: TrainProgressEvent (step, loss, loss average, learning rates, it/s, ETA) on every
 *   trainer report, i.e. once per optimizer step while training;
 * - `train-log`: {id, message, time}, one per trainer log line.
 *
 * createServer builds the socket.io server after the routes, and the route context does not carry it, so
 * whoever holds both calls this once (see docs/server.md). Calling it again for the same server does nothing.
 */
import type { ServerContext } from './context.ts';
import { trainingRegistry, type TrainProgressEvent } from './training.ts';

interface Emitter {
  emit(event: string, data: unknown): unknown;
}

const attached = new WeakSet<object>();

export function attachTrainingSocket(ctx: ServerContext, io: Emitter): void {
  if (attached.has(io)) return;
  attached.add(io);
  const registry = trainingRegistry(ctx);
  registry.on('train-progress', (p: TrainProgressEvent) => io.emit('train-progress', p));
  registry.on('train-log', (l: { id: string; message: string; time: string }) => io.emit('train-log', l));
}
