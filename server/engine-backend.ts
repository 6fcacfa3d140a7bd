/**
 * The backend `serve` uses. The Stable Diffusion pipeline (engine/sd, engine/sampling, engine/lora) has not
 * landed yet, so this backend selects checkpoints (so listing, options and switching work) but answers
 * generation with a clear 501. Wiring the engine in replaces the bodies below and nothing else.
 */
import { access } from 'node:fs/promises';
import { UserError } from '../engine/util/errors.ts';
import type { CheckpointRef, GenerationBackend, GenerationOutput } from './backend.ts';
import { HttpError } from './errors.ts';

export interface EngineBackendOptions {
  /** `cpu` (default), `cuda`, `dml`, `coreml`: the ONNX Runtime execution provider. */
  device: string;
}

export function createEngineBackend(opts: EngineBackendOptions): GenerationBackend {
  let current: CheckpointRef | null = null;
  const notBuilt = (what: string): Promise<GenerationOutput> =>
    Promise.reject(new HttpError(501, `${what} needs the Stable Diffusion pipeline, which is not built in this version of lora-scripts`));
  return {
    description: `onnxruntime ${opts.device} (generation pipeline not built)`,
    async loadCheckpoint(ckpt) {
      await access(ckpt.path).catch(() => {
        throw new UserError(`checkpoint file is gone: ${ckpt.path}`, { status: 500 });
      });
      current = ckpt;
    },
    async unload() {
      current = null;
    },
    currentCheckpoint: () => current,
    txt2img: () => notBuilt('txt2img'),
    img2img: () => notBuilt('img2img'),
  };
}
