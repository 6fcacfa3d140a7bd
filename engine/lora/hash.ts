/**
 * The hashes A1111 and kohya attach to LoRA files.
 * - addnet hash (`sshs_model_hash`): sha256 of everything after the safetensors header, i.e. the tensor
 *   bytes, so it does not change when metadata is edited. A1111 shows its first 12 hex digits.
 * - legacy hash (`sshs_legacy_hash`): sha256 of the 64 KiB at offset 1 MiB of the whole file, first 8 hex
 *   digits. kohya computes both on an in-memory save whose metadata keeps only the `ss_*` keys.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { extname } from 'node:path';
import { readHeaderOnly } from '../safetensors/index.ts';
import { hashKey, type HashCache } from '../util/hash-cache.ts';
import { LEGACY_HASH_WINDOW, sha256File } from '../util/sha256-file.ts';

const LEGACY_OFFSET = LEGACY_HASH_WINDOW.offset;
const LEGACY_LENGTH = LEGACY_HASH_WINDOW.length;

export interface LaidOutTensor {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** Header bytes (length prefix included) as our safetensors writer lays them out. */
export function headerBytes(tensors: LaidOutTensor[], metadata: Record<string, string>): Buffer {
  const head: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) head.__metadata__ = metadata;
  let off = 0;
  for (const t of tensors) {
    Object.defineProperty(head, t.name, { value: { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.byteLength] }, enumerable: true });
    off += t.bytes.byteLength;
  }
  const json = Buffer.from(JSON.stringify(head), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return header;
}

/** `sshs_model_hash` and `sshs_legacy_hash` for tensors about to be written in this order. */
export function sshsHashes(tensors: LaidOutTensor[], metadata: Record<string, string>): { sshs_model_hash: string; sshs_legacy_hash: string } {
  const body = createHash('sha256');
  for (const t of tensors) body.update(t.bytes);
  const ssOnly = Object.fromEntries(Object.entries(metadata).filter(([k]) => k.startsWith('ss_')));
  const header = headerBytes(tensors, ssOnly);
  // The 64 KiB window at 1 MiB of header ‖ body, taken piecewise so the file is never assembled.
  const legacy = createHash('sha256');
  let pos = 0;
  const take = (chunk: Uint8Array) => {
    const start = Math.max(LEGACY_OFFSET, pos), end = Math.min(LEGACY_OFFSET + LEGACY_LENGTH, pos + chunk.byteLength);
    if (end > start) legacy.update(chunk.subarray(start - pos, end - pos));
    pos += chunk.byteLength;
  };
  take(header);
  for (const t of tensors) {
    if (pos >= LEGACY_OFFSET + LEGACY_LENGTH) break;
    take(t.bytes);
  }
  return { sshs_model_hash: body.digest('hex'), sshs_legacy_hash: legacy.digest('hex').slice(0, 8) };
}

/** A `sshs_model_hash` the file carries, if it looks like one (lower-cased). */
export function storedLoraHash(metadata: Record<string, string>): string | null {
  const v = metadata.sshs_model_hash;
  return v && /^[0-9a-f]{12,}$/i.test(v) ? v.toLowerCase() : null;
}

/** What A1111 hashes when a LoRA carries no stored hash: the addnet hash of a .safetensors, else the whole file. */
export async function computedLoraHash(path: string): Promise<string> {
  return extname(path).toLowerCase() === '.safetensors' ? addnetHash(path) : sha256File(path);
}

/**
 * A1111's short LoRA hash for infotexts (`Lora hashes`, 12 hex digits): the stored hash, else the computed one;
 * `compute` lets a caller cache the computed hash (see `cachedLoraShortHash`).
 */
export async function loraShortHash(e: { path: string; metadata: Record<string, string> }, compute: (path: string) => Promise<string> = computedLoraHash): Promise<string> {
  return (storedLoraHash(e.metadata) ?? (await compute(e.path))).slice(0, 12);
}

/** `loraShortHash` with a computed hash kept in A1111's cache.json (engine/util/hash-cache.ts), when there is one. */
export function cachedLoraShortHash(e: { path: string; metadata: Record<string, string> }, cache: HashCache | null): Promise<string> {
  return loraShortHash(e, cache ? (path) => cache.get(hashKey.lora(path), path, () => computedLoraHash(path)) : computedLoraHash);
}

/** A1111's LoRA hash of a file on disk: `sshs_model_hash` from the metadata if present, else the computed one. */
export async function loraFileHash(path: string): Promise<string> {
  if (extname(path).toLowerCase() === '.safetensors') {
    const stored = storedLoraHash((await readHeaderOnly(path)).metadata);
    if (stored) return stored;
  }
  return computedLoraHash(path);
}

/** sha256 of the bytes after the header, streamed. */
export async function addnetHash(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const prefix = Buffer.alloc(8);
    await fh.read(prefix, 0, 8, 0);
    const start = 8 + Number(prefix.readBigUInt64LE(0));
    const hash = createHash('sha256');
    for await (const chunk of fh.createReadStream({ start, autoClose: false })) hash.update(chunk as Buffer);
    return hash.digest('hex');
  } finally {
    await fh.close();
  }
}
