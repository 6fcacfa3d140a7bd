/**
 * The training thread's side of server/training-thread.ts: the engine's `train()` as it is, its events sent
 * to the main thread on a MessagePort, a stop request received on the same port.
 */
import type { MessagePort } from 'node:worker_threads';
import type { TrainConfig } from '../engine/train/config.ts';
import type { Dataset } from '../engine/train/dataset.ts';
import { train, type TrainEvent, type TrainResult } from '../engine/train/trainer.ts';
import { threadReports } from './thread-report.ts';

export async function runTraining(config: TrainConfig, opts: { dataset?: Dataset; threads?: number }, port: MessagePort): Promise<TrainResult> {
  // The trainer looks at the signal between micro-batches; this thread's loop turns between ONNX Runtime calls, so a stop is seen in time.
  const out = threadReports<TrainEvent>(port);
  try {
    return await train(config, { ...opts, signal: out.signal, onEvent: out.report });
  } finally {
    out.end();
  }
}
