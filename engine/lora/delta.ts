/**
 * ΔW of one LoRA module, in float32, shaped like the weight it patches, with the module's own scale
 * (alpha/rank, `scale` tensor or 1) applied and the user multiplier not applied.
 *
 * Every kind reduces to a [out, in·k] matrix: a conv kernel's trailing dims flatten row-major, so the
 * same product serves Linear, 1×1 conv (SD1 proj_in/out) and 3×3 conv targets, and a 4-D 1×1 LoRA on a
 * 2-D Linear weight (or the reverse) only needs the element counts to agree, as in A1111.
 */
import type { F32Tensor, LoraModule } from './types.ts';

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** out[o, :] += Σ_k c·U[o,k]·D[k, :] for U [rows, r], D [r, cols]; row-wise axpy keeps D rows hot in cache. */
export function matmulAccumulate(
  out: Float32Array,
  u: Float32Array,
  d: Float32Array,
  rows: number,
  r: number,
  cols: number,
  c = 1,
): void {
  for (let o = 0; o < rows; o++) {
    const base = o * cols;
    for (let k = 0; k < r; k++) {
      const f = c * u[o * r + k]!;
      if (f === 0) continue;
      const dk = k * cols;
      for (let j = 0; j < cols; j++) out[base + j]! += f * d[dk + j]!;
    }
  }
}

function transpose(t: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = t[i * cols + j]!;
  return out;
}

/**
 * CP / Tucker form: W[p, q, y, x] = Σ_{i,j} core[i, j, y, x]·down[j, q]·upT[p, i], returned as [out, in·k].
 * `down` is [R, in] (any trailing 1×1 dims), `upT` is [out, R].
 */
function tucker(core: F32Tensor, down: F32Tensor, upT: Float32Array, out: number): Float32Array {
  const R = core.shape[0]!, R2 = core.shape[1]!;
  const k = numel(core.shape.slice(2));
  const inn = down.data.length / down.shape[0]!;
  // T[i, q·k + yx] = Σ_j core[i, j, yx]·down[j, q]
  const t = new Float32Array(R * inn * k);
  for (let i = 0; i < R; i++) {
    for (let j = 0; j < R2; j++) {
      for (let q = 0; q < inn; q++) {
        const dv = down.data[j * inn + q]!;
        if (dv === 0) continue;
        const dst = i * inn * k + q * k, src = (i * R2 + j) * k;
        for (let yx = 0; yx < k; yx++) t[dst + yx]! += core.data[src + yx]! * dv;
      }
    }
  }
  const w = new Float32Array(out * inn * k);
  matmulAccumulate(w, upT, t, out, R, inn * k);
  return w;
}

function product(a: F32Tensor, b: F32Tensor): Float32Array {
  const rows = a.shape[0]!, r = a.data.length / rows, cols = b.data.length / r;
  const w = new Float32Array(rows * cols);
  matmulAccumulate(w, a.data, b.data, rows, r, cols);
  return w;
}

/** Kronecker product of w1 [a, b] and w2 viewed as [c, e]; equals kron(w1[..., None, None], w2) for a 4-D w2. */
function kron(w1: F32Tensor, w1Cols: number, w2: Float32Array, c: number): Float32Array {
  const a = w1.data.length / w1Cols, b = w1Cols, e = w2.length / c;
  const out = new Float32Array(a * c * b * e);
  const cols = b * e;
  for (let i = 0; i < a; i++)
    for (let p = 0; p < c; p++) {
      const row = (i * c + p) * cols;
      for (let j = 0; j < b; j++) {
        const f = w1.data[i * b + j]!;
        const dst = row + j * e, src = p * e;
        for (let q = 0; q < e; q++) out[dst + q] = f * w2[src + q]!;
      }
    }
  return out;
}

function need(m: LoraModule, role: string): F32Tensor {
  const t = m.tensors[role];
  if (!t) throw new Error(`LoRA module ${m.name}: tensor '${role}' is missing`);
  return t;
}

