/**
 * The backend `serve` uses: the engine backend (server/engine-backend.ts) hosted on a worker thread, behind
 * the same GenerationBackend interface. ONNX Runtime's `run` and session creation are synchronous native
 * calls, so on the main thread every UNet / VAE / text-encoder call of a generation held the HTTP loop for
 * its whole duration (seconds per step at 512²); here they hold the generation thread only, and progress,
 * interrupt and every other route keep answering.
 *
 * How the interface crosses (server/backend-thread-worker.ts is the other side):
 * - each call runs an exported function of the worker module through the engine's WorkerPool (one thread);
 *   errors reach the client as server/thread-errors.ts says (a UserError stays a 4xx);
 * - a generation gets a MessagePort: the thread reports every step on it;
 * - the thread is inside ONNX Runtime most of the time and cannot answer a message then, so the main thread
 *   talks to it through a SharedArrayBuffer (Atomics): the stop request (interrupt / skip, read before every
 *   model call; the main thread copies the hooks' answer there on every step and every few milliseconds),
 *   and "a preview is wanted", after which the next step's report carries a preview image (transferred);
 *   until it arrives a client gets the newest one, so /progress never waits for a step;
 * - input images are copied to the thread (the server keeps using them for overlays); output images and
 *   latents come back by transfer;
 * - a thread that dies (out of memory, terminated) fails the running call with a 500 naming what happened;
 *   the next call starts a fresh thread, which loads the checkpoint the main thread had loaded by itself;
 * - `unload` ends the thread, which frees everything it held (weights, ONNX Runtime sessions and arenas);
 *   `close` does too, and the server calls it when it closes. Both wait until the thread is idle (a running
 *   generation is interrupted first): a thread terminated inside an ONNX Runtime call takes the process down.
 */
import { MessageChannel } from 'node:worker_threads';
import { SAMPLERS as ENGINE_SAMPLERS } from '../engine/sampling/registry.ts';
import { WorkerPool } from '../engine/util/worker-pool.ts';
import type { CheckpointRef, GenerationBackend, GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, RawImage, VaeRef } from './backend.ts';
import { FLAG, STOP_CODES, type StepMessage, type ThreadBackendSettings, type ThreadState } from './backend-thread-worker.ts';
import type { EngineBackendOptions } from './engine-backend.ts';
import { fromThread } from './thread-errors.ts';

/** How often the main thread copies the hooks' stop request into the shared flag while a call runs. */
const STOP_POLL_MS = 20;
const INTERRUPT = STOP_CODES.indexOf('interrupt');

export interface ThreadBackend extends GenerationBackend {
  close(): Promise<void>;
}

export function createThreadBackend(opts: EngineBackendOptions): ThreadBackend {
  const { embeddings, ...rest } = opts;
  const settings: ThreadBackendSettings = { ...rest, embeddingsDir: embeddings?.dir ?? null };
  const pool = new WorkerPool(new URL('./backend-thread-worker.ts', import.meta.url).href, 'generation', { size: 1 });
  let model: ThreadState['model'] = null;
  const state = (): ThreadState => ({ settings, embeddingsVersion: embeddings?.version ?? 0, model });

  // The call in flight and its stop flags: the thread is ended only once it is idle (see `stop`).
  let inflight: Promise<unknown> | null = null;
  let runningFlags: Int32Array | null = null;
  const call = async <T>(fn: string, args: unknown[], transfer: Parameters<WorkerPool['run']>[2] = []): Promise<T> => {
    const run = pool.run<T>(fn, [state(), ...args], transfer);
    inflight = run;
    try {
      return await run;
    } catch (e) {
      throw fromThread(e, 'generation', 'the next one starts a new thread and reloads the checkpoint');
    } finally {
      if (inflight === run) inflight = null;
    }
  };
  /**
   * Ends the thread once it is idle: a running generation is interrupted and waited for first, because
   * terminating a thread inside an ONNX Runtime call aborts the whole process (onnxruntime-node's binding
   * throws a C++ exception while the thread is torn down).
   */
  const stop = async (): Promise<void> => {
    while (inflight) {
      if (runningFlags) Atomics.store(runningFlags, FLAG.stop, INTERRUPT);
      await inflight.catch(() => {});
    }
    await pool.close();
  };

  const generate = async (kind: 'txt2img' | 'img2img', params: GenerationParams | Img2ImgParams, hooks: GenerationHooks): Promise<GenerationOutput> => {
    if (!model) throw new Error('no checkpoint loaded');
    const { port1: mine, port2: theirs } = new MessageChannel();
    const flags = new Int32Array(new SharedArrayBuffer(4 * 2));
    runningFlags = flags;
    // An interrupt stays (the queue never takes one back, and `stop` writes its own); skip follows the hooks.
    const syncStop = () => Atomics.load(flags, FLAG.stop) === INTERRUPT || Atomics.store(flags, FLAG.stop, Math.max(0, STOP_CODES.indexOf(hooks.shouldStop())));
    const poll = setInterval(syncStop, STOP_POLL_MS);
    poll.unref();
    // The newest preview image, and asks that came before there was any.
    let latest: RawImage | null = null;
    let ended = false;
    let waiting: { resolve: (im: RawImage) => void; reject: (e: Error) => void }[] = [];
    const previewNow = (): Promise<RawImage> => {
      // The next step renders one; until it arrives the newest one answers (A1111's live preview lags the same way).
      Atomics.store(flags, FLAG.previewWanted, 1);
      if (latest) return Promise.resolve(latest);
      if (ended) return Promise.reject(new Error('the generation has ended'));
      return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
    };
    // Steps arrive on the port, the result through the pool: the result waits for the last step report.
    let drained!: () => void;
    const reported = new Promise<void>((r) => (drained = r));
    const finish = () => {
      ended = true;
      drained();
      for (const w of waiting) w.reject(new Error('the generation has ended'));
      waiting = [];
    };
    mine.on('message', (m: StepMessage) => {
      if (m.type === 'done') return finish();
      syncStop();
      const image = m.image;
      if (image) {
        latest = image;
        for (const w of waiting) w.resolve(image);
        waiting = [];
      }
      hooks.onStep(m.step, m.total, image ? async () => image : previewNow);
    });
    mine.on('close', finish);
    try {
      syncStop();
      const out = await call<GenerationOutput>('generate', [kind, params, theirs, flags], [theirs]);
      await reported;
      return out;
    } finally {
      if (runningFlags === flags) runningFlags = null;
      clearInterval(poll);
      finish();
      mine.close();
    }
  };

  return {
    description: `onnxruntime ${opts.device}`,
    samplers: ENGINE_SAMPLERS.map((s) => s.name),
    async loadCheckpoint(ckpt, vae) {
      model = null;
      const { embeddingShape } = await call<{ embeddingShape: number }>('load', [ckpt, vae]);
      model = { ckpt, vae };
      // /sdapi/v1/embeddings splits the main thread's library by the loaded model's text width.
      if (embeddings && embeddingShape > 0) embeddings.expectedShape = embeddingShape;
    },
    async unload() {
      model = null;
      await stop();
    },
    currentCheckpoint: () => model?.ckpt ?? null,
    txt2img: (p, hooks) => generate('txt2img', p, hooks),
    img2img: (p, hooks) => generate('img2img', p, hooks),
    close: stop,
  };
}
