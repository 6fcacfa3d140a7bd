import { toTensorMap, type TensorMapLike } from './tensors.ts';

/**
 * Gradient accumulation over micro-batches. With `mode: 'mean'` the result is Σ wᵢ·gᵢ / Σ wᵢ, which for a
 * mean loss and wᵢ = micro-batch size equals the gradient of one big batch; `mode: 'sum'` gives Σ wᵢ·gᵢ.
 * Buffers are float32, like torch's `.grad` accumulation, to keep memory at one copy of the parameters.
 */
export class GradAccumulator {
  private sums: Map<string, Float32Array> | undefined;
  private weight = 0;
  private n = 0;
  readonly mode: 'mean' | 'sum';

  constructor(opts: { mode?: 'mean' | 'sum' } = {}) {
    this.mode = opts.mode ?? 'mean';
  }

  /** Micro-batches added since the last result() / reset(). */
  get count(): number {
    return this.n;
  }

  /** Adds one micro-batch gradient; the input arrays are copied, not kept. */
  add(gradsLike: TensorMapLike, weight = 1): void {
    if (!(Number.isFinite(weight) && weight > 0)) throw new Error(`micro-batch weight must be positive, got ${weight}`);
    const grads = toTensorMap(gradsLike);
    if (!this.sums) {
      this.sums = new Map();
      for (const [k, g] of grads) {
        const s = new Float32Array(g.length);
        for (let i = 0; i < g.length; i++) s[i] = weight * g[i]!;
        this.sums.set(k, s);
      }
    } else {
      if (grads.size !== this.sums.size) {
        throw new Error(`micro-batch ${this.n + 1} has ${grads.size} gradients, the first had ${this.sums.size}`);
      }
      for (const [k, g] of grads) {
        const s = this.sums.get(k);
        if (!s) throw new Error(`micro-batch ${this.n + 1} has gradient '${k}' that the first did not have`);
        if (s.length !== g.length) throw new Error(`gradient '${k}' changed size between micro-batches`);
        if (weight === 1) for (let i = 0; i < g.length; i++) s[i] = s[i]! + g[i]!;
        else for (let i = 0; i < g.length; i++) s[i] = s[i]! + weight * g[i]!;
      }
    }
    this.weight += weight;
    this.n++;
  }

  /** The accumulated gradient (owned by the caller) and a fresh start. */
  result(): Map<string, Float32Array> {
    if (!this.sums) throw new Error('no micro-batch gradients accumulated');
    const out = this.sums;
    if (this.mode === 'mean' && this.weight !== 1) {
      const inv = 1 / this.weight;
      for (const s of out.values()) for (let i = 0; i < s.length; i++) s[i] = s[i]! * inv;
    }
    this.reset();
    return out;
  }

  reset(): void {
    this.sums = undefined;
    this.weight = 0;
    this.n = 0;
  }
}
