import * as g from '../graph/index.ts';
import { topoSort, Tensor } from '../graph/tensor.ts';

/**
 * Rewrites a float32 graph to compute in float16 while its float32 parameters and inputs stay float32
 * (master weights): each float32 leaf is cast to float16 where it is used, float32 constants become
 * float16 constants, and the given outputs are cast back to float32. Integer and bool tensors are untouched.
 */
export function toFloat16(outputs: readonly Tensor[]): Tensor[] {
  const map = new Map<Tensor, Tensor>();
  for (const t of topoSort(outputs)) {
    let r: Tensor;
    if (t.op === 'param' || t.op === 'input') r = t.dtype === 'float32' ? g.cast(t, 'float16') : t;
    else if (t.op === 'const') {
      r = t.dtype === 'float32' ? g.constant(g.arrayFrom('float16', t.value as Float32Array), t.shape as number[], 'float16') : t;
    } else {
      const ins = t.inputs.map((i) => map.get(i)!);
      const dtype = t.dtype === 'float32' ? 'float16' : t.dtype;
      const attrs = t.op === 'cast' && t.attrs['to'] === 'float32' ? { ...t.attrs, to: 'float16' } : t.attrs;
      r = t.op === 'cast' && ins[0]!.dtype === dtype ? ins[0]! : new Tensor(t.op, ins, attrs, dtype, t.shape, t.value);
    }
    map.set(t, r);
  }
  return outputs.map((o) => (o.dtype === 'float32' ? g.cast(map.get(o)!, 'float32') : map.get(o)!));
}

/**
 * Dynamic loss scaling for float16 training: the loss is multiplied by `scale` before the backward pass
 * so small gradients do not flush to zero; a step whose gradients overflow is skipped and the scale halved;
 * after `growthInterval` clean steps the scale doubles. The cap keeps the scaled seed finite in float16.
 */
export class LossScaler {
  scale: number;
  private good = 0;
  constructor(
    initial = 2 ** 15,
    private readonly growthInterval = 2000,
    private readonly max = 2 ** 15,
  ) {
    this.scale = initial;
  }

  /** Records one step's outcome; returns whether its gradients may be applied. */
  update(finite: boolean): boolean {
    if (!finite) {
      this.scale = Math.max(1, this.scale / 2);
      this.good = 0;
      return false;
    }
    if (++this.good >= this.growthInterval) {
      this.scale = Math.min(this.max, this.scale * 2);
      this.good = 0;
    }
    return true;
  }
}
