/**
 * Model hashes as A1111 computes them, cached in `<data-dir>/cache.json` by file size + mtime so a multi-GB
 * checkpoint is hashed once:
 * - checkpoint: sha256 of the whole file ("Model hash" = first 10 hex);
 * - legacy checkpoint hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex;
 * - LoRA hashes are the engine's (engine/lora/hash.ts); this cache only keeps them.
 */
import { createHash } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { sha256File } from '../engine/util/sha256-file.ts';

export { sha256File };

export async function legacyHash(path: string): Promise<string> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.alloc(0x10000);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0x100000);
    return createHash('sha256').update(buf.subarray(0, bytesRead)).digest('hex').slice(0, 8);
  } finally {
    await fh.close();
  }
}

interface Entry {
  mtime: number;
  size: number;
  sha256: string;
}

export class HashCache {
  private data: Record<string, Entry> = {};
  private loaded = false;
  private saving: Promise<void> = Promise.resolve();

  constructor(private readonly path: string) {}

  private async load(): Promise<void> {
    if (this.loaded) return;
    this.loaded = true;
    try {
      const j = JSON.parse(await readFile(this.path, 'utf8')) as { hashes?: Record<string, Entry> };
      if (j && typeof j.hashes === 'object' && j.hashes) this.data = j.hashes;
    } catch {
      // A missing or damaged cache only costs a rehash.
    }
  }

  /** The cached hash if the file is unchanged, else null. */
  async peek(key: string, file: string): Promise<string | null> {
    await this.load();
    const e = this.data[key];
    if (!e) return null;
    const st = await stat(file).catch(() => null);
    return st && st.mtimeMs === e.mtime && st.size === e.size ? e.sha256 : null;
  }

  async get(key: string, file: string, compute: () => Promise<string>): Promise<string> {
    const hit = await this.peek(key, file);
    if (hit) return hit;
    const st = await stat(file);
    const sha256 = await compute();
    this.data[key] = { mtime: st.mtimeMs, size: st.size, sha256 };
    const snapshot = JSON.stringify({ hashes: this.data }, null, 1);
    this.saving = this.saving.then(() => writeBufferAtomic(this.path, snapshot)).catch(() => {});
    await this.saving;
    return sha256;
  }
}
