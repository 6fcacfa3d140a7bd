/**
 * The thread's side of a reporting job (server/thread-jobs.ts). On the job's MessagePort the thread posts
 * `report`s while it runs and `done` once nothing more follows; the main thread may post `stop`.
 */
import type { MessagePort } from 'node:worker_threads';

export type ThreadReport<T> = { type: 'report'; value: T } | { type: 'done' };
export type ThreadControl = { type: 'stop' };

export interface Reports<T> {
  report: (value: T) => void;
  /** Aborted when the main thread posts `stop`. */
  signal: AbortSignal;
  /** Says no report follows and closes the port; call it once the job has returned or thrown. */
  end: () => void;
}

export function threadReports<T>(port: MessagePort): Reports<T> {
  const abort = new AbortController();
  port.on('message', (m: ThreadControl) => {
    if (m.type === 'stop') abort.abort();
  });
  return {
    report: (value) => port.postMessage({ type: 'report', value } satisfies ThreadReport<T>),
    signal: abort.signal,
    end: () => {
      port.postMessage({ type: 'done' } satisfies ThreadReport<T>);
      port.close();
    },
  };
}
