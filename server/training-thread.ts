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
import { MessageChannel } from 'node:worker_threads';
import type { TrainConfig } from '../engine/train/config.ts';
import type { TrainOptions, TrainResult } from '../engine/train/trainer.ts';
import { WorkerPool } from '../engine/util/worker-pool.ts';
import { fromThread } from './thread-errors.ts';
import type { TrainThreadControl, TrainThreadMessage } from './training-thread-worker.ts';

export class TrainingThread {
  private readonly pool = new WorkerPool(new URL('./training-thread-worker.ts', import.meta.url).href, 'training', { size: 1 });
  /** The run in flight and how to stop it (see `close`). */
  private running: { done: Promise<unknown>; stop: () => void } | null = null;

  async train(config: TrainConfig, opts: Pick<TrainOptions, 'signal' | 'onEvent' | 'dataset' | 'threads'>): Promise<TrainResult> {
    const { port1: mine, port2: theirs } = new MessageChannel();
    let drained!: () => void;
    const reported = new Promise<void>((r) => (drained = r));
    mine.on('message', (m: TrainThreadMessage) => {
      if (m.type === 'event') opts.onEvent?.(m.event);
      else drained();
    });
    mine.on('close', () => drained());
    const stop = () => mine.postMessage({ type: 'stop' } satisfies TrainThreadControl);
    opts.signal?.addEventListener('abort', stop, { once: true });
    if (opts.signal?.aborted) stop();
    const run = this.pool.run<TrainResult>('runTraining', [config, { dataset: opts.dataset, threads: opts.threads }, theirs], [theirs]);
    const current = { done: run, stop };
    this.running = current;
    try {
      const result = await run;
      await reported;
      return result;
    } catch (e) {
      throw fromThread(e, 'training', 'the next training starts a new thread');
    } finally {
      if (this.running === current) this.running = null;
      opts.signal?.removeEventListener('abort', stop);
      mine.close();
    }
  }

  /**
   * Ends the thread; a later run starts a new one. A running training is stopped (it saves its state as on
   * cancel) and waited for first: terminating a thread inside an ONNX Runtime call aborts the whole process.
   */
  async close(): Promise<void> {
    while (this.running) {
      this.running.stop();
      await this.running.done.catch(() => {});
    }
    await this.pool.close();
  }
}
