import type { Dim, Shape } from './tensor.ts';

export class ShapeError extends Error {
  override name = 'ShapeError';
}

export const dimEq = (a: Dim, b: Dim): boolean => a === b;

export function shapeEq(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export const fmt = (s: Shape): string => `[${s.join(',')}]`;

/** Numpy broadcasting; a named dimension only matches itself or 1. */
export function broadcastShapes(a: Shape, b: Shape, what: string): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)]!;
    const db = i < n - b.length ? 1 : b[i - (n - b.length)]!;
    if (da === db || db === 1) out.push(da);
    else if (da === 1) out.push(db);
    else throw new ShapeError(`${what}: shapes ${fmt(a)} and ${fmt(b)} do not broadcast`);
  }
  return out;
}

export function normAxis(axis: number, rank: number, what: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new ShapeError(`${what}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

// A named product like "B*T" is kept as a sorted factor list so equal products get equal names.
function factors(d: Dim): { n: number; names: string[] } {
  if (typeof d === 'number') return { n: d, names: [] };
  const names: string[] = [];
  let n = 1;
  for (const p of d.split('*')) {
    if (/^\d+$/.test(p)) n *= Number(p);
    else names.push(p);
  }
  return { n, names };
}

function makeDim(n: number, names: string[]): Dim {
  if (names.length === 0) return n;
  const sorted = [...names].sort();
  return (n === 1 ? sorted : [String(n), ...sorted]).join('*');
}

/** Product of dimensions, symbolic where needed. */
export function dimProduct(dims: readonly Dim[]): Dim {
  let n = 1;
  const names: string[] = [];
  for (const d of dims) {
    const f = factors(d);
    n *= f.n;
    names.push(...f.names);
  }
  return makeDim(n, names);
}

/** `total / product(dims)`, symbolic where needed; throws when it does not divide. */
export function dimQuotient(total: readonly Dim[], dims: readonly Dim[], what: string): Dim {
  const t = factors(dimProduct(total));
  const d = factors(dimProduct(dims));
  const names = [...t.names];
  for (const x of d.names) {
    const i = names.indexOf(x);
    if (i < 0) throw new ShapeError(`${what}: cannot infer -1, named dimension ${x} is not in the input`);
    names.splice(i, 1);
  }
  if (d.n === 0 || t.n % d.n !== 0) throw new ShapeError(`${what}: ${fmt(total)} does not divide by ${fmt(dims)}`);
  return makeDim(t.n / d.n, names);
}

/** Element count when every dimension is fixed. */
export function staticSize(s: Shape): number | undefined {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') return undefined;
    n *= d;
  }
  return n;
}

export function requireStatic(s: Shape, what: string): number[] {
  for (const d of s) if (typeof d !== 'number') throw new ShapeError(`${what}: needs static dimensions, got ${fmt(s)}`);
  return s as number[];
}
