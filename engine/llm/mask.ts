/**
 * Additive attention masks [B, 1, T, past + T] (0 visible, −inf hidden). A query sees a key when the key is
 * not in its future, belongs to the same packed document (segment), and, with a sliding window, lies fewer
 * than `window` positions back (transformers' `kv_idx > q_idx − sliding_window`). Every query sees itself,
 * so no softmax row is empty.
 */
export interface MaskSpec {
  batch: number;
  /** New tokens per row. */
  length: number;
  /** Cached tokens per row before the new ones. */
  past?: number;
  /** Segment id per key position, [batch, past + length]; keys of another segment are hidden. */
  segments?: Int32Array;
  window?: number | null;
}

export function attentionMask(spec: MaskSpec): Float32Array {
  const { batch: B, length: T } = spec;
  const P = spec.past ?? 0;
  const S = P + T;
  const out = new Float32Array(B * T * S).fill(-Infinity);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < T; t++) {
      const q = P + t;
      const row = (b * T + t) * S;
      const lo = spec.window ? Math.max(0, q - spec.window + 1) : 0;
      for (let s = lo; s <= q; s++) {
        if (spec.segments && spec.segments[b * S + s] !== spec.segments[b * S + q]) continue;
        out[row + s] = 0;
      }
    }
  return out;
}
