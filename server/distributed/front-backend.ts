/**
 * The backend of an API front: it holds no weights. "Loading" a checkpoint only records the choice (so
 * `/sdapi/v1/options`, reload and unload answer as in the single process); the workers load it when a job
 * asks for it. Generation never reaches this backend, because every generation job goes to Redis.
 */
import { SAMPLERS as ENGINE_SAMPLERS } from '../../engine/sampling/registry.ts';
import type { CheckpointRef, GenerationBackend } from '../backend.ts';

export function frontBackend(queueDisplay: string): GenerationBackend {
  let current: CheckpointRef | null = null;
  const refuse = (): never => {
    throw new Error('an API front does not generate; its jobs run on the workers');
  };
  return {
    description: `workers through ${queueDisplay}`,
    // The workers run the engine backend: the front lists what they implement.
    samplers: ENGINE_SAMPLERS.map((s) => s.name),
    async loadCheckpoint(ckpt) {
      current = ckpt;
    },
    async unload() {
      current = null;
    },
    currentCheckpoint: () => current,
    txt2img: refuse,
    img2img: refuse,
  };
}
