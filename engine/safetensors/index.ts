/** Public safetensors API: lazy validated reader, atomic writer, dtype tables. Float conversions live in float.ts. */
export { type DType, DTYPE_BYTES } from './dtype.ts';
export { type TensorInfo, MAX_HEADER_BYTES } from './header.ts';
export { SafetensorsFile, readHeaderOnly } from './reader.ts';
export { type TypedArrayOf, type TypedTensor, toFloat32 } from './typed.ts';
export { type TensorToWrite, writeSafetensors, writeSafetensorsStreaming } from './writer.ts';
