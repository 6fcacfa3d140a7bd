/**
 * Whether a trainer bakes its frozen weights into the ONNX Runtime session (pre-packed kernels, faster, about
 * two more copies of the model in memory) or feeds them at every step. One rule for the SD and LLM trainers.
 */
import { totalmem } from 'node:os';
import { LDM_PREFIX } from '../sd/keymap.ts';

export type FrozenWeights = 'auto' | 'baked' | 'fed';

/**
 * Baking needs room for the model (JS), ONNX Runtime's copy and its pre-packed kernels, plus activations.
 * Measured on SD 1.5's UNet at 512² (3.4 GB of float32 weights, quiet 2-core machine): baked 8.2 s per step at
 * 14.2 GiB peak, fed 9.3 s at 6.6 GiB. Feeding is within 13% of the speed at less than half the memory, so
 * only a machine with far more room than the model needs bakes: SD 1.5 (4.3 GB with its text encoder and VAE)
 * from about 32 GiB.
 */
export const BAKE_RAM_FACTOR = 8;

/** 'auto' bakes when RAM is at least BAKE_RAM_FACTOR × the model's float32 bytes. */
export function bakeFrozenWeights(mode: FrozenWeights, modelBytes: number, ram: number = totalmem()): boolean {
  return mode === 'baked' || (mode === 'auto' && ram >= BAKE_RAM_FACTOR * modelBytes);
}

/**
 * Which weights a Stable Diffusion trainer holds in half precision (key prefixes for `LoadOptions.halfWeights`).
 * Gradient checkpointing is the low-memory mode: there the frozen UNet weights that the file stores as float16
 * stay float16 (nothing is rounded; half the bytes of float32), and the step widens each one where it is used,
 * once in the forward pass and once more in the backward pass. Measured on SD 1.5 at 512² (see
 * docs/benchmarks.md); baked weights are float32 by nature.
 */
export function halfHeldWeights(checkpointing: boolean, mode: FrozenWeights): readonly string[] {
  return checkpointing && mode !== 'baked' ? [LDM_PREFIX.unet] : [];
}
