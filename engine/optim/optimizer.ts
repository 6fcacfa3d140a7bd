import { UserError } from '../util/errors.ts';
import { assertFiniteGrads } from './guard.ts';
import { toTensorMap, type TensorMap, type TensorMapLike } from './tensors.ts';

/** A set of parameters sharing one learning rate, e.g. 'unet' and 'textencoder' (logged as lr/<name>). */
export interface ParamGroup {
  name: string;
  /** Updated in place by step(). */
  params: TensorMapLike;
  /** Base learning rate; step() multiplies it by the schedule's factor. */
  lr: number;
  /** Overrides the optimizer-wide weight decay for this group. */
  weightDecay?: number;
}

export interface OptimizerStateHeader {
  format: 'lora-scripts/optimizer-state';
  version: 1;
  kind: string;
  /** Hyper-parameters in force when saved (informational: load() keeps the ones given to the constructor). */
  hyper: Record<string, number | boolean>;
  groups: {
    name: string;
    lr: number;
    weightDecay: number;
    params: { name: string; length: number; step: number }[];
  }[];
  /** Room for bookkeeping layered on top (the training stepper stores its counters here). */
  extra?: Record<string, unknown>;
}

/**
 * Everything needed to resume bit-exactly. `tensors` are named `<buffer>/<param>` (e.g. `exp_avg/<param>`),
 * ready to be written as float32 safetensors; `header` is JSON-able (e.g. for `__metadata__`).
 */
export interface OptimizerState {
  header: OptimizerStateHeader;
  tensors: Map<string, Float32Array>;
}

interface Group {
  name: string;
  lr: number;
  weightDecay: number;
  params: TensorMap;
}

export function checkHyper(label: string, value: number, min: number, max: number, maxOpen = false): void {
  const ok = Number.isFinite(value) && value >= min && (maxOpen ? value < max : value <= max);
  if (!ok) {
    const range = `${min} ≤ x ${maxOpen ? '<' : '≤'} ${max}`;
    throw new UserError(`${label} must be a number with ${range}, got ${value}`);
  }
}

/**
 * Shared machinery: parameter groups, gradient checks, per-parameter step counters and state (de)serialisation.
 * Subclasses supply the per-tensor update rule and their state buffers.
 */
export abstract class Optimizer {
  abstract readonly kind: string;
  protected readonly groups: Group[];
  private readonly owner = new Map<string, Group>();
  /** Per-parameter update count, as torch keeps it (a parameter without a gradient does not advance). */
  protected readonly steps = new Map<string, number>();

  protected constructor(label: string, groups: readonly ParamGroup[], defaultWeightDecay: number) {
    if (groups.length === 0) throw new UserError(`${label}: no parameter groups given`);
    const seenGroups = new Set<string>();
    this.groups = groups.map((g) => {
      if (seenGroups.has(g.name)) throw new UserError(`${label}: parameter group '${g.name}' given twice`);
      seenGroups.add(g.name);
      checkHyper(`${label} learning rate of group '${g.name}'`, g.lr, 0, Infinity);
      const wd = g.weightDecay ?? defaultWeightDecay;
      checkHyper(`${label} weight decay of group '${g.name}'`, wd, 0, Infinity);
      return { name: g.name, lr: g.lr, weightDecay: wd, params: toTensorMap(g.params) };
    });
    for (const g of this.groups) {
      for (const name of g.params.keys()) {
        if (this.owner.has(name)) throw new UserError(`${label}: parameter '${name}' is in two groups`);
        this.owner.set(name, g);
        this.steps.set(name, 0);
      }
    }
  }

  get groupNames(): string[] {
    return this.groups.map((g) => g.name);
  }

  /** Learning rate each group gets at the given schedule factor. */
  lrs(lrScale = 1): Record<string, number> {
    const out: Record<string, number> = {};
    for (const g of this.groups) out[g.name] = g.lr * lrScale;
    return out;
  }

  /** Change a group's base learning rate (e.g. to stop training the text encoder: set 0). */
  setGroupLr(group: string, lr: number): void {
    const g = this.groups.find((x) => x.name === group);
    if (!g) throw new Error(`no parameter group '${group}'`);
    checkHyper(`learning rate of group '${group}'`, lr, 0, Infinity);
    g.lr = lr;
  }

  /** Every parameter, in group order. */
  params(): Map<string, Float32Array> {
    const out = new Map<string, Float32Array>();
    for (const g of this.groups) for (const [k, v] of g.params) out.set(k, v);
    return out;
  }

  /** Update count of one parameter. */
  stepOf(name: string): number {
    const s = this.steps.get(name);
    if (s === undefined) throw new Error(`unknown parameter '${name}'`);
    return s;
  }

