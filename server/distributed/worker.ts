/**
 * `lora-scripts worker --queue redis://…`: takes jobs from the shared BullMQ queue and runs them with the
 * same code as the single process (runGeneration, the training registry), each in a local JobQueue so that
 * progress, previews, interrupt and skip behave exactly as there.
 *
 * - `concurrency` slots, each with its own engine backend (its own loaded checkpoint and merged LoRA stack).
 * - Every second the worker announces itself (`WorkerAnnouncement`, with a TTL): labels, device, free memory,
 *   the checkpoints and LoRAs it sees, and what each slot holds, so fronts can prefer it for matching jobs.
 * - A job pinned to a label it lacks, or one preferring another worker that is idle now, goes back to the
 *   queue for a moment (BullMQ's delayed state) instead of running here.
 * - The lock on a running job is renewed by BullMQ; when the process dies (kill -9) the lock expires after
 *   `stallTimeoutMs` and another worker's stall check puts the job back in the queue.
 */
import { randomBytes } from 'node:crypto';
import { freemem, hostname, totalmem, tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { rm } from 'node:fs/promises';
import { DelayedError, Worker, type Job as BullJob } from 'bullmq';
import { Redis } from 'ioredis';
import { VERSION, resolveLayout } from '../app.ts';
import { CheckpointManager } from '../checkpoints.ts';
import type { ServerContext } from '../context.ts';
import { createThreadBackend, type ThreadBackend } from '../backend-thread.ts';
import { HashCache } from '../../engine/util/hash-cache.ts';
import type { ImagePolicy } from '../images.ts';
import { resolveLimits } from '../limits.ts';
import { LoraIndex } from '../loras.ts';
import { ModelIndex } from '../models.ts';
import { OptionsStore } from '../options.ts';
import { UpscalerLibrary } from '../../engine/upscale/upscalers.ts';
import { EmbeddingLibrary } from '../../engine/sd/embeddings.ts';
import { PreviewCache } from '../progress.ts';
import { JobQueue, type RunningState } from '../queue.ts';
import { closeTraining } from '../training.ts';
import { handlers } from './handlers.ts';
import { CONTROL_CHANNEL, KEY_PREFIX, QUEUE_NAME, toWireError, toWireImage, workerKey, type ControlMessage, type JobAnswer, type JobEnvelope, type WireState, type WorkerAnnouncement } from './protocol.ts';
import type { RedisTarget } from './redis-url.ts';

export interface WorkerOptions {
  target: RedisTarget;
  /** The shared data folder (models, LoRAs, datasets, training) as this machine mounts it. */
  dataDir?: string;
  ckptDir?: string;
  loraDir?: string;
  vaeDir?: string;
  device?: string;
  tokenizerDir?: string;
  lowMemory?: boolean;
  /** ONNX Runtime intra-op threads per slot (default: all cores). */
  threads?: number;
  concurrency?: number;
  /** Training jobs pinned to a label run only on workers that carry it. */
  labels?: string[];
  /** How long a job stays locked to a worker that stopped answering (default DEFAULT_STALL_MS). */
  stallTimeoutMs?: number;
  id?: string;
  log?: (msg: string) => void;
}

export interface RunningWorker {
  id: string;
  /** Resolves once the worker has stopped: its running jobs end first (interrupted when `force`). */
  close(force?: boolean): Promise<void>;
}

interface Slot {
  ctx: ServerContext;
  /** The slot's generation thread (ended when the worker closes). */
  backend: ThreadBackend;
  busy: boolean;
  /** LoRA stacks this slot's weights hold or held last (the engine keeps the merged stack). */
  stacks: string[];
}

const ANNOUNCE_MS = 1000;
/**
 * BullMQ renews a job's lock from this process's event loop, which model loading blocks for a while (seconds
 * for small models, more for SD 1.5 on a slow CPU): the stall timeout must be longer than such a pause.
 */
export const DEFAULT_STALL_MS = 120_000;
/** How long a job put back for a better-placed worker waits, and how long this worker then leaves it alone. */
const DEFER_MS = 50;
const DEFER_PAUSE_MS = 400;
/** How often a job pinned to a label comes back to be looked at by the free workers. */
const LABEL_RETRY_MS = 1000;

async function slotContext(opts: WorkerOptions, shared: { models: ModelIndex; loras: LoraIndex }, optionsPath: string, log: (m: string) => void): Promise<{ ctx: ServerContext; backend: ThreadBackend }> {
  const layout = resolveLayout(opts);
  const options = await OptionsStore.load(optionsPath);
  // The worker's own view of the shared embeddings folder, read when its slot starts.
  const embeddings = new EmbeddingLibrary(layout.embeddingsDir);
  (await embeddings.refresh()).forEach((msg) => log(msg));
  // A worker never writes the shared config.json: a save asked for by a job is carried back to its front.
  options.save = async () => {};
  // Each slot generates on its own thread: this process's loop keeps renewing job locks, announcing and
  // hearing interrupts while ONNX Runtime runs, and the slots run at the same time.
  const backend = createThreadBackend({
    device: opts.device ?? 'cpu',
    tokenizer: opts.tokenizerDir ? resolve(layout.dataDir, opts.tokenizerDir) : undefined,
    fallbackTokenizerDirs: [join(dirname(layout.ckptDir), 'tokenizer'), join(layout.dataDir, 'models/tokenizer')],
    lowMemory: opts.lowMemory,
    threads: opts.threads,
    embeddings,
  });
  const checkpoints = new CheckpointManager(backend, shared.models, options, log);
  const ctx: ServerContext = {
    layout,
    options,
    backend,
    models: shared.models,
    loras: shared.loras,
    // Extras run on the front; a worker never lists or runs upscalers.
    upscalers: new UpscalerLibrary(layout.esrganDir),
    embeddings,
    checkpoints,
    queue: new JobQueue(),
    previews: new PreviewCache(),
    // Images arrive decoded by the front; a worker fetches nothing.
    imagePolicy: (): ImagePolicy => ({ allowUrls: false, forbidLocal: true, userAgent: '', maxPixels: 64 * 1024 * 1024, maxDownloadBytes: 0 }),
    cmdFlags: { data_dir: layout.dataDir, device: opts.device ?? 'cpu', backend: backend.description },
    // The front checked the request against its limits; these defaults guard what the worker validates again.
    limits: resolveLimits(),
    version: VERSION,
    log,
  };
  return { ctx, backend };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function startWorker(opts: WorkerOptions): Promise<RunningWorker> {
  const log = opts.log ?? ((m: string) => console.log(m));
  const id = opts.id ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const labels = opts.labels ?? [];
  const concurrency = Math.max(1, opts.concurrency ?? 1);
  const layout = resolveLayout(opts);
  const hashes = new HashCache(layout.cachePath);
  const models = new ModelIndex(layout.ckptDir, layout.vaeDir, hashes);
  const loras = new LoraIndex(layout.loraDir, hashes);
  await Promise.all([models.refreshCheckpoints(), models.refreshVaes(), loras.refresh()]);
  const optionsPath = join(tmpdir(), `lora-scripts-worker-${id}-options.json`);
  const slots: Slot[] = [];
  for (let i = 0; i < concurrency; i++) slots.push({ ...(await slotContext(opts, { models, loras }, optionsPath, log)), busy: false, stacks: [] });

  const connection = opts.target.options;
  const redis = new Redis(connection);
  const sub = new Redis(connection);
  for (const c of [redis, sub]) c.on('error', (e: Error) => log(`redis: ${e.message}`));
  try {
    await redis.ping();
  } catch (e) {
    redis.disconnect();
    sub.disconnect();
    throw new Error(`cannot reach Redis at ${opts.target.display}: ${(e as Error).message}`);
  }

  const announcement = (): WorkerAnnouncement => ({
    id,
    host: hostname(),
    pid: process.pid,
    labels,
    device: opts.device ?? 'cpu',
    concurrency,
    busy: slots.filter((s) => s.busy).length,
    freeMemBytes: freemem(),
    totalMemBytes: totalmem(),
    checkpoints: models.checkpoints().map((c) => c.name),
    loras: loras.list().map((l) => l.name),
    loaded: slots.map((s) => ({ checkpoint: s.ctx.backend.currentCheckpoint()?.name ?? null, stacks: s.stacks })),
    at: Date.now(),
  });
  const announce = () => redis.set(workerKey(id), JSON.stringify(announcement()), 'PX', ANNOUNCE_MS * 5).catch(() => {});
  await announce();
  const announcer = setInterval(() => void announce(), ANNOUNCE_MS);

  const peers = async (): Promise<WorkerAnnouncement[]> => {
    const keys = await redis.keys(`${KEY_PREFIX}:worker:*`);
    const values = keys.length ? await redis.mget(...keys) : [];
    return values.filter((v): v is string => v !== null).map((v) => JSON.parse(v) as WorkerAnnouncement);
  };

  /** Whether this job prefers another worker that is idle now (asked once per job, so it never bounces). */
  const preferredElsewhere = async (env: JobEnvelope, job: BullJob): Promise<boolean> => {
    if (env.prefer === null || env.prefer === id || (job.data as { deferred?: boolean }).deferred) return false;
    const peer = (await peers()).find((p) => p.id === env.prefer);
    if (!peer || peer.busy >= peer.concurrency) return false;
    await job.updateData({ ...env, deferred: true });
    return true;
  };

  sub.on('message', (_channel: string, text: string) => {
    let msg: ControlMessage;
    try {
      msg = JSON.parse(text) as ControlMessage;
    } catch {
      return;
    }
    for (const s of slots) {
      if (s.ctx.queue.current()?.id !== msg.id) continue;
      if (msg.action === 'skip') s.ctx.queue.skip();
      else if (msg.action === 'interrupt') s.ctx.queue.interrupt();
      else s.ctx.queue.cancel(msg.id);
    }
  });
  await sub.subscribe(CONTROL_CHANNEL);

  const runOn = async (slot: Slot, env: JobEnvelope, job: BullJob, signal: AbortSignal | undefined): Promise<JobAnswer> => {
    const handler = handlers[env.handler];
    if (!handler) return { ok: false, worker: id, error: { type: 'bug', name: 'Error', message: `this worker has no handler '${env.handler}' (a newer front?)` } };
    const { ctx } = slot;
    for (const [k, v] of Object.entries(env.options)) ctx.options.setInternal(k, v as never);
    const before = JSON.stringify(env.options);
    let saveOptions = false;
    ctx.options.save = async () => {
      saveOptions = true;
    };

    // Progress reports go out in order; a preview is rendered when the front's options would show one.
    let chain: Promise<void> = Promise.resolve();
    const report = (s: Readonly<RunningState>) => {
      const snap = { ...s };
      const every = Number(env.options['show_progress_every_n_steps']);
      const wantPreview = Boolean(env.options['live_previews_enable']) && every > 0 && snap.step > 0 && snap.step % every === 0 && snap.preview !== null;
      const withExtra = handler.extra ? structuredClone(handler.extra(ctx, env)) : undefined;
      chain = chain.then(async () => {
        const preview = wantPreview ? toWireImage(await snap.preview!()) : null;
        const wire: WireState = { ...snap, preview, worker: id, ...(withExtra !== undefined ? { extra: withExtra } : {}) };
        await job.updateProgress(wire as never);
      }).catch((e: unknown) => log(`could not report progress of ${env.id}: ${(e as Error).message}`));
    };
    const q = ctx.queue;
    const onStart = (s: RunningState) => report(s);
    const onProgress = (s: RunningState) => report(s);
    q.on('start', onStart);
    q.on('progress', onProgress);
    const onAbort = () => q.cancel(env.id);
    signal?.addEventListener('abort', onAbort);
    try {
      const value = await (await handler.start(ctx, env)).done;
      const stack = handler.stack?.(env);
      if (stack !== undefined) slot.stacks = [stack];
      const after = ctx.options.all();
      const original = JSON.parse(before) as Record<string, unknown>;
      const optionChanges: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(after)) if (JSON.stringify(original[k]) !== JSON.stringify(v)) optionChanges[k] = v;
      return { ok: true, worker: id, value, optionChanges, saveOptions };
    } catch (e) {
      return { ok: false, worker: id, error: toWireError(e) };
    } finally {
      q.off('start', onStart);
      q.off('progress', onProgress);
      signal?.removeEventListener('abort', onAbort);
      await chain;
    }
  };

  const stall = opts.stallTimeoutMs ?? DEFAULT_STALL_MS;
  const worker = new Worker(
    QUEUE_NAME,
    async (job: BullJob, token?: string, signal?: AbortSignal) => {
      const env = job.data as JobEnvelope;
      if (env.label !== null && !labels.includes(env.label)) {
        // Pinned to workers this one is not: look again later, whoever is free then.
        await job.moveToDelayed(Date.now() + LABEL_RETRY_MS, token);
        throw new DelayedError();
      }
      if (await preferredElsewhere(env, job)) {
        await job.moveToDelayed(Date.now() + DEFER_MS, token);
        // Stay out of the way for a moment so the better-placed worker takes it.
        await sleep(DEFER_PAUSE_MS);
        throw new DelayedError();
      }
      const slot = slots.find((s) => !s.busy);
      if (!slot) throw new Error('no free slot (BullMQ ran more jobs than the concurrency)');
      slot.busy = true;
      void announce();
      try {
        log(`job ${env.id} (${env.kind}) started`);
        const answer = await runOn(slot, env, job, signal);
        log(`job ${env.id} ${answer.ok ? 'done' : `ended: ${answer.error.type === 'bug' ? answer.error.message : answer.error.type}`}`);
        return answer;
      } finally {
        slot.busy = false;
        void announce();
      }
    },
    {
      connection,
      prefix: KEY_PREFIX,
      concurrency,
      lockDuration: stall,
      stalledInterval: Math.max(500, Math.round(stall / 2)),
      // A job whose worker died is retried on another; one that keeps killing workers fails instead of looping.
      maxStalledCount: 2,
      autorun: true,
    },
  );
  worker.on('error', (e) => log(`worker: ${e.message}`));
  // A lock that could not be renewed in time (the event loop was blocked longer than the stall timeout, e.g.
  // building a large model's sessions) may already have let another worker take the job: stop ours.
  worker.on('lockRenewalFailed', (ids: string[]) => {
    for (const jobId of ids) if (worker.cancelJob(jobId, 'lost the job lock')) log(`lost the lock on ${jobId}: another worker may run it now; stopping here`);
  });
  await worker.waitUntilReady();
  log(`worker ${id} on ${opts.target.display}: ${concurrency} slot(s), device ${opts.device ?? 'cpu'}${labels.length ? `, labels ${labels.join(',')}` : ''}; ${models.checkpoints().length} checkpoint(s), ${loras.list().length} LoRA(s) in ${layout.dataDir}`);

  let closing: Promise<void> | null = null;
  return {
    id,
    close: (force = false) =>
      (closing ??= (async () => {
        clearInterval(announcer);
        if (force) for (const s of slots) s.ctx.queue.interrupt();
        await worker.close(force);
        for (const s of slots) {
          await s.ctx.queue.close();
          await s.backend.close();
          await closeTraining(s.ctx);
        }
        await redis.del(workerKey(id)).catch(() => {});
        redis.disconnect();
        sub.disconnect();
        await rm(optionsPath, { force: true });
      })()),
  };
}
