/**
 * One job queue per device: generations, checkpoint loads and trainings run one at a time, in arrival order
 * (A1111's `queue_lock`). Interrupt/skip apply to the running job only, like A1111's shared state.
 *
 * Any kind of work can be queued: a `Job` is a function of a `JobContext`, through which it reports steps
 * and polls for interrupt/skip. Training (issue 7) submits its own Job kind here.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { RawImage, StopRequest } from './backend.ts';

export interface JobContext {
  readonly id: string;
  /** Aborted when the job is interrupted (or cancelled by its disconnected client). */
  readonly signal: AbortSignal;
  /** Report progress; fields left out keep their values. `preview` must capture this step's state. */
  progress(p: { step?: number; total?: number; jobNo?: number; jobCount?: number; textinfo?: string | null; preview?: (() => Promise<RawImage>) | null }): void;
  /** The pending stop request for the running job, if any. */
  stopRequest(): StopRequest | null;
  /** A skip stops one batch; the job calls this after honouring it so the next batch runs. */
  clearSkip(): void;
}

export interface Job<T> {
  /** Shown as `state.job` (A1111 uses e.g. `scripts_txt2img`). */
  kind: string;
  run(ctx: JobContext): Promise<T>;
}

export interface RunningState {
  id: string;
  kind: string;
  startedAt: number;
  /** A1111 `job_timestamp`, `YYYYmmddHHMMSS`. */
  timestamp: string;
  step: number;
  total: number;
  jobNo: number;
  jobCount: number;
  interrupted: boolean;
  skipped: boolean;
  textinfo: string | null;
  preview: (() => Promise<RawImage>) | null;
}

export class CancelledError extends Error {
  override name = 'CancelledError';
}

interface Entry {
  id: string;
  job: Job<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

export interface JobHandle<T> {
  id: string;
  promise: Promise<T>;
  /** Removes the job if it is still waiting, or interrupts it if it is running. */
  cancel(): void;
}

function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export function newTaskId(kind: string): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const bytes = randomBytes(7);
  let s = '';
  for (const b of bytes) s += alphabet[b % alphabet.length];
  return `task(${kind}-${s})`;
}

/**
 * Events: `queued` (id), `start` (RunningState), `progress` (RunningState), `end` (RunningState, error|null).
 */
export class JobQueue extends EventEmitter {
  private waiting: Entry[] = [];
  private running: { entry: Entry; state: RunningState; abort: AbortController } | null = null;
  private closed = false;

  submit<T>(job: Job<T>, opts: { id?: string } = {}): JobHandle<T> {
    const id = opts.id ?? newTaskId(job.kind);
    let entry!: Entry;
    const promise = new Promise<T>((resolve, reject) => {
      entry = { id, job: job as Job<unknown>, resolve: resolve as (v: unknown) => void, reject };
    });
    if (this.closed) entry.reject(new CancelledError('server is shutting down'));
    else {
      this.waiting.push(entry);
      this.emit('queued', id);
      queueMicrotask(() => void this.pump());
    }
    return { id, promise, cancel: () => this.cancel(id) };
  }

  /** Drops a waiting job, or interrupts it if it is the running one. */
  cancel(id: string): boolean {
    const i = this.waiting.findIndex((e) => e.id === id);
    if (i >= 0) {
      const [e] = this.waiting.splice(i, 1);
      e!.reject(new CancelledError(`job ${id} was cancelled before it started`));
      return true;
    }
    if (this.running?.entry.id === id) return this.interrupt();
    return false;
  }

  interrupt(): boolean {
    if (!this.running) return false;
    this.running.state.interrupted = true;
    this.running.abort.abort();
    this.emit('progress', this.running.state);
    return true;
  }

  skip(): boolean {
    if (!this.running) return false;
    this.running.state.skipped = true;
    this.emit('progress', this.running.state);
    return true;
  }

  current(): Readonly<RunningState> | null {
    return this.running?.state ?? null;
  }

  pendingIds(): string[] {
    return this.waiting.map((e) => e.id);
  }

  /** Resolves once nothing is running or waiting. */
  async idle(): Promise<void> {
    while (this.running || this.waiting.length > 0) await new Promise((r) => this.once('end', r));
  }

  /** Cancels waiting jobs, interrupts the running one and waits for it. */
  async close(): Promise<void> {
    this.closed = true;
    for (const e of this.waiting.splice(0)) e.reject(new CancelledError('server is shutting down'));
    this.interrupt();
    if (this.running) await new Promise((r) => this.once('end', r));
  }

  private async pump(): Promise<void> {
    if (this.running) return;
    const entry = this.waiting.shift();
    if (!entry) return;
    const abort = new AbortController();
    const state: RunningState = {
      id: entry.id,
      kind: entry.job.kind,
      startedAt: Date.now(),
      timestamp: timestamp(),
      step: 0,
      total: 0,
      jobNo: 0,
      jobCount: 1,
      interrupted: false,
      skipped: false,
      textinfo: null,
      preview: null,
    };
    this.running = { entry, state, abort };
    const ctx: JobContext = {
      id: entry.id,
      signal: abort.signal,
      progress: (p) => {
        if (p.step !== undefined) state.step = p.step;
        if (p.total !== undefined) state.total = p.total;
        if (p.jobNo !== undefined) state.jobNo = p.jobNo;
        if (p.jobCount !== undefined) state.jobCount = p.jobCount;
        if (p.textinfo !== undefined) state.textinfo = p.textinfo;
        if (p.preview !== undefined) state.preview = p.preview;
        this.emit('progress', state);
      },
      stopRequest: () => (state.interrupted ? 'interrupt' : state.skipped ? 'skip' : null),
      clearSkip: () => {
        state.skipped = false;
      },
    };
    this.emit('start', state);
    let error: unknown = null;
    try {
      entry.resolve(await entry.job.run(ctx));
    } catch (e) {
      error = e;
      entry.reject(e);
    } finally {
      this.running = null;
      this.emit('end', state, error);
      void this.pump();
    }
  }
}
