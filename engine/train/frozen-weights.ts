/**
 * Whether a trainer bakes its frozen weights into the ONNX Runtime session (pre-packed kernels, faster, about
 * two more copies of the model in memory) or feeds them at every step. One rule for the SD and LLM trainers.
 */
import { totalmem } from 'node:os';

export type FrozenWeights = 'auto' | 'baked' | 'fed';

/**
 * Baking needs room for the model (JS), ONNX Runtime's copy and its pre-packed kernels, plus activations:
 * SD 1.5 at 512² peaked above 16 GiB baked versus 11 GiB fed, so a 24 GiB machine feeds it.
 */
export const BAKE_RAM_FACTOR = 6;

/** 'auto' bakes when RAM is at least BAKE_RAM_FACTOR × the model's float32 bytes. */
export function bakeFrozenWeights(mode: FrozenWeights, modelBytes: number, ram: number = totalmem()): boolean {
  return mode === 'baked' || (mode === 'auto' && ram >= BAKE_RAM_FACTOR * modelBytes);
}
