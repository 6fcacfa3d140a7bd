import * as g from '../graph/index.ts';
import { outsideSegments, topoSort, Tensor } from '../graph/tensor.ts';
import { VJP_RULES, zeroAfter } from './rules.ts';

export interface GradOptions {
  /** Gradient of the final output w.r.t. `loss`; defaults to ones (a scalar loss gives dL/dL = 1). */
  seed?: Tensor;
}

/**
 * Builds the backward graph, in the same DSL, for d`loss`/d`params` (parameters, inputs or intermediate
 * tensors). Only nodes on a path from a requested
 * parameter to the loss are differentiated: frozen weights get no gradient work of their own, yet gradients
 * still flow through the activations they produce. Nodes made inside `checkpoint(...)` are recomputed in
 * the backward pass instead of being kept from the forward pass.
 */
export function grad(loss: Tensor, params: readonly Tensor[], opts: GradOptions = {}): Tensor[] {
  return outsideSegments(() => buildGrad(loss, params, opts));
}

function buildGrad(loss: Tensor, params: readonly Tensor[], opts: GradOptions): Tensor[] {
  if (!g.isFloat(loss.dtype)) throw new Error(`grad: loss ${loss} is not a float tensor`);
  const order = topoSort([loss]);
  const wanted = new Set(params);
  const live = new Set<Tensor>();
  for (const t of order) if (wanted.has(t) || t.inputs.some((i) => live.has(i))) live.add(t);

  const pending = new Map<Tensor, Tensor[]>();
  const push = (t: Tensor, d: Tensor) => {
    const list = pending.get(t);
    if (list) list.push(d);
    else pending.set(t, [d]);
  };
  const total = (t: Tensor): Tensor | undefined => {
    const list = pending.get(t);
    if (!list) return undefined;
    return concatOfPads(list, t) ?? list.reduce((a, b) => g.add(a, b));
  };

  const seed = opts.seed ?? (loss.rank === 0 ? g.scalar(1, loss.dtype) : g.expand(g.scalar(1, loss.dtype), loss.shape));
  if (live.has(loss)) push(loss, seed);
  const recompute = new Recomputer();

  for (let k = order.length - 1; k >= 0; k--) {
    const t = order[k]!;
    if (!live.has(t) || t.inputs.length === 0) continue;
    const dy = total(t);
    if (!dy) continue;
    // A requested intermediate keeps its gradient for the result; the others are done with.
    if (wanted.has(t)) pending.set(t, [dy]);
    else pending.delete(t);
    const rule = VJP_RULES[t.op];
    if (!rule) throw new Error(`grad: no gradient rule for op ${t.op}`);
    const need = t.inputs.map((i) => live.has(i) && g.isFloat(i.dtype));
    recompute.gateWith(t, dy);
    const dxs = weightGradientsFirst(t, rule(t, dy, need, (x) => recompute.get(x)), (x) => isParamView(x, wanted));
    t.inputs.forEach((x, i) => {
      const d = dxs[i];
      if (need[i] && d) push(x, d);
    });
  }
  return params.map((p) => total(p) ?? g.expand(g.scalar(0, p.dtype), p.shape));
}

/** A requested parameter, or a transpose / reshape of one (how a Linear reads its weight). */
function isParamView(x: Tensor, wanted: ReadonlySet<Tensor>): boolean {
  if (x.op === 'param') return wanted.has(x);
  return (x.op === 'transpose' || x.op === 'reshape') && isParamView(x.inputs[0]!, wanted);
}

/**
 * Ties the other gradients of a node that reads a trained weight (a LoRA Linear / conv) to that weight's
 * gradient (`+ 0 * one element`), so ORT computes the weight gradient as soon as its operands exist and can
 * free them (the layer's input and incoming gradient) there, instead of keeping them to the end of the
 * backward pass, where the weight-gradient outputs would otherwise be scheduled.
 */
function weightGradientsFirst(t: Tensor, dxs: (Tensor | undefined)[], isWeight: (x: Tensor) => boolean): (Tensor | undefined)[] {
  const w = t.inputs.findIndex((x, i) => dxs[i] !== undefined && isWeight(x));
  if (w < 0) return dxs;
  const others = dxs.map((d, i) => (d !== undefined && i !== w && !isWeight(t.inputs[i]!) ? i : -1)).filter((i) => i >= 0);
  if (!others.length) return dxs;
  const gate = zeroAfter(dxs[w]!);
  return dxs.map((d, i) => (others.includes(i) ? g.add(d!, g.cast(gate, d!.dtype)) : d));
}

/**
 * The gradients of slices that tile `t` along one axis (a split: GEGLU's halves, attention's query chunks)
 * arrive as zero-padded pieces; their sum is the pieces' concatenation, which reads each element once
 * instead of padding every piece to full size and adding them up. Undefined when `list` is not such a tiling.
 */
