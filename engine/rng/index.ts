/** Random numbers exactly as PyTorch and A1111 make them: CPU mt19937 randn, NV Philox, A1111 image noise. */
export { Mt19937 } from './mt19937.ts';
export { TorchCpuGenerator } from './torch-cpu.ts';
export { PhiloxGenerator } from './philox.ts';
export {
  createNoise,
  createGenerator,
  ImageNoise,
  BatchNoise,
  slerpColumns,
  type NoiseSource,
  type NormalGenerator,
  type ImageNoiseOptions,
  type BatchNoiseOptions,
} from './noise.ts';
export { fixSeed, batchSeeds, type BatchSeeds } from './seeds.ts';
