/**
 * The training thread's side of server/training-thread.ts: the engine's `train()` as it is, its events sent
 * to the main thread on a MessagePort, a stop request received on the same port.
 */
import type { MessagePort } from 'node:worker_threads';
import type { TrainConfig } from '../engine/train/config.ts';
import type { Dataset } from '../engine/train/dataset.ts';
import { train, type TrainEvent, type TrainResult } from '../engine/train/trainer.ts';

/** Thread → main: each trainer event, then `done` once nothing more follows. Main → thread: `stop`. */
export type TrainThreadMessage = { type: 'event'; event: TrainEvent } | { type: 'done' };
export type TrainThreadControl = { type: 'stop' };

export async function runTraining(config: TrainConfig, opts: { dataset?: Dataset; threads?: number }, port: MessagePort): Promise<TrainResult> {
  const abort = new AbortController();
  // The trainer looks at the signal between micro-batches; this thread's loop turns between ONNX Runtime calls, so the message is seen in time.
  port.on('message', (m: TrainThreadControl) => {
    if (m.type === 'stop') abort.abort();
  });
  try {
    return await train(config, { ...opts, signal: abort.signal, onEvent: (event) => port.postMessage({ type: 'event', event } satisfies TrainThreadMessage) });
  } finally {
    port.postMessage({ type: 'done' } satisfies TrainThreadMessage);
    port.close();
  }
}
