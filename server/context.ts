/** Everything a route module needs, built once by `createServer` and passed to each `register(router, ctx)`. */
import type { GenerationBackend } from './backend.ts';
import type { CheckpointManager } from './checkpoints.ts';
import type { ImagePolicy } from './images.ts';
import type { LoraIndex } from './loras.ts';
import type { ModelIndex } from './models.ts';
import type { OptionsStore } from './options.ts';
import type { PreviewCache } from './progress.ts';
import type { JobQueue } from './queue.ts';

export interface Layout {
  dataDir: string;
  ckptDir: string;
  loraDir: string;
  vaeDir: string;
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
  checkpoints: CheckpointManager;
  queue: JobQueue;
  previews: PreviewCache;
  imagePolicy(): ImagePolicy;
  /** `/sdapi/v1/cmd-flags` (secrets redacted). */
  cmdFlags: Record<string, unknown>;
  /** Program version for infotexts and `info.version`. */
  version: string;
  log(msg: string): void;
}
