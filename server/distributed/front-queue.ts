/**
 * The queue of an API front (`serve --queue redis://…`): the same members as the in-process JobQueue, so the
 * routes, progress, socket.io events and training registry work unchanged, but a job that describes itself
 * (`RemoteJob.remote`) is put into Redis through BullMQ and run by whichever worker takes it.
 *
 * - Jobs without a description are the front's own bookkeeping (choosing the checkpoint with the stand-in
 *   backend of server/distributed/front-backend.ts): they run in a local JobQueue at once.
 * - Every job carries the front's options as they were when it was queued; the worker runs with exactly
 *   those and sends back the options the job changed (the loaded checkpoint's title, kept overrides), which
 *   the front applies as the single process would have.
 * - Running state, previews and the end of every job come back through BullMQ's event stream, so every
 *   front sees every job; `current()` is the job that started first among those running.
 * - Interrupt, skip and cancel go to the worker running the job on a pub/sub channel.
 * - A front that stops leaves its jobs in Redis: workers finish them, and results stay there a while.
 *
 * Events beyond JobQueue's: `remote-job` ({id, kind, record, ended}) for a job this front did not queue, with
 * the handler's extra data (a training's record) on each report and its value when it ends.
 */
import { EventEmitter } from 'node:events';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import type { ServerContext, WorkQueue } from '../context.ts';
import { CancelledError, JobQueue, TaskIdInUseError, newTaskId, type Job, type JobHandle, type RunningState } from '../queue.ts';
import {
  CONTROL_CHANNEL,
  KEY_PREFIX,
  QUEUE_NAME,
  WORKER_KEY_PREFIX,
  bullJobId,
  fromWireError,
  fromWireImage,
  taskIdOf,
  type ControlMessage,
  type JobAnswer,
  type JobEnvelope,
  type WireState,
  type WorkerAnnouncement,
} from './protocol.ts';
import type { RedisTarget } from './redis-url.ts';

/** How a job runs elsewhere: a worker-side handler name and JSON data, built only when the job goes to Redis. */
export interface RemoteWork<T> {
  describe(ctx: ServerContext): {
    handler: string;
    data: unknown;
    /** Only workers with this label take it. */
    label?: string | null;
    /** Checkpoint name and LoRA stack key, to prefer a worker that holds them. */
    affinity?: { checkpoint: string | null; stack: string } | null;
  };
  /** Turns the worker's value into the job's result, on the front (default: as it is). */
  accept?(value: unknown): Promise<T> | T;
  /** Handler-specific extra that came with a progress report. */
  onProgress?(extra: unknown): void;
  /** The job ended with an error (answered by the worker, or the job failed in BullMQ). */
  onFailure?(error: unknown): void;
}

/** The end of a job as its queue remembers it: the worker's value, or the error it ended with. */
export type EndedJob = { ok: true; value: unknown } | { ok: false; error: Error };

export interface RemoteJob<T> extends Job<T> {
  remote?: RemoteWork<T>;
}

type SubmitOptions = NonNullable<Parameters<JobQueue['submit']>[1]>;

interface Pending {
  id: string;
  owner: string | null;
  kind: string;
  work: RemoteWork<unknown>;
  resolve(v: unknown): void;
  reject(e: unknown): void;
  /** Set once the add to Redis has gone through. */
  added: Promise<void>;
  /** The worker this job was steered to, until it starts. */
  prefer: string | null;
}

export interface FrontQueueOptions {
  target: RedisTarget;
  /** How long finished jobs and their results stay in Redis (default one hour). */
  keepResultsSeconds?: number;
  log?(msg: string): void;
}

export class RedisFrontQueue extends EventEmitter implements WorkQueue {
  private readonly queue: Queue;
  private readonly events: QueueEvents;
  private readonly redis: Redis;
  private readonly local = new JobQueue();
  private readonly mine = new Map<string, Pending>();
  /** Jobs waiting in Redis (this front's and the others'), oldest first. */
  private waiting: { id: string; owner: string | null | undefined }[] = [];
  private readonly running = new Map<string, RunningState>();
  private ctx: ServerContext | null = null;
  private bound!: (ctx: ServerContext) => void;
  private readonly whenBound = new Promise<ServerContext>((r) => (this.bound = r));
  private workers: WorkerAnnouncement[] = [];
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  private readonly log: (msg: string) => void;
  private readonly keepSeconds: number;

