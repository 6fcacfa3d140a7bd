/**
 * One job queue per device: generations, checkpoint loads and trainings run one at a time, in arrival order
 * (A1111's `queue_lock`). Interrupt/skip apply to the running job only, like A1111's shared state.
 *
 * Any kind of work can be queued: a `Job` is a function of a `JobContext`, through which it reports steps
 * and polls for interrupt/skip. Training submits its own Job kind here.
 *
 * Ownership is part of the contract, so that one client cannot act on another's work:
 * - a job may carry an `owner` (the authenticated user, `''` for anonymous clients, `null` for the server's
 *   own jobs); events carry it so transports send them only to that owner's clients (`pendingIds(owner)`);
 * - an id chosen by the client (`force_task_id`) that is already waiting or running is refused
 *   (`TaskIdInUseError`, 409) instead of aliasing the other job;
 * - a `JobHandle` acts on its own entry only: cancelling it never touches another job that shares its id.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { RawImage, StopRequest } from './backend.ts';
import { HttpError } from './errors.ts';

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
  /** Who queued it: a user name, `''` (anonymous client) or null (the server itself). */
  owner: string | null;
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

/** A client-chosen task id that another waiting or running job already has. */
export class TaskIdInUseError extends HttpError {
  constructor(id: string) {
    super(409, `task id '${id}' is already queued or running; choose another force_task_id`);
  }
}

export interface SubmitOptions {
  /** Client-chosen id (A1111 `force_task_id`); refused while another job has it. */
  id?: string;
  /** See RunningState.owner; default null (the server's own work). */
  owner?: string | null;
}

interface Entry {
  id: string;
  owner: string | null;
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
 * Events: `queued` (id, owner), `start` (RunningState), `progress` (RunningState), `end` (RunningState, error|null).
 */
export class JobQueue extends EventEmitter {
  private waiting: Entry[] = [];
  private running: { entry: Entry; state: RunningState; abort: AbortController } | null = null;
  private closed = false;

  /** Throws TaskIdInUseError when `opts.id` belongs to a waiting or running job. */
  submit<T>(job: Job<T>, opts: SubmitOptions = {}): JobHandle<T> {
    if (opts.id !== undefined && this.has(opts.id)) throw new TaskIdInUseError(opts.id);
    const id = opts.id ?? newTaskId(job.kind);
    const owner = opts.owner ?? null;
    let entry!: Entry;
    const promise = new Promise<T>((resolve, reject) => {
      entry = { id, owner, job: job as Job<unknown>, resolve: resolve as (v: unknown) => void, reject };
    });
    if (this.closed) entry.reject(new CancelledError('server is shutting down'));
    else {
      this.waiting.push(entry);
      this.emit('queued', id, owner);
      queueMicrotask(() => void this.pump());
    }
    return { id, promise, cancel: () => this.cancelEntry(entry) };
  }

  /** Whether a job with this id is waiting or running. */
  has(id: string): boolean {
    return this.running?.entry.id === id || this.waiting.some((e) => e.id === id);
  }

  /**
   * Where job `id` stands: waiting, running, or neither (ended, or never queued here). A queue shared by
   * processes (server/distributed/front-queue.ts) asks its store, so a restarted front can tell a job that
   * a worker still runs from one that died with its server.
   */
  async liveState(id: string): Promise<'waiting' | 'running' | null> {
    if (this.running?.entry.id === id) return 'running';
    return this.waiting.some((e) => e.id === id) ? 'waiting' : null;
  }

  /** Drops a waiting job, or interrupts it if it is the running one. */
  cancel(id: string): boolean {
    const e = this.running?.entry.id === id ? this.running.entry : this.waiting.find((w) => w.id === id);
    return e ? this.cancelEntry(e) : false;
  }

  private cancelEntry(entry: Entry): boolean {
    const i = this.waiting.indexOf(entry);
    if (i >= 0) {
      this.waiting.splice(i, 1);
      entry.reject(new CancelledError(`job ${entry.id} was cancelled before it started`));
      return true;
    }
    if (this.running?.entry === entry) return this.interrupt();
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

  /** Waiting jobs with their owners, oldest first. */
  pending(): { id: string; owner: string | null }[] {
    return this.waiting.map((e) => ({ id: e.id, owner: e.owner }));
  }

  /** Waiting job ids, oldest first; with `owner`, only that owner's (and the server's own) jobs. */
  pendingIds(owner?: string | null): string[] {
    return this.waiting.filter((e) => owner === undefined || e.owner === null || e.owner === owner).map((e) => e.id);
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
      owner: entry.owner,
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
