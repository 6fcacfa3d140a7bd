import { Optimizer, checkHyper, type ParamGroup } from './optimizer.ts';

export interface AdamWOptions {
  betas?: [number, number];
  eps?: number;
  /** Decoupled weight decay (torch default 1e-2); a group's own weightDecay wins. */
  weightDecay?: number;
}

/**
 * torch.optim.AdamW (amsgrad off): p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
 * p ← p − (lr / (1−β1^k)) · m / (√v / √(1−β2^k) + eps). eps is added after the square root, as torch does.
 * Arithmetic is float64 per element with float32 rounding where torch stores a float32 tensor.
 */
export class AdamW extends Optimizer {
  readonly kind = 'adamw';
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  protected readonly bufferNames = ['exp_avg', 'exp_avg_sq'] as const;
  private readonly m = new Map<string, Float32Array>();
  private readonly v = new Map<string, Float32Array>();

  constructor(groups: readonly ParamGroup[], opts: AdamWOptions = {}) {
    const [beta1, beta2] = opts.betas ?? [0.9, 0.999];
    const eps = opts.eps ?? 1e-8;
    const wd = opts.weightDecay ?? 1e-2;
    checkHyper('AdamW betas[0]', beta1, 0, 1, true);
    checkHyper('AdamW betas[1]', beta2, 0, 1, true);
    checkHyper('AdamW eps', eps, 0, Infinity);
    super('AdamW', groups, wd);
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    for (const [name, p] of this.params()) {
      this.m.set(name, new Float32Array(p.length));
      this.v.set(name, new Float32Array(p.length));
    }
  }

  protected update(name: string, p: Float32Array, g: Float32Array, lr: number, wd: number, step: number): void {
    const m = this.m.get(name)!;
    const v = this.v.get(name)!;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const eps = this.eps;
    // torch multiplies float32 tensors by these scalars as float32.
    const decay = Math.fround(1 - lr * wd);
    const w1 = Math.fround(1 - b1);
    const w2 = Math.fround(1 - b2);
    const f1 = Math.fround(b1);
    const f2 = Math.fround(b2);
    const stepSize = lr / (1 - b1 ** step);
    const bc2Sqrt = Math.sqrt(1 - b2 ** step);
    const decaying = wd !== 0 && lr !== 0;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]!;
      const pi = decaying ? Math.fround(p[i]! * decay) : p[i]!;
      const mi = Math.fround(f1 * m[i]! + w1 * gi);
      const vi = Math.fround(f2 * v[i]! + w2 * gi * gi);
      m[i] = mi;
      v[i] = vi;
      const denom = Math.fround(Math.fround(Math.sqrt(vi)) / bc2Sqrt) + eps;
      p[i] = pi - (stepSize * mi) / denom;
    }
  }

  protected buffersOf(name: string): Float32Array[] {
    return [this.m.get(name)!, this.v.get(name)!];
  }

  protected hyper(): Record<string, number> {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps };
  }
}
