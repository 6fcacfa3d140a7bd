/**
 * Training jobs of this server: each is one job in the shared queue (so trainings and generations run one at
 * a time, in arrival order), observed through the trainer's events. The registry keeps, per job, its status,
 * a config summary, the loss of every optimizer step, logs, warnings, the files written and the error.
 *
 * When a run finishes, its LoRA is copied into the LoRA folder and the LoRA list refreshed, so `<lora:name:1>`
 * works in the next request. States, logs and intermediate saves stay in the job's folder under
 * `<data-dir>/training/<id>`: a state folder holds `lora.safetensors`, which must not show up as a LoRA.
 *
 * Events (for socket.io, see server/train-socket.ts): `train-progress` (TrainProgressEvent) on every trainer
 * progress report — once per optimizer step while training — and `train-log` ({id, message, time}).
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TrainProgress, TrainResult, TrainEvent } from '../engine/train/trainer.ts';
import type { TrainConfig } from '../engine/train/config.ts';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { newestTrainState } from '../engine/train/state.ts';
import { isUserError } from '../engine/util/errors.ts';
import type { ServerContext } from './context.ts';
import { CancelledError, type JobContext, type JobHandle } from './queue.ts';
import type { PreparedTraining } from './train-config.ts';
import { isInside, trainingSettings } from './train-settings.ts';
import type { EndedJob, RemoteJob } from './distributed/front-queue.ts';
import { remoteTraining, takeWorkerRecord } from './distributed/training-work.ts';
import { isLlmModelFolder } from '../engine/llm/config.ts';
import { ADAPTER_CONFIG, ADAPTER_WEIGHTS } from '../engine/llm/peft.ts';
import { llmService } from './llm.ts';
import { TrainingThread } from './training-thread.ts';

/** `interrupted`: the server stopped (crash, kill -9, power loss) while the job was queued or running; it can be resumed. */
export type TrainJobStatus = 'queued' | 'running' | 'done' | 'cancelled' | 'failed' | 'interrupted';

export interface LossPoint {
  step: number;
  epoch: number;
  loss: number;
  lossAverage: number | null;
  lrs: Record<string, number>;
  gradNorm: number | null;
  /** Seconds since the job started running. */
  time: number;
}

export interface TrainProgressEvent {
  id: string;
  phase: TrainProgress['phase'];
  epoch: number;
  epochs: number;
  step: number;
  total_steps: number;
  loss: number | null;
  loss_average: number | null;
  lr: Record<string, number> | null;
  grad_norm: number | null;
  it_per_sec: number | null;
  eta_seconds: number | null;
  /** While caching latents: done / to do. */
  cached: number | null;
  to_cache: number | null;
}

export interface TrainJob {
  id: string;
  status: TrainJobStatus;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  config: TrainConfig;
  /** Optimizer steps the dataset plan gives (before the run reports its own count). */
  planned_steps: number;
  warnings: string[];
  progress: TrainProgressEvent | null;
  loss_history: LossPoint[];
  validation: { step: number; loss: number }[];
  logs: string[];
  outputs: {
    /** The finished LoRA in the LoRA folder (what `<lora:name>` loads). */
    lora: string | null;
    lora_name: string;
    /** The job's folder: states, logs, intermediate saves, samples. */
    work_dir: string;
    log_dir: string;
    intermediate: string[];
    states: string[];
    /** Give this as `resume_from` to continue the run. */
    last_state: string | null;
    samples: { step: number; path: string; prompt: string }[];
  };
  result: TrainResult | null;
  error: string | null;
}

const MAX_LOG_LINES = 500;

export function newTrainJobId(): string {
  return `train-${randomBytes(6).toString('hex')}`;
}

function progressEvent(id: string, p: TrainProgress): TrainProgressEvent {
  return {
    id,
    phase: p.phase,
    epoch: p.epoch,
    epochs: p.epochs,
    step: p.step,
    total_steps: p.totalSteps,
    loss: p.loss ?? null,
    loss_average: p.lossAverage ?? null,
    lr: p.lrs ?? null,
    grad_norm: p.gradNorm ?? null,
    it_per_sec: p.itPerSec ?? null,
    eta_seconds: p.etaSeconds ?? null,
    cached: p.done ?? null,
    to_cache: p.todo ?? null,
  };
}

/** Short status line for A1111's `/progress` textinfo while a training runs. */
function textinfo(job: TrainJob, p: TrainProgress): string {
  const name = job.outputs.lora_name;
  if (p.phase === 'caching') return `Training ${name}: caching latents ${p.done ?? 0}/${p.todo ?? 0}`;
  if (p.phase === 'training' && p.loss !== undefined) {
    const eta = p.etaSeconds !== undefined ? `, ETA ${Math.round(p.etaSeconds)}s` : '';
    return `Training ${name}: epoch ${p.epoch}/${p.epochs}, step ${p.step}/${p.totalSteps}, loss ${p.loss.toFixed(4)}${eta}`;
  }
  return `Training ${name}: ${p.phase}`;
}

