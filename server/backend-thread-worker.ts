/**
 * The generation thread's side of server/backend-thread.ts: the engine backend (server/engine-backend.ts) as
 * it is, driven by the exported functions below, which the main thread calls through the engine's WorkerPool.
 *
 * A call brings everything the thread must hold, so a thread that was replaced after a crash catches up on its
 * own: the backend settings, the checkpoint the main thread believes loaded (loaded here when it is not), and
 * the version of the main thread's embedding library (this thread's own copy is refreshed when it moved on).
 */
import type { MessagePort } from 'node:worker_threads';
import { EmbeddingLibrary } from '../engine/sd/embeddings.ts';
import type { CheckpointRef, GenerationBackend, GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, RawImage, StopRequest, VaeRef } from './backend.ts';
import { createEngineBackend, type EngineBackendOptions } from './engine-backend.ts';

/** The engine backend's options as they cross threads: the embeddings as a folder instead of a library object. */
export interface ThreadBackendSettings extends Omit<EngineBackendOptions, 'embeddings'> {
  embeddingsDir: string | null;
}

/** What a call needs besides its own arguments. */
export interface ThreadState {
  settings: ThreadBackendSettings;
  /** `version` of the main thread's EmbeddingLibrary: this thread rescans the folder when it changed. */
  embeddingsVersion: number;
  /** The checkpoint and VAE the main thread loaded last, or null. */
  model: { ckpt: CheckpointRef; vae: VaeRef | null } | null;
}

/** Messages of one generation's port, thread → main: each step (with a preview image when one was wanted), then `done`. */
export type StepMessage = { type: 'step'; step: number; total: number; image?: RawImage } | { type: 'done' };

/** Slots of the Int32Array over a SharedArrayBuffer that the main thread writes while a generation runs. */
export const FLAG = { stop: 0, previewWanted: 1 } as const;
/** Values of the stop slot. */
export const STOP_CODES: readonly (StopRequest | null)[] = [null, 'interrupt', 'skip'];

let backend: GenerationBackend | null = null;
let settingsKey = '';
let library: EmbeddingLibrary | null = null;
let seenEmbeddings = Number.NaN;
let loaded: { path: string; vae: string | null } | null = null;

async function engine(s: ThreadState): Promise<GenerationBackend> {
  const key = JSON.stringify(s.settings);
  if (!backend || key !== settingsKey) {
    const { embeddingsDir, ...opts } = s.settings;
    library = embeddingsDir ? new EmbeddingLibrary(embeddingsDir) : null;
    backend = createEngineBackend({ ...opts, ...(library ? { embeddings: library } : {}) });
    settingsKey = key;
    seenEmbeddings = Number.NaN;
    loaded = null;
  }
  if (library && seenEmbeddings !== s.embeddingsVersion) {
    await library.refresh();
    seenEmbeddings = s.embeddingsVersion;
  }
  return backend;
}

async function ensureModel(b: GenerationBackend, model: ThreadState['model']): Promise<void> {
  if (!model) throw new Error('no checkpoint loaded');
  if (loaded?.path === model.ckpt.path && loaded.vae === (model.vae?.path ?? null)) return;
  await loadInto(b, model.ckpt, model.vae);
}

async function loadInto(b: GenerationBackend, ckpt: CheckpointRef, vae: VaeRef | null): Promise<void> {
  loaded = null;
  await b.loadCheckpoint(ckpt, vae);
  loaded = { path: ckpt.path, vae: vae?.path ?? null };
}

/** Loads a checkpoint; answers the text width the embeddings must have for it (the main library's `expectedShape`). */
export async function load(s: ThreadState, ckpt: CheckpointRef, vae: VaeRef | null): Promise<{ embeddingShape: number }> {
  const b = await engine(s);
  await loadInto(b, ckpt, vae);
  return { embeddingShape: library?.expectedShape ?? -1 };
}

/** A view that owns its buffer can be transferred; anything else is copied first. */
function ownBuffer(data: Uint8Array): Uint8Array {
  return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer ? data : data.slice();
}

/**
 * One txt2img / img2img call. Steps go to the main thread as they happen. A preview is rendered only when the
 * main thread has asked for one since the last step (this thread cannot answer a request while it is inside
 * ONNX Runtime, so the ask is a flag and the image rides on the next step report). `flags[FLAG.stop]` is read
 * before every model call: the main thread writes interrupt / skip there while this thread is busy.
 */
export async function generate(s: ThreadState, kind: 'txt2img' | 'img2img', params: GenerationParams | Img2ImgParams, port: MessagePort, flags: Int32Array): Promise<GenerationOutput> {
  // Reports leave in step order: a step waiting for its preview holds back the later ones.
  let sent: Promise<void> = Promise.resolve();
  const hooks: GenerationHooks = {
    onStep(step, total, preview) {
      const render = preview && Atomics.exchange(flags, FLAG.previewWanted, 0) === 1 ? preview() : null;
      sent = sent.then(async () => {
        const im = render ? await render.catch(() => null) : null;
        const image = im ? { ...im, data: ownBuffer(im.data) } : undefined;
        port.postMessage({ type: 'step', step, total, ...(image ? { image } : {}) } satisfies StepMessage, image ? [image.data.buffer as ArrayBuffer] : []);
      });
    },
    shouldStop: () => STOP_CODES[Atomics.load(flags, FLAG.stop)] ?? null,
  };
  try {
    const b = await engine(s);
    await ensureModel(b, s.model);
    const out = kind === 'txt2img' ? await b.txt2img(params, hooks) : await b.img2img(params as Img2ImgParams, hooks);
    // The images and latents go back by transfer (the pool moves every buffer of the result): each must own its buffer.
    return { ...out, images: out.images.map((im) => ({ ...im, data: ownBuffer(im.data) })), ...(out.latents ? { latents: { ...out.latents, data: out.latents.data.slice() } } : {}) };
  } finally {
    await sent;
    port.postMessage({ type: 'done' } satisfies StepMessage);
    port.close();
  }
}
