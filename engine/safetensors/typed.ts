/** Views raw little-endian tensor bytes as typed arrays, and converts any dtype to float32. */
import { endianness } from 'node:os';
import type { DType } from './dtype.ts';
import { bf16ToF32, f16ToF32 } from './float.ts';
import { WorkerPool, WorkerStartError } from '../util/worker-pool.ts';

// safetensors data is little-endian and typed arrays use the host order; refuse to misread on a big-endian host.
if (endianness() !== 'LE') throw new Error('safetensors I/O requires a little-endian host');

export type TypedArrayOf =
  | Float64Array
  | Float32Array
  | Uint16Array /* F16, BF16 raw bits */
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

export interface TypedTensor {
  dtype: DType;
  shape: number[];
  data: TypedArrayOf;
}

/** `buf` must start at an offset aligned for the dtype (a fresh ArrayBuffer is). */
export function viewAs(dtype: DType, buf: ArrayBuffer, byteOffset: number, byteLength: number): TypedArrayOf {
  switch (dtype) {
    case 'F64': return new Float64Array(buf, byteOffset, byteLength / 8);
    case 'F32': return new Float32Array(buf, byteOffset, byteLength / 4);
    case 'F16':
    case 'BF16': return new Uint16Array(buf, byteOffset, byteLength / 2);
    case 'I64': return new BigInt64Array(buf, byteOffset, byteLength / 8);
    case 'I32': return new Int32Array(buf, byteOffset, byteLength / 4);
    case 'I16': return new Int16Array(buf, byteOffset, byteLength / 2);
    case 'I8': return new Int8Array(buf, byteOffset, byteLength);
    case 'U8':
    case 'BOOL': return new Uint8Array(buf, byteOffset, byteLength);
  }
}

/**
 * Converts a native tensor to float32. F64 and integers round to the nearest float32; BOOL gives 0 or 1
 * (any non-zero byte is true). I64 goes through a JS number: exact up to 2^24 in magnitude, rounded to
 * nearest beyond that (above 2^53 the value is rounded twice, to double then float32).
 */
export function toFloat32(dtype: DType, data: TypedArrayOf): Float32Array {
  switch (dtype) {
    case 'F32': return data as Float32Array;
    case 'F16': return f16ToF32(data as Uint16Array);
    case 'BF16': return bf16ToF32(data as Uint16Array);
    case 'I64': {
      const src = data as BigInt64Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
      return out;
    }
    case 'BOOL': {
      const src = data as Uint8Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = src[i] === 0 ? 0 : 1;
      return out;
    }
    default: return Float32Array.from(data as Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array);
  }
}

/** F16 / BF16 tensors at least this large convert on a worker thread (see `toFloat32OffThread`). */
export const OFF_THREAD_MIN_VALUES = 1 << 22;

let pool: WorkerPool | undefined;

/**
 * `toFloat32` on a worker thread for large F16 / BF16 tensors, whose conversion would hold the event loop
 * (SD 1.5's 38 M-value token embedding: 0.1 s on a quiet core, seconds on a busy machine) while a server
 * loads a checkpoint. `data` is moved to the worker when it owns its buffer; smaller tensors, other dtypes
 * and views convert here. Same bits either way.
 */
export async function toFloat32OffThread(dtype: DType, data: TypedArrayOf): Promise<Float32Array> {
  const owns = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
  if ((dtype !== 'F16' && dtype !== 'BF16') || data.length < OFF_THREAD_MIN_VALUES || !owns) return toFloat32(dtype, data);
  pool ??= new WorkerPool(import.meta.url, 'float16 conversion');
  try {
    return await pool.run<Float32Array>('toFloat32', [dtype, data], [data.buffer as ArrayBuffer]);
  } catch (e) {
    if (!(e instanceof WorkerStartError)) throw e;
    return toFloat32(dtype, data);
  }
}
