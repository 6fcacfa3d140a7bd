import { checkHyper } from './optimizer.ts';
import { toTensorMap, type TensorMapLike } from './tensors.ts';

/** L2 norm over every element of every tensor, summed in float64. */
export function globalNorm(gradsLike: TensorMapLike): number {
  let sum = 0;
  for (const g of toTensorMap(gradsLike).values()) {
    for (let i = 0; i < g.length; i++) sum += g[i]! * g[i]!;
  }
  return Math.sqrt(sum);
}

/**
 * torch.nn.utils.clip_grad_norm_: scales all gradients in place by min(1, maxNorm / (norm + 1e-6)).
 * Returns the norm before clipping, which is what gets logged as grad_norm. maxNorm ≤ 0 only measures.
 */
export function clipByGlobalNorm(gradsLike: TensorMapLike, maxNorm: number): number {
  checkHyper('max_grad_norm', maxNorm, -Infinity, Infinity);
  const grads = toTensorMap(gradsLike);
  const norm = globalNorm(grads);
  if (maxNorm <= 0 || !Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + 1e-6);
  if (coef >= 1) return norm;
  // torch multiplies by the coefficient held as a float32 tensor.
  const c = Math.fround(coef);
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i] = g[i]! * c;
  return norm;
}
