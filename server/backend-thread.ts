/**
 * The backend `serve` uses: the engine backend (server/engine-backend.ts) hosted on a worker thread, behind
 * the same GenerationBackend interface. ONNX Runtime's `run` and session creation are synchronous native
 * calls, so on the main thread every UNet / VAE / text-encoder call of a generation held the HTTP loop for
 * its whole duration (seconds per step at 512²); here they hold the generation thread only, and progress,
 * interrupt and every other route keep answering.
 *
 * How the interface crosses (server/backend-thread-worker.ts is the other side):
 * - each call runs an exported function of the worker module through the engine's WorkerPool (one thread);
 *   UserErrors arrive as UserErrors (4xx), other errors as plain Errors with their message (500);
 * - a generation gets a MessagePort: the thread reports every step on it, and the main thread asks it for a
 *   preview image only when a client wants one (the image comes back transferred);
 * - interrupt / skip: the thread is inside ONNX Runtime most of the time, so instead of a message it reads a
 *   SharedArrayBuffer flag (Atomics) before every model call; the main thread writes the hooks' answer there
 *   on every step and every few milliseconds while the call runs;
 * - input images are copied to the thread (the server keeps using them for overlays); output images and
 *   latents come back by transfer;
 * - a thread that dies (out of memory, terminated) fails the running call with a 500 naming what happened;
 *   the next call starts a fresh thread, which loads the checkpoint the main thread had loaded by itself;
 * - `unload` ends the thread, which frees everything it held (weights, ONNX Runtime sessions and arenas);
 *   `close` does too, and the server calls it when it closes.
 */
import { MessageChannel } from 'node:worker_threads';
import { SAMPLERS as ENGINE_SAMPLERS } from '../engine/sampling/registry.ts';
import { isUserError } from '../engine/util/errors.ts';
import { WorkerPool, WorkerStartError, WorkerTaskError } from '../engine/util/worker-pool.ts';
import type { CheckpointRef, GenerationBackend, GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, RawImage, VaeRef } from './backend.ts';
import { STOP_CODES, type PreviewAnswer, type PreviewAsk, type StepMessage, type ThreadBackendSettings, type ThreadState } from './backend-thread-worker.ts';
import type { EngineBackendOptions } from './engine-backend.ts';

/** How often the main thread copies the hooks' stop request into the shared flag while a call runs. */
const STOP_POLL_MS = 20;

export interface ThreadBackend extends GenerationBackend {
  close(): Promise<void>;
}

/** A worker-side failure as the server answers it: a UserError stays one; anything else is a plain 500 error. */
function asServerError(e: unknown): unknown {
  if (isUserError(e)) return e;
  if (e instanceof WorkerTaskError) return new Error(e.message);
  if (e instanceof WorkerStartError) return new Error(`the generation thread could not start: ${e.message}`);
  // Not an error thrown by the engine: the thread itself is gone.
  return new Error(`the generation thread stopped (${(e as Error)?.message ?? String(e)}); this job failed, the next one starts a new thread and reloads the checkpoint`);
}

export function createThreadBackend(opts: EngineBackendOptions): ThreadBackend {
  const { embeddings, ...rest } = opts;
  const settings: ThreadBackendSettings = { ...rest, embeddingsDir: embeddings?.dir ?? null };
  const pool = new WorkerPool(new URL('./backend-thread-worker.ts', import.meta.url).href, 'generation', { size: 1 });
  let model: ThreadState['model'] = null;
  const state = (): ThreadState => ({ settings, embeddingsVersion: embeddings?.version ?? 0, model });

  const call = async <T>(fn: string, args: unknown[], transfer: Parameters<WorkerPool['run']>[2] = []): Promise<T> => {
    try {
      return await pool.run<T>(fn, [state(), ...args], transfer);
    } catch (e) {
      throw asServerError(e);
    }
  };

  const generate = async (kind: 'txt2img' | 'img2img', params: GenerationParams | Img2ImgParams, hooks: GenerationHooks): Promise<GenerationOutput> => {
    if (!model) throw new Error('no checkpoint loaded');
    const { port1: mine, port2: theirs } = new MessageChannel();
    const stop = new Int32Array(new SharedArrayBuffer(4));
    const syncStop = () => Atomics.store(stop, 0, Math.max(0, STOP_CODES.indexOf(hooks.shouldStop())));
    const poll = setInterval(syncStop, STOP_POLL_MS);
    poll.unref();
    let ended = false;
    let nextAsk = 0;
    const asked = new Map<number, { resolve: (im: RawImage) => void; reject: (e: Error) => void }>();
    // Steps arrive on the port, the result through the pool: the result waits for the last step report.
    let drained!: () => void;
    const reported = new Promise<void>((r) => (drained = r));
    const previewOf = (step: number) => (): Promise<RawImage> =>
      new Promise<RawImage>((resolve, reject) => {
        // A port that is closed drops messages: a late ask would never be answered.
        if (ended) return reject(new Error('the generation has ended'));
        const id = nextAsk++;
        asked.set(id, { resolve, reject });
        mine.postMessage({ type: 'preview', id, step } satisfies PreviewAsk);
      });
    mine.on('message', (m: StepMessage | PreviewAnswer) => {
      if (m.type === 'step') {
        syncStop();
        hooks.onStep(m.step, m.total, m.preview ? previewOf(m.step) : undefined);
      } else if (m.type === 'preview') {
        const a = asked.get(m.id);
        asked.delete(m.id);
        if (m.image) a?.resolve(m.image);
        else a?.reject(new Error(m.error ?? 'no preview'));
      } else if (m.type === 'done') drained();
    });
    mine.on('close', () => {
      ended = true;
      drained();
      for (const a of asked.values()) a.reject(new Error('the generation has ended'));
      asked.clear();
    });
    try {
      syncStop();
      const out = await call<GenerationOutput>('generate', [kind, params, theirs, stop], [theirs]);
      await reported;
      return out;
    } finally {
      clearInterval(poll);
      ended = true;
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
      await pool.close();
    },
    currentCheckpoint: () => model?.ckpt ?? null,
    txt2img: (p, hooks) => generate('txt2img', p, hooks),
    img2img: (p, hooks) => generate('img2img', p, hooks),
    close: () => pool.close(),
  };
}
