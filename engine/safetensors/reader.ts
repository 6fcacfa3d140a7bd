/**
 * Lazy safetensors reader: `open` reads and validates only the header; tensors are read on demand with
 * positioned reads on one file handle, so a multi-GB checkpoint is never held in one Buffer.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { UserError } from '../util/errors.ts';
import { headerLength, parseHeader, type ParsedHeader, type TensorInfo } from './header.ts';
import { toFloat32OffThread, viewAs, type TypedTensor } from './typed.ts';

async function openForRead(path: string): Promise<FileHandle> {
  try {
    return await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : code === 'EACCES' ? 'permission denied' : (e as Error).message;
    throw new UserError(`${path}: cannot open: ${why}`, { cause: e });
  }
}

// One read call is limited to about 2 GiB by Node; larger tensors are read in slices.
const READ_CHUNK = 1 << 30;

/** Fills `into` from `position`; a short read means the file shrank after it was validated. */
async function readFully(fh: FileHandle, path: string, into: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < into.length) {
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(into, done, Math.min(READ_CHUNK, into.length - done), position + done));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EISDIR') throw new UserError(`${path}: cannot read: is a folder`, { cause: e });
      throw e;
    }
    if (bytesRead === 0) throw new UserError(`${path}: file ended at byte ${position + done} while reading (was it truncated while open?)`);
    done += bytesRead;
  }
}

async function readHeader(fh: FileHandle, path: string): Promise<ParsedHeader> {
  let size: number;
  try {
    size = (await fh.stat()).size;
  } catch (e) {
    throw new UserError(`${path}: cannot stat: ${(e as Error).message}`, { cause: e });
  }
  const prefix = new Uint8Array(8);
  if (size >= 8) await readFully(fh, path, prefix, 0);
  const n = headerLength(path, prefix, size);
  const bytes = new Uint8Array(n);
  await readFully(fh, path, bytes, 8);
  return parseHeader(path, bytes, size);
}

export async function readHeaderOnly(path: string): Promise<ParsedHeader> {
  const fh = await openForRead(path);
  try {
    return await readHeader(fh, path);
  } finally {
    await fh.close();
  }
}

export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  private fh: FileHandle | undefined;

  private constructor(
    readonly path: string,
    fh: FileHandle,
    readonly metadata: Record<string, string>,
    tensors: TensorInfo[],
  ) {
    this.fh = fh;
    // Frozen: infos are handed out as-is, and a caller editing a shape must not corrupt later reads.
    this.tensors = new Map(tensors.map((t) => [t.name, Object.freeze({ ...t, shape: Object.freeze([...t.shape]) as number[] })]));
  }

  static async open(path: string): Promise<SafetensorsFile> {
    const fh = await openForRead(path);
    try {
      const h = await readHeader(fh, path);
      return new SafetensorsFile(path, fh, h.metadata, h.tensors);
    } catch (e) {
      await fh.close().catch(() => {});
      throw e;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new UserError(`${this.path}: no tensor named "${name}"`);
    return t;
  }

  /** Bytes [start, end) of the tensor's data (relative to the tensor, defaults: the whole tensor). */
  async readBytes(name: string, start = 0, end?: number): Promise<Buffer> {
    const t = this.info(name);
    const stop = end ?? t.byteLength;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(stop) || start < 0 || stop < start || stop > t.byteLength) {
      throw new RangeError(`${this.path}: byte range [${start}, ${stop}) is outside tensor "${name}" (${t.byteLength} bytes)`);
    }
    // A fresh ArrayBuffer (not Node's shared pool) so the bytes can be viewed as any typed array, aligned.
    const ab = new ArrayBuffer(stop - start);
    await readFully(this.handle(), this.path, new Uint8Array(ab), t.offset + start);
    return Buffer.from(ab);
  }

  async read(name: string): Promise<TypedTensor> {
    const t = this.info(name);
    const buf = await this.readBytes(name);
    return { dtype: t.dtype, shape: [...t.shape], data: viewAs(t.dtype, buf.buffer as ArrayBuffer, 0, t.byteLength) };
  }

  /** Any dtype converted to float32 (large half-precision tensors on a worker thread); see `toFloat32` for how I64 and BOOL convert. */
  async readFloat32(name: string): Promise<Float32Array> {
    const t = await this.read(name);
    return toFloat32OffThread(t.dtype, t.data);
  }

  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = undefined;
    await fh?.close();
  }

  private handle(): FileHandle {
    if (!this.fh) throw new Error(`${this.path}: read after close()`);
    return this.fh;
  }
}
