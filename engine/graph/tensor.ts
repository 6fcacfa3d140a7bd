import type { AnyTypedArray, DType } from './dtype.ts';

/** A dimension: a fixed size, or the name of a dynamic size bound when the graph runs ("B", "T", "B*T"). */
export type Dim = number | string;
export type Shape = readonly Dim[];

/** Op attributes are plain JSON values so a node's identity can be hashed from them. */
export type AttrJson = number | string | boolean | null | readonly AttrJson[];
export type Attrs = Readonly<Record<string, AttrJson>>;

let nextId = 1;
let currentSegment: number | undefined;
let nextSegment = 1;

/**
 * A symbolic tensor: one node of the graph DAG. Every op makes one output, so a node and its value are the
 * same object. Nodes are immutable except for a parameter's bound buffer.
 */
export class Tensor {
  readonly id = nextId++;
  /** Checkpoint segment the node was made in; its activations are recomputed in the backward pass. */
  readonly segment: number | undefined = currentSegment;
  constructor(
    readonly op: string,
    readonly inputs: readonly Tensor[],
    readonly attrs: Attrs,
    readonly dtype: DType,
    readonly shape: Shape,
    /** Constant data (op 'const') or a parameter's bound weight buffer (op 'param'). */
    public value?: AnyTypedArray,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  /** Name of an input or parameter; undefined for computed nodes. */
  get name(): string | undefined {
    const n = this.attrs['name'];
    return typeof n === 'string' ? n : undefined;
  }

  /** Static element count, or undefined when a dimension is dynamic. */
  get size(): number | undefined {
    let n = 1;
    for (const d of this.shape) {
      if (typeof d !== 'number') return undefined;
      n *= d;
    }
    return n;
  }

  toString(): string {
    return `${this.name ?? this.op}#${this.id}<${this.dtype}[${this.shape.join(',')}]>`;
  }
}

/** Low-level node constructor; ops call it after inferring dtype and shape. */
export function node(op: string, inputs: readonly Tensor[], attrs: Attrs, dtype: DType, shape: Shape, value?: AnyTypedArray): Tensor {
  return new Tensor(op, inputs, attrs, dtype, shape, value);
}

/** Runs `fn` with every node it creates tagged as one checkpoint segment; see autodiff/grad.ts. */
export function inSegment<T>(fn: () => T): T {
  const saved = currentSegment;
  currentSegment = nextSegment++;
  try {
    return fn();
  } finally {
    currentSegment = saved;
  }
}

/** Runs `fn` outside any checkpoint segment (backward-graph construction uses this). */
export function outsideSegments<T>(fn: () => T): T {
  const saved = currentSegment;
  currentSegment = undefined;
  try {
    return fn();
  } finally {
    currentSegment = saved;
  }
}

/** All nodes reachable from `outputs`, inputs before users, in a deterministic order. */
export function topoSort(outputs: readonly Tensor[]): Tensor[] {
  const order: Tensor[] = [];
  const seen = new Set<Tensor>();
  // Iterative DFS: model graphs are deep enough (thousands of nodes) to overflow the JS stack recursively.
  const stack: [Tensor, number][] = [];
  for (const o of outputs) {
    if (seen.has(o)) continue;
    seen.add(o);
    stack.push([o, 0]);
    while (stack.length) {
      const top = stack[stack.length - 1]!;
      const [t, i] = top;
      if (i < t.inputs.length) {
        top[1]++;
        const c = t.inputs[i]!;
        if (!seen.has(c)) {
          seen.add(c);
          stack.push([c, 0]);
        }
      } else {
        stack.pop();
        order.push(t);
      }
    }
  }
  return order;
}
