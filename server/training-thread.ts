/**
 * Trainings on a worker thread: the engine's `train()` runs in server/training-thread-worker.ts, so its ONNX
 * Runtime calls (synchronous native code, seconds per step at 512²) never hold the HTTP loop; progress,
 * interrupt, cancel and every other route keep answering while a step runs.
 *
 * Config and dataset go in (copied), trainer events come back as they happen (the result waits for the last
 * one), and aborting the signal stops the run at its next micro-batch as in-process. A UserError stays one; a
 * thread that dies (out of memory, terminated) fails the run with a message saying so, and the next run starts
 * a fresh thread.
 */
import type { TrainConfig } from '../engine/train/config.ts';
import type { TrainEvent, TrainOptions, TrainResult } from '../engine/train/trainer.ts';
import { ThreadJobs } from './thread-jobs.ts';

export class TrainingThread {
  private readonly thread = new ThreadJobs(new URL('./training-thread-worker.ts', import.meta.url).href, 'training', 'the next training starts a new thread');

  train(config: TrainConfig, opts: Pick<TrainOptions, 'signal' | 'onEvent' | 'dataset' | 'threads'>): Promise<TrainResult> {
    return this.thread.run<TrainResult, TrainEvent>('runTraining', {
      args: (port) => [config, { dataset: opts.dataset, threads: opts.threads }, port],
      onReport: (event) => opts.onEvent?.(event),
      signal: opts.signal,
    });
  }

  /**
   * Ends the thread; a later run starts a new one. A running training is stopped (it saves its state as on
   * cancel) and waited for first.
   */
  close(): Promise<void> {
    return this.thread.close();
  }
}