  /**
   * One update of every parameter that has a gradient in `grads` (parameters without one are left alone, as
   * torch does for `grad is None`). Every gradient is checked for NaN/inf before any parameter is touched.
   */
  step(gradsLike: TensorMapLike, lrScale = 1): void {
    const grads = toTensorMap(gradsLike);
    checkHyper('learning-rate factor', lrScale, 0, Infinity);
    for (const [name, g] of grads) {
      const group = this.owner.get(name);
      if (!group) throw new Error(`gradient '${name}' has no parameter in this optimizer`);
      const p = group.params.get(name)!;
      if (g.length !== p.length) {
        throw new Error(`gradient '${name}' has ${g.length} elements, the parameter has ${p.length}`);
      }
    }
    let next = 0;
    for (const s of this.steps.values()) next = Math.max(next, s);
    assertFiniteGrads(grads, next + 1);
    for (const group of this.groups) {
      const lr = group.lr * lrScale;
      for (const [name, p] of group.params) {
        const g = grads.get(name);
        if (!g) continue;
        const step = this.steps.get(name)! + 1;
        this.steps.set(name, step);
        this.update(name, p, g, lr, group.weightDecay, step);
      }
    }
  }

  /** The update rule for one tensor; `step` is this tensor's 1-based update count. */
  protected abstract update(
    name: string,
    param: Float32Array,
    grad: Float32Array,
    lr: number,
    weightDecay: number,
    step: number,
  ): void;

  /** Names of the per-parameter state buffers, e.g. ['exp_avg', 'exp_avg_sq']. */
  protected abstract readonly bufferNames: readonly string[];
  /** The live state buffers of a parameter, in bufferNames order. */
  protected abstract buffersOf(name: string): Float32Array[];
  protected abstract hyper(): Record<string, number | boolean>;

  /** A deep copy of the state: later steps do not change it. */
  state(): OptimizerState {
    const tensors = new Map<string, Float32Array>();
    const groups: OptimizerStateHeader['groups'] = [];
    for (const g of this.groups) {
      const params: OptimizerStateHeader['groups'][number]['params'] = [];
      for (const [name, p] of g.params) {
        params.push({ name, length: p.length, step: this.steps.get(name)! });
        const bufs = this.buffersOf(name);
        this.bufferNames.forEach((b, i) => tensors.set(`${b}/${name}`, new Float32Array(bufs[i]!)));
      }
      groups.push({ name: g.name, lr: g.lr, weightDecay: g.weightDecay, params });
    }
    return {
      header: { format: 'lora-scripts/optimizer-state', version: 1, kind: this.kind, hyper: this.hyper(), groups },
      tensors,
    };
  }

  /**
   * Restores step counters and buffers (copied, so the given state stays untouched). The parameters must be
   * the same names and sizes; learning rates and hyper-parameters stay as constructed, so a resumed run may
   * change them on purpose.
   */
  load(state: OptimizerState): void {
    const h = state.header;
    if (h?.format !== 'lora-scripts/optimizer-state' || h.version !== 1) {
      throw new UserError(`optimizer state: not a lora-scripts optimizer state (format ${String(h?.format)})`);
    }
    if (!Array.isArray(h.groups) || !(state.tensors instanceof Map)) {
      throw new UserError('optimizer state: malformed (groups or tensors missing)');
    }
    if (h.kind !== this.kind) {
      throw new UserError(`optimizer state: saved for optimizer '${h.kind}', but this run uses '${this.kind}'`);
    }
    const saved = new Map<string, { length: number; step: number }>();
    for (const g of h.groups) for (const p of g.params) saved.set(p.name, p);
    for (const [name, p] of this.params()) {
      const s = saved.get(name);
      if (!s) throw new UserError(`optimizer state: no entry for parameter '${name}'`);
      if (s.length !== p.length) {
        throw new UserError(`optimizer state: parameter '${name}' has ${s.length} elements saved, ${p.length} now`);
      }
      if (!Number.isSafeInteger(s.step) || s.step < 0) {
        throw new UserError(`optimizer state: parameter '${name}' has invalid step ${s.step}`);
      }
      for (const b of this.bufferNames) {
        const t = state.tensors.get(`${b}/${name}`);
        if (!t || t.length !== p.length) throw new UserError(`optimizer state: tensor '${b}/${name}' missing or mis-sized`);
      }
    }
    for (const name of saved.keys()) {
      if (!this.owner.has(name)) throw new UserError(`optimizer state: parameter '${name}' is not trained in this run`);
    }
    // Validation is complete, so a failed load leaves this optimizer unchanged.
    for (const name of this.owner.keys()) {
      this.steps.set(name, saved.get(name)!.step);
      const bufs = this.buffersOf(name);
      this.bufferNames.forEach((b, i) => bufs[i]!.set(state.tensors.get(`${b}/${name}`)!));
    }
  }
}