export class TrainingRegistry extends EventEmitter {
  private readonly jobs = new Map<string, TrainJob>();
  private readonly handles = new Map<string, JobHandle<TrainResult>>();
  /** The runs execute here, off the HTTP loop (server/training-thread.ts). */
  private readonly thread = new TrainingThread();

  /** Resolves once the records of earlier server runs (each job folder's `job.json`) are loaded. */
  readonly ready: Promise<void>;

  constructor(private readonly ctx: ServerContext) {
    super();
    this.ready = this.restore();
    // An API front also hears of trainings that other fronts (or its own earlier run) queued: their records
    // come from the workers running them (server/distributed/front-queue.ts).
    ctx.queue.on('remote-job', (e: { kind: string; record: unknown; ended: boolean }) => {
      if (e.kind === 'train_lora') this.adopt(e.record as TrainJob, e.ended);
    });
  }

  /** Takes over the record of a training this server did not queue (or no longer remembers queuing). */
  private adopt(record: TrainJob, ended: boolean): void {
    if (!record || typeof record.id !== 'string' || this.handles.has(record.id)) return;
    const before = this.jobs.get(record.id);
    this.jobs.set(record.id, record);
    const seen = before?.logs.length ?? 0;
    for (const message of record.logs.slice(record.logs.length >= seen ? seen : 0)) this.emit('train-log', { id: record.id, message, time: new Date().toISOString() });
    if (record.progress) this.emit('train-progress', record.progress);
    if (ended && record.outputs.lora) void this.ctx.loras.refresh().catch(() => {});
  }

