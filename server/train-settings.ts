/**
 * Where training over the API may read and write, and how large dataset uploads may be.
 *
 * A training config names files the server then opens, so every path in a request is confined to a root
 * chosen by the operator: a client must not make the server read /etc/passwd as a caption table or write
 * its states over the checkpoints. The settings live beside the server context (one per server); defaults
 * come from environment variables because `serve` has no flags for them (see docs/server.md).
 */
import { delimiter, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { ServerContext } from './context.ts';

export interface TrainingSettings {
  /** `<data-dir>/datasets`: uploads land here; train_data_dir and metadata_path may point inside it. */
  datasetsDir: string;
  /** More folders a train_data_dir may point into (`LORA_SCRIPTS_DATASET_ROOTS`, separated like PATH). */
  extraDatasetRoots: string[];
  /** `<data-dir>/training`: one folder per job (states, logs, intermediate saves, samples) and the latent cache. */
  trainingDir: string;
  /** Largest file in an upload, after unzipping (`LORA_SCRIPTS_UPLOAD_MAX_FILE_MB`, default 64). */
  maxUploadFileBytes: number;
  /** Largest upload in total, and largest sum of unzipped sizes (`LORA_SCRIPTS_UPLOAD_MAX_TOTAL_MB`, default 1024). */
  maxUploadTotalBytes: number;
  /** Most files in one upload, zip entries included (`LORA_SCRIPTS_UPLOAD_MAX_FILES`, default 10000). */
  maxUploadFiles: number;
  /** Largest uploaded image in pixels (default 64 Mpx, as for generation inputs). */
  maxImagePixels: number;
  /** ONNX Runtime intra-op threads for training (`LORA_SCRIPTS_TRAIN_THREADS`; default: all cores). */
  threads?: number;
}

const MiB = 1024 * 1024;

function envNumber(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`environment variable ${name} must be a positive number, got '${v}'`);
  return n;
}

const perServer = new WeakMap<ServerContext, TrainingSettings>();

/** The settings of this server, created from the environment on first use; tests may change fields. */
export function trainingSettings(ctx: ServerContext): TrainingSettings {
  let s = perServer.get(ctx);
  if (!s) {
    const { dataDir } = ctx.layout;
    const threads = process.env['LORA_SCRIPTS_TRAIN_THREADS'];
    s = {
      datasetsDir: join(dataDir, 'datasets'),
      extraDatasetRoots: (process.env['LORA_SCRIPTS_DATASET_ROOTS'] ?? '')
        .split(delimiter)
        .filter((p) => p.trim() !== '')
        .map((p) => resolve(dataDir, p)),
      trainingDir: join(dataDir, 'training'),
      maxUploadFileBytes: Math.floor(envNumber('LORA_SCRIPTS_UPLOAD_MAX_FILE_MB', 64) * MiB),
      maxUploadTotalBytes: Math.floor(envNumber('LORA_SCRIPTS_UPLOAD_MAX_TOTAL_MB', 1024) * MiB),
      maxUploadFiles: Math.floor(envNumber('LORA_SCRIPTS_UPLOAD_MAX_FILES', 10000)),
      maxImagePixels: 64 * 1024 * 1024,
      threads: threads ? Math.floor(envNumber('LORA_SCRIPTS_TRAIN_THREADS', 1)) : undefined,
    };
    perServer.set(ctx, s);
  }
  return s;
}

/** True when `p` is `root` or lies below it, judged on the resolved text (links placed by the operator are trusted). */
export function isInside(root: string, p: string): boolean {
  const r = relative(resolve(root), resolve(p));
  return r === '' || (r !== '..' && !r.startsWith(`..${sep}`) && !isAbsolute(r));
}

export function datasetRoots(s: TrainingSettings): string[] {
  return [s.datasetsDir, ...s.extraDatasetRoots];
}