function concatOfPads(list: readonly Tensor[], t: Tensor): Tensor | undefined {
  if (list.length < 2) return undefined;
  let axis = -1;
  const pieces: { begin: number; len: number; x: Tensor }[] = [];
  for (const d of list) {
    if (d.op !== 'pad' || d.attrs['value'] !== 0) return undefined;
    const pads = d.attrs['pads'] as number[];
    const x = d.inputs[0]!;
    const r = x.rank;
    const padded = x.shape.map((_, i) => i).filter((i) => pads[i] !== 0 || pads[i + r] !== 0);
    if (padded.length !== 1) return undefined;
    const a = padded[0]!;
    if (axis === -1) axis = a;
    else if (a !== axis) return undefined;
    const len = x.shape[a];
    if (typeof len !== 'number') return undefined;
    pieces.push({ begin: pads[a]!, len, x });
  }
  pieces.sort((p, q) => p.begin - q.begin);
  let at = 0;
  for (const p of pieces) {
    if (p.begin !== at) return undefined;
    at += p.len;
  }
  if (at !== t.shape[axis]) return undefined;
  return g.concat(pieces.map((p) => p.x), axis);
}

/** A float16 weight widened to float32 where used (a model holding its weights in half precision). */
function isWidenedHalf(t: Tensor): boolean {
  return t.op === 'cast' && t.inputs[0]!.op === 'param' && t.inputs[0]!.dtype === 'float16' && t.dtype === 'float32';
}

/**
 * Gradient checkpointing: clones a segment's forward nodes for the backward pass. The clones' inputs from
 * outside the segment are tied (by `+ 0 * one element of the incoming gradient`) to the gradient reaching
 * the segment, so ORT can run them only once the backward pass gets there, and cannot merge them with
 * the forward nodes; the forward activations are then freed after their last forward use.
 */
class Recomputer {
  private readonly clones = new Map<Tensor, Tensor>();
  private readonly gates = new Map<number, Tensor>();
  private readonly boundary = new Map<string, Tensor>();
  private current: Tensor | undefined;

  gateWith(t: Tensor, dy: Tensor): void {
    if (t.segment !== undefined && !this.gates.has(t.segment)) {
      this.gates.set(t.segment, zeroAfter(dy));
    }
    this.current = t;
  }

  get(x: Tensor): Tensor {
    if (isWidenedHalf(x)) return this.rewiden(x, this.gates.get(this.current?.segment ?? -1) ?? this.gates.get(x.segment ?? -1));
    if (x.segment === undefined || x.op === 'rand_like' || x.inputs.length === 0) return x;
    const hit = this.clones.get(x);
    if (hit) return hit;
    const seg = x.segment;
    const gate = this.gates.get(seg) ?? this.gates.get(this.current?.segment ?? -1);
    if (!gate) return x;
    // Clone the part of the segment that produces x, walking only inside the segment (a whole-graph
    // topological sort per call would make checkpointed models quadratic to differentiate).
    const inSeg = (n: Tensor) => n.segment === seg && n.op !== 'rand_like' && n.inputs.length > 0;
    const stack: [Tensor, number][] = [[x, 0]];
    const onStack = new Set<Tensor>([x]);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [n, i] = top;
      if (i < n.inputs.length) {
        top[1]++;
        const c = n.inputs[i]!;
        if (inSeg(c) && !this.clones.has(c) && !onStack.has(c)) {
          onStack.add(c);
          stack.push([c, 0]);
        }
        continue;
      }
      stack.pop();
      const ins = n.inputs.map((c) => (inSeg(c) ? this.clones.get(c)! : this.gated(c, seg, gate)));
      this.clones.set(n, isWidenedHalf(n) ? this.rewiden(n, gate) : new Tensor(n.op, ins, n.attrs, n.dtype, n.shape, n.value));
    }
    return this.clones.get(x)!;
  }

  /**
   * A weight held in half precision is widened again for the backward pass, once the gate exists, instead of
   * its forward float32 copy being kept: `after` makes the second widening a node ORT neither runs early nor
   * merges with the first, and copies nothing.
   */
  private rewiden(x: Tensor, gate: Tensor | undefined): Tensor {
    if (!gate) return x;
    const key = `w${gate.id}:${x.id}`;
    let v = this.boundary.get(key);
    if (!v) {
      v = g.cast(g.after(x.inputs[0]!, gate), x.dtype);
      this.boundary.set(key, v);
    }
    return v;
  }

  private gated(i: Tensor, seg: number, gate: Tensor): Tensor {
    if (isWidenedHalf(i)) return this.rewiden(i, gate);
    // Weights and constants are kept anyway; gating them would only add work.
    if (i.op === 'param' || i.op === 'const' || !g.isFloat(i.dtype)) return i;
    const key = `${seg}:${i.id}`;
    let v = this.boundary.get(key);
    if (!v) {
      v = g.add(i, g.cast(gate, i.dtype));
      this.boundary.set(key, v);
    }
    return v;
  }
}
