import { inSegment } from '../graph/tensor.ts';

/**
 * Marks the nodes `fn` builds as one checkpoint segment: `grad` recomputes them during the backward pass
 * instead of keeping their activations alive from the forward pass (less memory, about one extra forward).
 */
export function checkpoint<T>(fn: () => T): T {
  return inSegment(fn);
}