/** Unscaled ΔW as a flat [out, in·k] array. */
function rawDelta(m: LoraModule): Float32Array {
  const T = m.tensors;
  switch (m.kind) {
    case 'lora':
    case 'locon': {
      const up = need(m, 'up'), down = need(m, 'down');
      const out = up.shape[0]!, r = down.shape[0]!;
      if (T.mid) return tucker(T.mid, down, up.data, out);
      const cols = down.data.length / r;
      const w = new Float32Array(out * cols);
      matmulAccumulate(w, up.data, down.data, out, r, cols);
      return w;
    }
    case 'loha': {
      const a1 = need(m, 'hada_w1_a'), b1 = need(m, 'hada_w1_b'), a2 = need(m, 'hada_w2_a'), b2 = need(m, 'hada_w2_b');
      // With Tucker cores the `a` factors are stored [R, out].
      const w1 = T.hada_t1 ? tucker(T.hada_t1, b1, transpose(a1.data, a1.shape[0]!, a1.data.length / a1.shape[0]!), a1.data.length / a1.shape[0]!) : product(a1, b1);
      const w2 = T.hada_t2 ? tucker(T.hada_t2, b2, transpose(a2.data, a2.shape[0]!, a2.data.length / a2.shape[0]!), a2.data.length / a2.shape[0]!) : product(a2, b2);
      if (w1.length !== w2.length) throw new Error(`LoRA module ${m.name}: LoHa factors give ${w1.length} and ${w2.length} elements`);
      for (let i = 0; i < w1.length; i++) w1[i]! *= w2[i]!;
      return w1;
    }
    case 'lokr': {
      const w1: F32Tensor = T.lokr_w1 ?? { shape: [need(m, 'lokr_w1_a').shape[0]!, need(m, 'lokr_w1_b').data.length / T.lokr_w1_b!.shape[0]!], data: product(T.lokr_w1_a!, T.lokr_w1_b!) };
      let w2: Float32Array, c: number;
      if (T.lokr_w2) {
        w2 = T.lokr_w2.data;
        c = T.lokr_w2.shape[0]!;
      } else if (T.lokr_t2) {
        const a2 = need(m, 'lokr_w2_a');
        c = a2.data.length / a2.shape[0]!;
        w2 = tucker(T.lokr_t2, need(m, 'lokr_w2_b'), transpose(a2.data, a2.shape[0]!, c), c);
      } else {
        const a2 = need(m, 'lokr_w2_a');
        c = a2.shape[0]!;
        w2 = product(a2, need(m, 'lokr_w2_b'));
      }
      return kron(w1, w1.shape[1] ?? 1, w2, c);
    }
    case 'full':
      return need(m, 'diff').data.slice();
    case 'ia3':
      throw new Error(`LoRA module ${m.name}: IA3 scales the weight itself; use applyModule`);
  }
}

function rawSize(m: LoraModule): number {
  const up = m.tensors.up, down = m.tensors.down;
  return up && down ? up.shape[0]! * (down.data.length / down.shape[0]!) : -1;
}

/**
 * A conv LoRA trained on fewer input channels than the target (a 4-channel conv_in LoRA on a 9-channel
 * inpainting UNet): A1111 zero-pads ΔW on the input axis, i.e. only the first channels change.
 */
function applyPaddedInputs(weight: Float32Array, shape: readonly number[], m: LoraModule, multiplier: number): void {
  const [out, inT] = shape as [number, number];
  const k = numel(shape.slice(2));
  const inL = m.tensors.down!.shape[1]!;
  const d = computeDelta(m, [out, inL, ...shape.slice(2)]);
  for (let o = 0; o < out; o++)
    for (let i = 0; i < inL * k; i++) weight[o * inT * k + i]! += multiplier * d[o * inL * k + i]!;
}

