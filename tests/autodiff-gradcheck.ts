import assert from 'node:assert/strict';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { compile } from '../engine/runtime/session.ts';

export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

export interface GradCheckOptions {
  dtype?: 'float64' | 'float32';
  /** Central-difference step. */
  h?: number;
  atol?: number;
  rtol?: number;
  /** Initial values per parameter (default uniform in [-1, 1]). */
  init?: (paramIndex: number, n: number, r: () => number) => number[];
  seed?: number;
  /** At most this many elements per parameter are perturbed (spread evenly). */
  maxElements?: number;
}

/**
 * Compares grad() against central finite differences of L = sum(f(params) * R), R random.
 * The numeric side reads f's whole output and sums in float64 in JS, so its rounding error is per element
 * (about eps_dtype * |f| / h) rather than that of a float32-accumulated loss.
 */
export async function gradCheck(shapes: number[][], f: (ps: g.Tensor[]) => g.Tensor, o: GradCheckOptions = {}): Promise<void> {
  const dtype = o.dtype ?? 'float64';
  const r = lcg(o.seed ?? 7);
  const ps = shapes.map((s, i) => {
    const n = s.reduce((a, b) => a * b, 1);
    const vals = o.init ? o.init(i, n, r) : Array.from({ length: n }, () => r() * 2 - 1);
    return g.param(`p${i}`, s, g.arrayFrom(dtype, vals), dtype);
  });
  const out = f(ps);
  const outDtype = out.dtype as 'float64' | 'float32';
  const n = out.size!;
  const R = Array.from({ length: n }, () => r() * 2 - 1);
  const loss = g.sum(g.mul(out, g.constant(g.arrayFrom(outDtype, R), out.shape as number[], outDtype)));
  const grads = grad(loss, ps);
  const analytic = await (await compile(grads)).run({});
  const fwd = await compile([out]);
  const L = async () => {
    const [y] = await fwd.run({});
    let s = 0;
    const d = y!.data as Float64Array;
    for (let i = 0; i < n; i++) s += d[i]! * R[i]!;
    return s;
  };
  const h = o.h ?? (dtype === 'float64' ? 1e-6 : 1e-2);
  const atol = o.atol ?? (dtype === 'float64' ? 1e-7 : 1e-3);
  const rtol = o.rtol ?? (dtype === 'float64' ? 1e-6 : 1e-3);
  for (let k = 0; k < ps.length; k++) {
    const p = ps[k]!;
    const buf = p.value as Float64Array | Float32Array;
    const a = analytic[k]!.data as Float64Array | Float32Array;
    assert.deepEqual(analytic[k]!.shape, p.shape, `grad shape of p${k}`);
    const count = Math.min(buf.length, o.maxElements ?? 24);
    for (let c = 0; c < count; c++) {
      const i = Math.floor((c * buf.length) / count);
      const v = buf[i]!;
      buf[i] = v + h;
      const up = await L();
      buf[i] = v - h;
      const down = await L();
      buf[i] = v;
      // Use the step actually taken after rounding to the buffer's precision.
      const num = (up - down) / (Math.fround(v + h) - Math.fround(v - h) || 2 * h);
      const numeric = dtype === 'float64' ? (up - down) / (2 * h) : num;
      const err = Math.abs(a[i]! - numeric);
      assert.ok(err <= atol + rtol * Math.abs(numeric), `p${k}[${i}]: analytic ${a[i]} vs numeric ${numeric} (err ${err.toExponential(2)})`);
    }
  }
}
