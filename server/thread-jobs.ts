/**
 * One server work thread (training, LLM, labelling) and the job running on it. A job that reports as it goes
 * gets one end of a MessageChannel (server/thread-report.ts is the thread's side): the thread posts its reports
 * there while it runs, then `done`, and the job's result,
 * which comes back through the WorkerPool, waits for the last of them, so no report arrives after the result.
 * Aborting the job's signal asks the thread to stop at its next check.
 *
 * `close` stops the running job and waits for it before ending the thread: terminating a thread inside an
 * ONNX Runtime call aborts the whole process.
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { WorkerPool } from '../engine/util/worker-pool.ts';
import { fromThread } from './thread-errors.ts';
import type { ThreadReport } from './thread-report.ts';

export interface ReportingJob<M> {
  /** The call's arguments, given the thread's end of the channel (it is transferred). */
  args: (port: MessagePort) => unknown[];
  /** Each report from the thread. */
  onReport: (value: M) => void;
  signal?: AbortSignal;
  /** Asks the thread to stop; default: a `{type: 'stop'}` message on the channel. */
  stop?: (port: MessagePort) => void;
}

export class ThreadJobs {
  private readonly pool: WorkerPool;
  /** The job in flight and how to stop it (see `close`). */
  private running: { done: Promise<unknown>; stop: () => void } | null = null;

  /**
   * `moduleUrl`: the thread's module; `thread` names it in error messages (`the LLM thread stopped …`), and
   * `next` says what the next job does about a dead thread.
   */
  constructor(
    moduleUrl: string,
    private readonly thread: string,
    private readonly next: string,
  ) {
    this.pool = new WorkerPool(moduleUrl, thread, { size: 1 });
  }

  /** Calls `fn` on the thread; its failures reach a client as `fromThread` says. */
  async call<T>(fn: string, args: unknown[], transfer: Parameters<WorkerPool['run']>[2] = []): Promise<T> {
    try {
      return await this.pool.run<T>(fn, args, transfer);
    } catch (e) {
      throw fromThread(e, this.thread, this.next);
    }
  }

  /** Calls `fn` with a report channel (see the header). */
  async run<T, M>(fn: string, job: ReportingJob<M>): Promise<T> {
    const { port1: mine, port2: theirs } = new MessageChannel();
    let drained!: () => void;
    const reported = new Promise<void>((r) => (drained = r));
    // A thread that dies before `done` closes the port instead.
    mine.on('message', (m: ThreadReport<M>) => {
      if (m.type === 'done') drained();
      else job.onReport(m.value);
    });
    mine.on('close', () => drained());
    const stop = () => (job.stop ? job.stop(mine) : mine.postMessage({ type: 'stop' }));
    job.signal?.addEventListener('abort', stop, { once: true });
    if (job.signal?.aborted) stop();
    const done = this.call<T>(fn, job.args(theirs), [theirs]);
    const current = { done, stop };
    this.running = current;
    try {
      const result = await done;
      await reported;
      return result;
    } finally {
      if (this.running === current) this.running = null;
      job.signal?.removeEventListener('abort', stop);
      mine.close();
    }
  }

  /** Ends the thread once the running job has stopped; a later call starts a new one. */
  async close(): Promise<void> {
    while (this.running) {
      this.running.stop();
      await this.running.done.catch(() => {});
    }
    await this.pool.close();
  }
}