  private constructor(opts: FrontQueueOptions) {
    super();
    this.log = opts.log ?? ((m) => console.log(m));
    this.keepSeconds = opts.keepResultsSeconds ?? 3600;
    const connection = opts.target.options;
    this.queue = new Queue(QUEUE_NAME, { connection, prefix: KEY_PREFIX });
    this.events = new QueueEvents(QUEUE_NAME, { connection, prefix: KEY_PREFIX });
    this.redis = new Redis(connection);
    const warn = (e: Error) => this.log(`redis: ${e.message}`);
    this.queue.on('error', warn);
    this.events.on('error', warn);
    this.redis.on('error', warn);
    for (const name of ['queued', 'start', 'progress', 'end'] as const) this.local.on(name, (...args: unknown[]) => this.emit(name, ...args));
    this.timer = setInterval(() => void this.refreshWorkers(), 1000);
    this.timer.unref();
  }

  /** Connects and starts listening; jobs queued by fronts before this one count as waiting. */
  static async connect(opts: FrontQueueOptions): Promise<RedisFrontQueue> {
    const q = new RedisFrontQueue(opts);
    try {
      await Promise.all([q.queue.waitUntilReady(), q.events.waitUntilReady()]);
    } catch (e) {
      await q.shutdown();
      throw new Error(`cannot reach Redis at ${opts.target.display}: ${(e as Error).message}`);
    }
    q.listen();
    for (const j of await q.queue.getJobs(['waiting', 'prioritized', 'delayed'], 0, -1, true)) {
      const env = j.data as JobEnvelope;
      q.waiting.push({ id: env.id, owner: env.owner });
    }
    await q.refreshWorkers();
    return q;
  }

  /** The server this queue serves: its options travel with each job, its indexes resolve affinity. */
  bind(ctx: ServerContext): void {
    this.ctx = ctx;
    this.bound(ctx);
  }

  /** Live workers as they last announced themselves. */
  workerList(): readonly WorkerAnnouncement[] {
    return this.workers;
  }

  submit<T>(job: Job<T>, opts: SubmitOptions = {}): JobHandle<T> {
    const remote = (job as RemoteJob<T>).remote;
    if (!remote) return this.local.submit(job, opts);
    if (opts.id !== undefined && this.has(opts.id)) throw new TaskIdInUseError(opts.id);
    const id = opts.id ?? newTaskId(job.kind);
    const owner = opts.owner ?? null;
    let p!: Pending;
    const promise = new Promise<T>((resolve, reject) => {
      p = { id, owner, kind: job.kind, work: remote as RemoteWork<unknown>, resolve: resolve as (v: unknown) => void, reject, added: Promise.resolve(), prefer: null };
    });
    if (this.closed) {
      p.reject(new CancelledError('server is shutting down'));
      return { id, promise, cancel: () => false };
    }
    this.mine.set(id, p);
    this.waiting.push({ id, owner });
    p.added = this.add(p).catch((e: unknown) => {
      this.forget(id);
      p.reject(e);
    });
    this.emit('queued', id, owner);
    return { id, promise, cancel: () => this.mine.get(id) === p && this.cancelPending(p) };
  }

  private async add(p: Pending): Promise<void> {
    const ctx = await this.whenBound;
    const d = p.work.describe(ctx);
    const jobId = bullJobId(p.id);
    // A finished job keeps its id for a while in Redis; a live one with the same id is another client's.
    const old = await this.queue.getJob(jobId);
    if (old) {
      const state = await old.getState();
      if (state === 'completed' || state === 'failed') await old.remove();
      else throw new TaskIdInUseError(p.id);
    }
    const envelope: JobEnvelope = {
      id: p.id,
      kind: p.kind,
      owner: p.owner,
      handler: d.handler,
      data: d.data,
      options: ctx.options.all(),
      label: d.label ?? null,
      prefer: (p.prefer = d.affinity ? this.preferredWorker(d.affinity) : null),
      queuedAt: Date.now(),
    };
    await this.queue.add(p.kind, envelope, {
      jobId,
      removeOnComplete: { age: this.keepSeconds },
      removeOnFail: { age: this.keepSeconds },
    });
  }

  /**
   * The one live worker with a free slot that holds more of what the job needs (the checkpoint loaded: 1, and
   * the LoRA stack merged too: 2) than the other free workers; none when several tie, so that equal workers
   * share the load instead of all preferring the first.
   */
  private preferredWorker(a: { checkpoint: string | null; stack: string }): string | null {
    if (a.checkpoint === null) return null;
    // Jobs already steered to a worker and not started yet count as its work: a burst must not all wait for one.
    const steered = new Map<string, number>();
    for (const p of this.mine.values()) if (p.prefer !== null && !this.running.has(p.id)) steered.set(p.prefer, (steered.get(p.prefer) ?? 0) + 1);
    const scored = this.workers
      .filter((w) => w.busy + (steered.get(w.id) ?? 0) < w.concurrency)
      .map((w) => ({ id: w.id, score: Math.max(0, ...w.loaded.map((s) => (s.checkpoint !== a.checkpoint ? 0 : s.stacks.includes(a.stack) ? 2 : 1))) }))
      .sort((x, y) => y.score - x.score);
    const [best, next] = scored;
    return best && best.score > 0 && (!next || next.score < best.score) && scored.length > 1 ? best.id : null;
  }

