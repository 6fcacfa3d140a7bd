/**
 * Parses and validates a safetensors header with the rules of the reference implementation
 * (huggingface/safetensors `tensor.rs`), plus a duplicate-key check the reference parser lacks.
 * Every error names the file and, where there is one, the tensor.
 */
import { UserError } from '../util/errors.ts';
import { DTYPE_BYTES, UNSUPPORTED_DTYPES, isDType, numelBig, type DType } from './dtype.ts';

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** absolute byte offset of the data in the file */
  offset: number;
  byteLength: number;
}

export interface ParsedHeader {
  metadata: Record<string, string>;
  tensors: TensorInfo[];
}

/** The reference reader's limit on the JSON header. */
export const MAX_HEADER_BYTES = 100_000_000;

export function fail(path: string, what: string): never {
  throw new UserError(`${path}: not a valid safetensors file: ${what}`);
}

/** Checks the 8-byte length prefix against the file size before anything is allocated for the header. */
export function headerLength(path: string, prefix: Uint8Array, fileSize: number): number {
  if (fileSize < 8) fail(path, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(path, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (8n + n > BigInt(fileSize)) fail(path, `header length ${n} runs past the end of the ${fileSize}-byte file`);
  return Number(n);
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parses the header bytes (after the 8-byte prefix) of a file of `fileSize` bytes. */
export function parseHeader(path: string, bytes: Uint8Array, fileSize: number): ParsedHeader {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    fail(path, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) fail(path, 'header does not start with "{"');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) fail(path, 'header is not a JSON object');
  const dup = firstDuplicateKey(text);
  if (dup !== undefined) fail(path, `duplicate key "${dup}" in header`);

  const dataStart = 8 + bytes.length;
  let metadata: Record<string, string> = {};
  const tensors: TensorInfo[] = [];
  const begins = new Map<string, bigint>();
  for (const [name, entry] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(path, entry);
      continue;
    }
    const t = `tensor "${name}"`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) fail(path, `${t}: entry is not an object`);
    const { dtype, shape, data_offsets: offs } = entry as Record<string, unknown>;
    if (typeof dtype !== 'string') fail(path, `${t}: missing or non-string "dtype"`);
    if (!isDType(dtype)) {
      if (UNSUPPORTED_DTYPES.has(dtype)) fail(path, `${t}: dtype ${dtype} is not supported by this reader`);
      fail(path, `${t}: unknown dtype ${JSON.stringify(dtype).slice(0, 40)}`);
    }
    if (!Array.isArray(shape) || !shape.every(isIndex)) fail(path, `${t}: "shape" must be an array of non-negative integers`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isIndex)) {
      fail(path, `${t}: "data_offsets" must be [begin, end] with non-negative integers`);
    }
    const [b, e] = offs as [number, number];
    if (e < b) fail(path, `${t}: data_offsets end ${e} is before begin ${b}`);
    if (e > fileSize - dataStart) {
      fail(path, `${t}: data ends at byte ${dataStart + e}, past the end of the ${fileSize}-byte file (truncated?)`);
    }
    const expected = numelBig(shape) * BigInt(DTYPE_BYTES[dtype]);
    if (BigInt(e - b) !== expected) {
      fail(path, `${t}: ${dtype} ${JSON.stringify(shape)} needs ${expected} bytes but data_offsets [${b}, ${e}] hold ${e - b}`);
    }
    begins.set(name, BigInt(b));
    tensors.push({ name, dtype, shape: shape as number[], offset: dataStart + b, byteLength: e - b });
  }

  // The buffer must be tiled exactly: sorted by offset, each tensor starts where the previous ended.
  const sorted = [...tensors].sort((x, y) => x.offset - y.offset || x.byteLength - y.byteLength);
  let end = dataStart;
  let prev: string | undefined;
  for (const ti of sorted) {
    if (ti.offset !== end) {
      const rel = ti.offset - dataStart;
      const at = end - dataStart;
      if (ti.offset > end) fail(path, `tensor "${ti.name}" starts at ${rel}, leaving a gap after ${prev ? `tensor "${prev}"` : 'the header'} (which ends at ${at})`);
      fail(path, `tensor "${ti.name}" starts at ${rel}, overlapping ${prev ? `tensor "${prev}"` : 'the header'} (which ends at ${at})`);
    }
    end = ti.offset + ti.byteLength;
    prev = ti.name;
  }
  if (end !== fileSize) {
    const last = prev ? `last tensor "${prev}"` : 'header (no tensors)';
    if (end > fileSize) fail(path, `${last} ends at byte ${end}, past the end of the ${fileSize}-byte file (truncated?)`);
    fail(path, `${fileSize - end} unexpected trailing bytes after the ${last}`);
  }
  // "File order" is data order: JSON key order is not reliable (JS lists integer-like keys first).
  return { metadata, tensors: sorted };
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function parseMetadata(path: string, m: unknown): Record<string, string> {
  if (m === null) return {};
  if (typeof m !== 'object' || Array.isArray(m)) fail(path, '"__metadata__" is not an object of strings');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m as Record<string, unknown>)) {
    if (typeof v !== 'string') fail(path, `"__metadata__" value for "${k}" is ${v === null ? 'null' : typeof v}, not a string`);
    out[k] = v;
  }
  return out;
}

/**
 * JSON.parse keeps the last of repeated keys silently; scan the (already valid) JSON text for any object
 * that repeats a key. Returns the first repeated key, if any.
 */
function firstDuplicateKey(text: string): string | undefined {
  const stack: Array<{ keys: Set<string>; expectKey: boolean } | null> = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      while (text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c /* \ */ ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) stack.push({ keys: new Set(), expectKey: true });
    else if (c === 0x5b /* [ */) stack.push(null);
    else if (c === 0x7d /* } */ || c === 0x5d /* ] */) stack.pop();
    else if (c === 0x2c /* , */) {
      const top = stack[stack.length - 1];
      if (top) top.expectKey = true;
    }
  }
  return undefined;
}