  /**
   * Jobs of earlier runs of the server, oldest first; they can be inspected, not cancelled. A record without
   * an end was queued or running when that server died: it is listed as `interrupted`, with the newest
   * complete state found in its folder (see `resume`).
   */
  private async restore(): Promise<void> {
    const dir = trainingSettings(this.ctx).trainingDir;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    const found: TrainJob[] = [];
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const text = await readFile(join(dir, e.name, 'job.json'), 'utf8').catch(() => null);
      if (text === null) continue;
      try {
        const job = JSON.parse(text) as TrainJob;
        if (typeof job.id !== 'string' || this.jobs.has(job.id)) continue;
        // A job queue shared with workers (`--queue`) may still hold it: then it waits or runs elsewhere,
        // and its record follows from the worker's reports.
        const live = !job.ended_at ? await this.ctx.queue.liveState(job.id).catch(() => null) : null;
        // Or a worker finished it while no server was up here: its end is still in the shared queue.
        const ended = !job.ended_at && !live ? await this.ctx.queue.endedJob?.(job.id).catch(() => null) : null;
        if (live) job.status = live === 'running' ? 'running' : 'queued';
        else if (ended) await this.settleFromQueue(job, ended);
        else if (!job.ended_at && job.status !== 'interrupted') {
          const was = job.status;
          job.status = 'interrupted';
          job.error = `the server stopped while this job was ${was}`;
          job.outputs.last_state = (await newestTrainState(job.outputs.work_dir)) ?? null;
        }
        found.push(job);
      } catch {
        this.ctx.log(`warning: ${join(dir, e.name, 'job.json')} is not valid JSON; that job is not listed`);
      }
    }
    found.sort((a, b) => (a.created_at < b.created_at ? -1 : 1));
    const current = [...this.jobs];
    this.jobs.clear();
    for (const j of found) this.jobs.set(j.id, j);
    for (const [id, j] of current) this.jobs.set(id, j);
  }

  /** The record of a job that ended elsewhere (a worker) while this server was down, from the queue's answer. */
  private async settleFromQueue(job: TrainJob, ended: EndedJob): Promise<void> {
    const record = ended.ok ? (ended.value as TrainJob | null) : null;
    if (record && typeof record === 'object' && record.ended_at) takeWorkerRecord(job, record);
    else {
      job.status = ended.ok ? 'done' : ended.error instanceof CancelledError ? 'cancelled' : 'failed';
      job.error = ended.ok || ended.error instanceof CancelledError ? null : ended.error.message;
      job.ended_at = new Date().toISOString();
    }
    await this.persist(job);
    if (job.outputs.lora) await this.ctx.loras.refresh().catch(() => {});
  }

  /**
   * Queues a validated training; `id` must be the one whose folder the config's output_dir defaults to.
   * `request` is what an API front sends to the workers instead (the body as the client wrote it, and the
   * worker label the job is pinned to); the in-process queue ignores it.
   */
  submit(id: string, prepared: PreparedTraining, request: { body: unknown; label: string | null } = { body: null, label: null }): TrainJob {
    const { config } = prepared;
    const job: TrainJob = {
      id,
      status: 'queued',
      created_at: new Date().toISOString(),
      started_at: null,
      ended_at: null,
      config,
      planned_steps: prepared.plannedSteps,
      warnings: prepared.warnings,
      progress: null,
      loss_history: [],
      validation: [],
      logs: [],
      outputs: {
        lora: null,
        lora_name: config.output_name,
        work_dir: config.output_dir,
        log_dir: config.logging_dir,
        intermediate: [],
        states: [],
        last_state: null,
        samples: [],
      },
      result: null,
      error: null,
    };
    this.jobs.set(id, job);
    // On disk from the start, so a crash cannot make a queued or running job vanish from the list.
    void this.persist(job);
    const work: RemoteJob<TrainResult> = { kind: 'train_lora', run: (c) => this.run(job, prepared, c), remote: remoteTraining(this.ctx, this, job, request.body, request.label) };
    const handle = this.ctx.queue.submit<TrainResult>(work, { id });
    this.handles.set(id, handle);
    // A job removed before it started never runs `run`; everything else settles its status there.
    handle.promise.catch((e: unknown) => {
      if (e instanceof CancelledError && job.status === 'queued') this.finish(job, 'cancelled', null);
    });
    return job;
  }

  get(id: string): TrainJob | undefined {
    return this.jobs.get(id);
  }

  list(): TrainJob[] {
    return [...this.jobs.values()];
  }

  /** Place in the queue (0 = next) of a waiting job, else null. */
  queuePosition(id: string): number | null {
    const i = this.ctx.queue.pendingIds().indexOf(id);
    return i < 0 ? null : i;
  }

  /**
   * A waiting job is removed; a running one stops at its next micro-batch and saves a state to resume from.
   * Returns false when the job has already ended.
   */
  cancel(id: string): 'removed' | 'stopping' | false {
    const job = this.jobs.get(id);
    const handle = this.handles.get(id);
    if (!job || job.ended_at) return false;
    // A training another front queued runs on a worker: the queue reaches it there.
    if (!handle) return this.ctx.queue.cancel(id) ? 'stopping' : false;
    if (job.status === 'queued') {
      handle.cancel();
      this.log(job, 'removed from the queue before it started');
      this.finish(job, 'cancelled', null);
      return 'removed';
    }
    handle.cancel();
    return 'stopping';
  }

  private finish(job: TrainJob, status: TrainJobStatus, error: string | null): void {
    if (job.ended_at) return;
    job.status = status;
    job.error = error;
    job.ended_at = new Date().toISOString();
    this.handles.delete(job.id);
    void this.persist(job);
  }

  /** Whether a queued or running job reads from `dir` (datasets in use cannot be deleted or replaced). */
  usesFolder(dir: string): boolean {
    for (const j of this.jobs.values()) {
      if ((j.status === 'queued' || j.status === 'running') && (isInside(dir, j.config.train_data_dir) || isInside(j.config.train_data_dir, dir))) return true;
    }
    return false;
  }

  /** A queued or running job that will write `<output_name>.safetensors` into the LoRA folder. */
  activeWithName(name: string): TrainJob | undefined {
    return this.list().find((j) => (j.status === 'queued' || j.status === 'running') && j.outputs.lora_name === name);
  }

  private log(job: TrainJob, message: string): void {
    job.logs.push(message);
    if (job.logs.length > MAX_LOG_LINES) job.logs.splice(0, job.logs.length - MAX_LOG_LINES);
    this.emit('train-log', { id: job.id, message, time: new Date().toISOString() });
  }

  private async run(job: TrainJob, prepared: PreparedTraining, c: JobContext): Promise<TrainResult> {
    job.status = 'running';
    job.started_at = new Date().toISOString();
    void this.persist(job);
    const t0 = Date.now();
    c.progress({ step: 0, total: 0, jobNo: 0, jobCount: 1, textinfo: `Training ${job.outputs.lora_name}: loading`, preview: null });
    const onEvent = (e: TrainEvent): void => {
      switch (e.type) {
        case 'progress': {
          const { type: _t, ...p } = e;
          job.progress = progressEvent(job.id, p);
          const last = job.loss_history.at(-1);
          if (p.phase === 'training' && p.loss !== undefined && (!last || p.step > last.step)) {
            job.loss_history.push({
              step: p.step,
              epoch: p.epoch,
              loss: p.loss,
              lossAverage: p.lossAverage ?? null,
              lrs: p.lrs ?? {},
              gradNorm: p.gradNorm ?? null,
              time: (Date.now() - t0) / 1000,
            });
          }
          if (p.phase === 'caching') c.progress({ step: p.done ?? 0, total: p.todo ?? 0, textinfo: textinfo(job, p) });
          else c.progress({ step: p.step, total: p.totalSteps, textinfo: textinfo(job, p) });
          this.emit('train-progress', job.progress);
          break;
        }
        case 'log':
          this.log(job, e.message);
          break;
        case 'saved':
          if (e.kind === 'state') {
            job.outputs.states.push(e.path);
            job.outputs.last_state = e.path;
          } else if (e.kind !== 'final') job.outputs.intermediate.push(e.path);
          void this.persist(job);
          break;
        case 'validation':
          job.validation.push({ step: e.step, loss: e.loss });
          break;
        case 'sample':
          job.outputs.samples.push({ step: e.step, path: e.path, prompt: e.prompt });
          break;
      }
    };
    try {
      const settings = trainingSettings(this.ctx);
      const result = await this.thread.train(prepared.config, { signal: c.signal, onEvent, dataset: prepared.dataset, threads: settings.threads });
      job.result = result;
      if (result.statePath) job.outputs.last_state = result.statePath;
      if (result.outputPath && (await isLlmModelFolder(job.config.base_model))) {
        // An LLM adapter folder goes to models/LLM-adapters/<output_name>/, where the /v1 routes find it.
        const target = join(llmService(this.ctx).adaptersDir, job.config.output_name);
        for (const f of [ADAPTER_CONFIG, ADAPTER_WEIGHTS]) await writeBufferAtomic(join(target, f), await readFile(join(result.outputPath, f)));
        job.outputs.lora = target;
        this.log(job, `adapter ready: ${target} (use "adapters": [{"name": "${job.config.output_name}", "weight": 1}] on /v1/completions)`);
      } else if (result.outputPath) {
        const target = join(this.ctx.layout.loraDir, `${job.config.output_name}.safetensors`);
        await writeBufferAtomic(target, await readFile(result.outputPath));
        job.outputs.lora = target;
        // A1111's cards (and the browser UI's picker) show <name>.preview.png: the run's last sample image.
        const sample = job.outputs.samples.at(-1)?.path;
        if (sample) await readFile(sample).then((png) => writeBufferAtomic(join(this.ctx.layout.loraDir, `${job.config.output_name}.preview.png`), png)).catch(() => {});
        await this.ctx.loras.refresh();
        this.log(job, `LoRA ready: ${target} (use <lora:${job.config.output_name}:1>)`);
      }
      this.finish(job, result.outputPath ? 'done' : 'cancelled', null);
      return result;
    } catch (e) {
      if (!isUserError(e)) this.ctx.log(`training ${job.id} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      this.finish(job, 'failed', e instanceof Error ? e.message : String(e));
      throw e;
    }
  }

  private readonly writes = new Map<string, Promise<void>>();

  /**
   * The job's record beside its files (`job.json`), so it outlives the server process: written when queued,
   * when it starts, at every saved state and when it ends. Writes of one job run in order, each atomic.
   */
  private persist(job: TrainJob): Promise<void> {
    const text = JSON.stringify(job, null, 2) + '\n';
    const path = join(job.outputs.work_dir, 'job.json');
    const next = (this.writes.get(job.id) ?? Promise.resolve())
      .then(() => writeBufferAtomic(path, text))
      .catch((e: unknown) => this.ctx.log(`could not write ${path}: ${(e as Error).message}`));
    this.writes.set(job.id, next);
    void next.then(() => {
      if (this.writes.get(job.id) === next) this.writes.delete(job.id);
    });
    return next;
  }

  /** Resolves once every record written so far is on disk. */
  async flushed(): Promise<void> {
    await Promise.all([...this.writes.values()]);
  }

  /** Ends the training thread (the server is closing; its queue has already stopped the running job). */
  close(): Promise<void> {
    return this.thread.close();
  }
}

const perServer = new WeakMap<ServerContext, TrainingRegistry>();

/** Ends the training thread of this server's registry, if it has one. */
export async function closeTraining(ctx: ServerContext): Promise<void> {
  await perServer.get(ctx)?.close();
}

/** The one registry of this server (routes and the socket.io bridge share it). */
export function trainingRegistry(ctx: ServerContext): TrainingRegistry {
  let r = perServer.get(ctx);
  if (!r) {
    r = new TrainingRegistry(ctx);
    perServer.set(ctx, r);
  }
  return r;
}
