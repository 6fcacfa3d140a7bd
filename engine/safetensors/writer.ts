/**
 * safetensors writer. Always atomic (temporary file, fsync, rename). Tensors keep the caller's order and are
 * laid out contiguously; the header is padded with spaces to a multiple of 8 so every tensor is 8-byte aligned.
 */
import type { FileHandle } from 'node:fs/promises';
import { UserError } from '../util/errors.ts';
import { writeFileAtomic } from '../util/atomic-write.ts';
import { DTYPE_BYTES, isDType, numelBig, type DType } from './dtype.ts';

export interface TensorToWrite {
  dtype: DType;
  shape: number[];
  data: ArrayBufferView;
}

interface Entry {
  name: string;
  dtype: DType;
  shape: number[];
}

// Large views are written in slices so no single write call approaches the 2 GiB per-call limit.
const WRITE_CHUNK = 64 << 20;

function byteLengthOf(path: string, e: Entry): number {
  const t = `tensor "${e.name}"`;
  if (!isDType(e.dtype)) throw new UserError(`${path}: ${t}: unknown dtype ${String(e.dtype)}`);
  if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new UserError(`${path}: ${t}: shape ${JSON.stringify(e.shape)} must be non-negative integers`);
  }
  const n = numelBig(e.shape) * BigInt(DTYPE_BYTES[e.dtype]);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new UserError(`${path}: ${t}: shape ${JSON.stringify(e.shape)} is too large`);
  return Number(n);
}

/** Builds the padded header (with its 8-byte length prefix) and each tensor's byte length. */
function buildHeader(path: string, entries: Entry[], metadata: Record<string, string> | undefined): { header: Buffer; sizes: number[] } {
  const head: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new UserError(`${path}: __metadata__ value for "${k}" must be a string, got ${typeof v}`);
    }
    head.__metadata__ = metadata;
  }
  const sizes: number[] = [];
  const seen = new Set<string>();
  let off = 0;
  for (const e of entries) {
    if (typeof e.name !== 'string' || e.name === '' || e.name === '__metadata__') {
      throw new UserError(`${path}: invalid tensor name ${JSON.stringify(e.name)}`);
    }
    if (seen.has(e.name)) throw new UserError(`${path}: tensor "${e.name}" given twice`);
    seen.add(e.name);
    const size = byteLengthOf(path, e);
    sizes.push(size);
    // defineProperty, not assignment: a tensor named "__proto__" must become a key, not replace the prototype.
    Object.defineProperty(head, e.name, {
      value: { dtype: e.dtype, shape: e.shape, data_offsets: [off, off + size] },
      enumerable: true,
    });
    off += size;
  }
  const json = Buffer.from(JSON.stringify(head), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, sizes };
}

async function writeView(fh: FileHandle, v: ArrayBufferView, position: number): Promise<void> {
  const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  for (let done = 0; done < bytes.length; ) {
    const n = Math.min(WRITE_CHUNK, bytes.length - done);
    const { bytesWritten } = await fh.write(bytes, done, n, position + done);
    done += bytesWritten;
  }
}

export async function writeSafetensorsStreaming(
  path: string,
  entries: Array<{ name: string; dtype: DType; shape: number[] }>,
  produce: (name: string) => Promise<ArrayBufferView>,
  metadata?: Record<string, string>,
): Promise<void> {
  const { header, sizes } = buildHeader(path, entries, metadata);
  await writeFileAtomic(path, async (fh) => {
    await writeView(fh, header, 0);
    let pos = header.length;
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const data = await produce(e.name);
      if (!ArrayBuffer.isView(data) || data.byteLength !== sizes[i]) {
        throw new UserError(
          `${path}: tensor "${e.name}": ${e.dtype} ${JSON.stringify(e.shape)} needs ${sizes[i]} bytes, got ${ArrayBuffer.isView(data) ? data.byteLength : typeof data}`,
        );
      }
      await writeView(fh, data, pos);
      pos += data.byteLength;
    }
  });
}

export async function writeSafetensors(
  path: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const list = tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors);
  const entries = list.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  const data = new Map(list.map(([name, t]) => [name, t.data]));
  // Check every length before creating the temporary file, so a bad call leaves nothing behind.
  const { sizes } = buildHeader(path, entries, metadata);
  entries.forEach((e, i) => {
    const d = data.get(e.name);
    if (!ArrayBuffer.isView(d) || d.byteLength !== sizes[i]) {
      throw new UserError(
        `${path}: tensor "${e.name}": ${e.dtype} ${JSON.stringify(e.shape)} needs ${sizes[i]} bytes, got ${ArrayBuffer.isView(d) ? d.byteLength : typeof d}`,
      );
    }
  });
  await writeSafetensorsStreaming(path, entries, async (name) => data.get(name)!, metadata);
}
