/** Named float32 buffers: parameters, gradients and optimizer state all travel in this shape. */
export type TensorMap = ReadonlyMap<string, Float32Array>;

/** Accepts a Map or a plain object so callers holding either need no conversion. */
export type TensorMapLike = TensorMap | Readonly<Record<string, Float32Array>>;

export function toTensorMap(t: TensorMapLike): TensorMap {
  if (t instanceof Map) return t;
  return new Map(Object.entries(t as Record<string, Float32Array>));
}

export function cloneTensorMap(t: TensorMap): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  for (const [k, v] of t) out.set(k, new Float32Array(v));
  return out;
}
