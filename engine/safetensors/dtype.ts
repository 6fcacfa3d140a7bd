/** The element types this reader and writer handle, with their sizes in bytes. */
export type DType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<DType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * Dtypes the safetensors format defines that this reader does not decode; named separately so the error
 * says "not supported" instead of "unknown", which would wrongly suggest a corrupt file.
 */
export const UNSUPPORTED_DTYPES: ReadonlySet<string> = new Set([
  'F4', 'F6_E2M3', 'F6_E3M2', 'F8_E5M2', 'F8_E4M3', 'F8_E8M0', 'F8_E4M3FNUZ', 'F8_E5M2FNUZ',
  'U16', 'U32', 'U64', 'C64',
]);

export function isDType(s: unknown): s is DType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Element count of a shape; 1 for a 0-d tensor. Returns a bigint so huge shapes cannot silently overflow. */
export function numelBig(shape: readonly number[]): bigint {
  if (shape.includes(0)) return 0n;
  let n = 1n;
  for (const d of shape) {
    n *= BigInt(d);
    // Saturate: a hostile header with a million huge dims must not build a megabyte-long bigint.
    if (n > 1n << 64n) return n;
  }
  return n;
}
