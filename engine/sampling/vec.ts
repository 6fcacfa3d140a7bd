/** Elementwise float32 vector arithmetic for the samplers: each element is computed in double and stored once. */

export function checkSameLength(a: Float32Array, b: Float32Array, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: expected ${a.length} elements, got ${b.length}`);
}

/** a*x + b*y */
export function lin2(a: number, x: Float32Array, b: number, y: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = a * x[i]! + b * y[i]!;
  return out;
}

/** a*x + b*y + c*z */
export function lin3(a: number, x: Float32Array, b: number, y: Float32Array, c: number, z: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = a * x[i]! + b * y[i]! + c * z[i]!;
  return out;
}

/** sum_k coef[k] * v[k] */
export function linN(coef: readonly number[], v: readonly Float32Array[]): Float32Array {
  const n = v[0]!.length;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let k = 0; k < v.length; k++) s += coef[k]! * v[k]![i]!;
    out[i] = s;
  }
  return out;
}

export function scale(a: number, x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = a * x[i]!;
  return out;
}

/** k-diffusion's to_d: the probability-flow ODE derivative (x - denoised) / sigma. */
export function toD(x: Float32Array, sigma: number, denoised: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = (x[i]! - denoised[i]!) / sigma;
  return out;
}