/** IA3 (A1111 network_ia3): ΔW = W ⊙ w, w per output row, or per input column when on_input is set. */
function applyIa3(weight: Float32Array, shape: readonly number[], m: LoraModule, multiplier: number): void {
  const w = need(m, 'ia3_weight').data;
  const onInput = (m.tensors.on_input?.data[0] ?? 0) !== 0;
  const rows = shape[0]!, cols = weight.length / rows;
  if (w.length !== (onInput ? cols : rows)) {
    throw new Error(`LoRA module ${m.name}: IA3 vector has ${w.length} values, the weight is [${shape.join(', ')}]`);
  }
  const f = multiplier * m.scale;
  for (let o = 0; o < rows; o++)
    for (let j = 0; j < cols; j++) weight[o * cols + j]! += f * weight[o * cols + j]! * w[onInput ? j : o]!;
}

/**
 * scale·ΔW for `targetShape`. Throws (naming the module) when the element counts disagree;
 * the merger turns that into a per-module report entry.
 */
export function computeDelta(m: LoraModule, targetShape: readonly number[]): Float32Array {
  const w = rawDelta(m);
  const n = numel(targetShape);
  if (w.length !== n) {
    throw new Error(`LoRA module ${m.name} gives ${w.length} values, its target has shape [${targetShape.join(', ')}] (${n})`);
  }
  if (m.scale !== 1) for (let i = 0; i < w.length; i++) w[i]! *= m.scale;
  return w;
}

/**
 * Adds multiplier·(patched − W) into `weight` (a view of the target, shape `shape`), where patched is
 * W + scale·ΔW, or for DoRA the magnitude-renormalised W'' of A1111: W' = W + scale·ΔW,
 * W'' = W'·magnitude / ‖W'‖ (per input column for kohya `dora_scale` [1, in], per output row for PEFT).
 */
export function applyModule(weight: Float32Array, shape: readonly number[], m: LoraModule, multiplier: number): void {
  if (m.kind === 'ia3') return applyIa3(weight, shape, m, multiplier);
  const down = m.tensors.down;
  if (!m.dora && down && down.shape.length === 4 && shape.length === 4 && down.shape[1]! < shape[1]! && rawSize(m) !== numel(shape)) {
    return applyPaddedInputs(weight, shape, m, multiplier);
  }
  const d = computeDelta(m, shape);
  if (!m.dora) {
    for (let i = 0; i < d.length; i++) weight[i]! += multiplier * d[i]!;
    return;
  }
  const rows = shape[0]!, cols = weight.length / rows;
  const inner = numel(shape.slice(2)), inputs = cols / inner;
  const mag = m.dora.magnitude.data;
  for (let i = 0; i < d.length; i++) d[i]! += weight[i]!;
  if (m.dora.axis === 'out') {
    if (mag.length !== rows) throw new Error(`LoRA module ${m.name}: DoRA magnitude has ${mag.length} values, the weight has ${rows} rows`);
    for (let o = 0; o < rows; o++) {
      let s = 0;
      for (let j = 0; j < cols; j++) s += d[o * cols + j]! ** 2;
      const f = mag[o]! / Math.sqrt(s);
      for (let j = 0; j < cols; j++) d[o * cols + j]! *= f;
    }
  } else {
    if (mag.length !== inputs) throw new Error(`LoRA module ${m.name}: DoRA scale has ${mag.length} values, the weight has ${inputs} inputs`);
    const norms = new Float64Array(inputs);
    for (let o = 0; o < rows; o++) for (let j = 0; j < cols; j++) norms[Math.floor(j / inner)]! += d[o * cols + j]! ** 2;
    for (let o = 0; o < rows; o++)
      for (let j = 0; j < cols; j++) {
        const q = Math.floor(j / inner);
        d[o * cols + j]! *= mag[q]! / Math.sqrt(norms[q]!);
      }
  }
  for (let i = 0; i < d.length; i++) weight[i]! += multiplier * (d[i]! - weight[i]!);
}