  private async refreshWorkers(): Promise<void> {
    if (this.closed) return;
    try {
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, found] = await this.redis.scan(cursor, 'MATCH', `${WORKER_KEY_PREFIX}*`, 'COUNT', 100);
        cursor = next;
        keys.push(...found);
      } while (cursor !== '0');
      const values = keys.length ? await this.redis.mget(...keys) : [];
      this.workers = values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as WorkerAnnouncement);
    } catch {
      /* a Redis hiccup: keep the last list */
    }
  }

  private listen(): void {
    this.events.on('waiting', ({ jobId }) => {
      const id = taskIdOf(jobId);
      if (id === null || this.waiting.some((w) => w.id === id)) return;
      const entry: { id: string; owner: string | null | undefined } = { id, owner: undefined };
      this.waiting.push(entry);
      // A stalled job coming back is this front's own, or another front's whose owner we look up.
      void this.queue.getJob(jobId).then((j) => j && (entry.owner = (j.data as JobEnvelope).owner), () => {});
    });
    // A job starts when its worker reports it running, not when BullMQ marks it active: a worker may hand a
    // job back (pinned to a label it lacks, or better placed elsewhere) without starting it.
    this.events.on('progress', ({ jobId, data }) => {
      const id = taskIdOf(jobId);
      if (id === null || typeof data !== 'object' || data === null) return;
      this.progressed(id, data as unknown as WireState);
    });
    this.events.on('completed', ({ jobId, returnvalue }) => {
      const id = taskIdOf(jobId);
      if (id !== null) void this.finished(id, (typeof returnvalue === 'string' ? JSON.parse(returnvalue) : returnvalue) as JobAnswer);
    });
    this.events.on('failed', ({ jobId, failedReason }) => {
      const id = taskIdOf(jobId);
      if (id !== null) void this.finished(id, null, new Error(failedReason));
    });
    this.events.on('removed', ({ jobId }) => {
      const id = taskIdOf(jobId);
      if (id !== null) this.waiting = this.waiting.filter((w) => w.id !== id);
    });
    this.events.on('stalled', ({ jobId }) => {
      const id = taskIdOf(jobId);
      if (id === null) return;
      const s = this.running.get(id);
      this.running.delete(id);
      if (!this.waiting.some((w) => w.id === id)) this.waiting.push({ id, owner: s?.owner ?? this.mine.get(id)?.owner });
      if (s) this.log(`job ${id} stalled on worker ${(s as RunningState & { worker?: string }).worker ?? '?'}; it goes back to the queue`);
    });
  }

  private progressed(id: string, w: WireState): void {
    let state = this.running.get(id);
    if (!state) {
      state = { ...w, preview: null } as RunningState;
      this.running.set(id, state);
      this.waiting = this.waiting.filter((x) => x.id !== id);
      this.emit('start', state);
    }
    const { preview, extra, ...rest } = w;
    // The front's own interrupt/skip marks stay until the worker has seen them.
    Object.assign(state, rest, { interrupted: state.interrupted || rest.interrupted, skipped: rest.skipped });
    if (preview) {
      const image = fromWireImage(preview);
      state.preview = async () => image;
    }
    if (extra !== undefined) {
      const p = this.mine.get(id);
      if (p) p.work.onProgress?.(extra);
      // Another front's job (or one queued before this front restarted): whoever keeps records takes it.
      else this.emit('remote-job', { id, kind: state.kind, record: extra, ended: false });
    }
    this.emit('progress', state);
  }

  private async finished(id: string, answer: JobAnswer | null, failure?: Error): Promise<void> {
    const state = this.running.get(id) ?? null;
    this.running.delete(id);
    this.waiting = this.waiting.filter((w) => w.id !== id);
    const p = this.mine.get(id);
    let error: unknown = failure ?? null;
    let value: unknown;
    if (answer && !answer.ok) error = fromWireError(answer.error);
    if (answer?.ok && p) {
      try {
        await this.applyOptions(answer);
        value = p.work.accept ? await p.work.accept(answer.value) : answer.value;
      } catch (e) {
        error = e;
      }
    }
    if (!p && answer?.ok && state) this.emit('remote-job', { id, kind: state.kind, record: answer.value, ended: true });
    if (p) {
      this.forget(id);
      if (error) p.work.onFailure?.(error);
      if (error) p.reject(error);
      else p.resolve(value);
    }
    if (state) this.emit('end', state, error);
  }

  private async applyOptions(answer: Extract<JobAnswer, { ok: true }>): Promise<void> {
    const ctx = this.ctx;
    if (!ctx) return;
    for (const [k, v] of Object.entries(answer.optionChanges)) ctx.options.setInternal(k, v as never);
    if (answer.saveOptions) await ctx.options.save();
  }

  private forget(id: string): void {
    this.mine.delete(id);
    this.waiting = this.waiting.filter((w) => w.id !== id);
  }

  private control(msg: ControlMessage): void {
    void this.redis.publish(CONTROL_CHANNEL, JSON.stringify(msg)).catch((e: unknown) => this.log(`redis: ${(e as Error).message}`));
  }

  private cancelPending(p: Pending): boolean {
    if (this.running.has(p.id)) {
      this.control({ action: 'cancel', id: p.id });
      return true;
    }
    void p.added
      .then(() => this.queue.remove(bullJobId(p.id)))
      .then((removed) => {
        if (removed === 1) {
          this.forget(p.id);
          p.reject(new CancelledError(`job ${p.id} was cancelled before it started`));
        } else this.control({ action: 'cancel', id: p.id }); // a worker took it meanwhile
      })
      .catch((e: unknown) => this.log(`could not cancel ${p.id}: ${(e as Error).message}`));
    return true;
  }

  has(id: string): boolean {
    return this.mine.has(id) || this.running.has(id) || this.waiting.some((w) => w.id === id) || this.local.has(id);
  }

  /**
   * Asks Redis, not this front's memory: after a restart the front has not yet heard of a job that a worker
   * runs (`active`, also while a killed worker's job waits for the stall check to hand it on) or that waits.
   */
  async liveState(id: string): Promise<'waiting' | 'running' | null> {
    const local = await this.local.liveState(id);
    if (local) return local;
    const job = await this.queue.getJob(bullJobId(id));
    const state = job ? await job.getState() : null;
    if (state === 'active') return 'running';
    if (state === 'waiting' || state === 'prioritized' || state === 'delayed' || state === 'waiting-children') return 'waiting';
    return null;
  }

  /**
   * How a job that Redis still remembers as ended came out (BullMQ keeps results `keepResultsSeconds`): a
   * restarted front reads the end of a job that a worker finished while no front was up here.
   */
  async endedJob(id: string): Promise<EndedJob | null> {
    const job = await this.queue.getJob(bullJobId(id));
    const state = job ? await job.getState() : null;
    if (!job || (state !== 'completed' && state !== 'failed')) return null;
    if (state === 'failed') return { ok: false, error: new Error(job.failedReason || 'the job failed on its worker') };
    const answer = (typeof job.returnvalue === 'string' ? JSON.parse(job.returnvalue) : job.returnvalue) as JobAnswer | null;
    if (!answer) return null;
    return answer.ok ? { ok: true, value: answer.value } : { ok: false, error: fromWireError(answer.error) };
  }

  cancel(id: string): boolean {
    const p = this.mine.get(id);
    if (p) return this.cancelPending(p);
    if (this.running.has(id)) {
      this.control({ action: 'cancel', id });
      return true;
    }
    return this.local.cancel(id);
  }

  interrupt(): boolean {
    const s = this.current();
    if (!s) return false;
    if (!this.running.has(s.id)) return this.local.interrupt();
    (s as RunningState).interrupted = true;
    this.control({ action: 'interrupt', id: s.id });
    this.emit('progress', s);
    return true;
  }

  skip(): boolean {
    const s = this.current();
    if (!s) return false;
    if (!this.running.has(s.id)) return this.local.skip();
    (s as RunningState).skipped = true;
    this.control({ action: 'skip', id: s.id });
    this.emit('progress', s);
    return true;
  }

  current(): Readonly<RunningState> | null {
    let first: RunningState | null = null;
    for (const s of this.running.values()) if (!first || s.startedAt < first.startedAt) first = s;
    return first ?? this.local.current();
  }

  /** Waiting jobs with their owners, oldest first (another front's job, until its owner is known, belongs to no user: '\0'). */
  pending(): { id: string; owner: string | null }[] {
    return [...this.waiting.map((w) => ({ id: w.id, owner: w.owner === undefined ? '\0' : w.owner })), ...this.local.pending()];
  }

  pendingIds(owner?: string | null): string[] {
    const remote = this.waiting.filter((w) => owner === undefined || w.owner === null || (w.owner !== undefined && w.owner === owner)).map((w) => w.id);
    return [...remote, ...this.local.pendingIds(owner)];
  }

  async idle(): Promise<void> {
    while (this.mine.size > 0) await new Promise((r) => this.once('end', r));
    await this.local.idle();
  }

  /** Stops listening. Jobs stay in Redis for the workers; this front's waiting requests are answered as cancelled. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.mine.values()]) {
      this.forget(p.id);
      p.reject(new CancelledError('this API front is shutting down; the job stays queued for the workers'));
    }
    await this.local.close();
    await this.shutdown();
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.timer);
    await Promise.allSettled([this.events.close(), this.queue.close()]);
    this.redis.disconnect();
  }
}
