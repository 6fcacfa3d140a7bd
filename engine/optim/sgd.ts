import { UserError } from '../util/errors.ts';
import { Optimizer, checkHyper, type ParamGroup } from './optimizer.ts';

export interface SGDOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  /** L2 penalty added to the gradient (coupled, as torch.optim.SGD), default 0. */
  weightDecay?: number;
}

/**
 * torch.optim.SGD: d = g + wd·p; buf = d on the first step, else buf ← μ·buf + (1−dampening)·d;
 * d = d + μ·buf (Nesterov) or buf; p ← p − lr·d.
 */
export class SGD extends Optimizer {
  readonly kind = 'sgd';
  readonly momentum: number;
  readonly dampening: number;
  readonly nesterov: boolean;
  protected readonly bufferNames = ['momentum_buffer'] as const;
  private readonly buf = new Map<string, Float32Array>();

  constructor(groups: readonly ParamGroup[], opts: SGDOptions = {}) {
    const momentum = opts.momentum ?? 0;
    const dampening = opts.dampening ?? 0;
    const nesterov = opts.nesterov ?? false;
    checkHyper('SGD momentum', momentum, 0, Infinity);
    checkHyper('SGD dampening', dampening, 0, 1);
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new UserError('SGD nesterov needs momentum > 0 and dampening 0');
    }
    super('SGD', groups, opts.weightDecay ?? 0);
    this.momentum = momentum;
    this.dampening = dampening;
    this.nesterov = nesterov;
    for (const [name, p] of this.params()) this.buf.set(name, new Float32Array(p.length));
  }

  protected update(name: string, p: Float32Array, g: Float32Array, lr: number, wd: number, step: number): void {
    const buf = this.buf.get(name)!;
    const mu = Math.fround(this.momentum);
    const damp = Math.fround(1 - this.dampening);
    const fwd = Math.fround(wd);
    const flr = Math.fround(lr);
    const useMomentum = this.momentum !== 0;
    for (let i = 0; i < p.length; i++) {
      let d = wd !== 0 ? Math.fround(g[i]! + fwd * p[i]!) : g[i]!;
      if (useMomentum) {
        const b = step === 1 ? d : Math.fround(mu * buf[i]! + damp * d);
        buf[i] = b;
        d = this.nesterov ? Math.fround(d + mu * b) : b;
      }
      p[i] = p[i]! - flr * d;
    }
  }

  protected buffersOf(name: string): Float32Array[] {
    return [this.buf.get(name)!];
  }

  protected hyper(): Record<string, number | boolean> {
    return { momentum: this.momentum, dampening: this.dampening, nesterov: this.nesterov };
  }
}
