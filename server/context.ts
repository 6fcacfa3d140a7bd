/** Everything a route module needs, built once by `createServer` and passed to each `register(router, ctx)`. */
import type { EventEmitter } from 'node:events';
import type { GenerationBackend } from './backend.ts';
import type { CheckpointManager } from './checkpoints.ts';
import type { ImagePolicy } from './images.ts';
import type { WorkLimits } from './limits.ts';
import type { LoraIndex } from './loras.ts';
import type { ModelIndex } from './models.ts';
import type { OptionsStore } from './options.ts';
import type { PreviewCache } from './progress.ts';
import type { JobQueue } from './queue.ts';
import type { UpscalerLibrary } from '../engine/upscale/upscalers.ts';
import type { EmbeddingLibrary } from '../engine/sd/embeddings.ts';
import type { EndedJob } from './distributed/front-queue.ts';

/**
 * The public members of the in-process JobQueue; the Redis front (server/distributed/front-queue.ts) has the
 * same, and `endedJob`: how a job ended while this process was not running (a queue shared with workers
 * remembers; the in-process one forgets with its process).
 */
export type WorkQueue = { [K in Exclude<keyof JobQueue, keyof EventEmitter>]: JobQueue[K] } & Pick<EventEmitter, 'on' | 'off' | 'once' | 'emit'> & { endedJob?(id: string): Promise<EndedJob | null> };

export interface Layout {
  dataDir: string;
  ckptDir: string;
  loraDir: string;
  vaeDir: string;
  /** ESRGAN-family upscaler models (A1111 `--esrgan-models-path`). */
  esrganDir: string;
  /** Textual-inversion embeddings (A1111 `--embeddings-dir`). */
  embeddingsDir: string;
  outputsDir: string;
  /** `<data-dir>/config.json` (options). */
  configPath: string;
  /** `<data-dir>/cache.json` (file hashes). */
  cachePath: string;
  /** `<data-dir>/styles.csv` (A1111 prompt styles: name,prompt,negative_prompt). */
  stylesPath: string;
}

export interface ServerContext {
  layout: Layout;
  options: OptionsStore;
  backend: GenerationBackend;
  models: ModelIndex;
  loras: LoraIndex;
  /** Built-in and ESRGAN upscalers (`/sdapi/v1/upscalers`, extras). */
  upscalers: UpscalerLibrary;
  /** Textual-inversion embeddings (`/sdapi/v1/embeddings`); the loaded model uses them in prompts. */
  embeddings: EmbeddingLibrary;
  checkpoints: CheckpointManager;
  queue: WorkQueue;
  previews: PreviewCache;
  imagePolicy(): ImagePolicy;
  /** Caps on the work one request may ask for (server/limits.ts). */
  limits: WorkLimits;
  /** `/sdapi/v1/cmd-flags` (secrets redacted). */
  cmdFlags: Record<string, unknown>;
  /** Program version for infotexts and `info.version`. */
  version: string;
  log(msg: string): void;
}
