/**
 * A1111's `cache.json`: full-file sha256 hashes kept by key (`checkpoint/<name>`, `vae/<name>`, `lora/<path>`),
 * each with the file's mtime, so a multi-GB checkpoint is hashed once and re-hashed only when it changes.
 * `lora-scripts serve` keeps it in its data folder and `lora-scripts generate` in the folder it runs in (the
 * webui root, the same file `serve` uses by default), in A1111's format plus the file size:
 *
 *   { "hashes": { "<key>": { "mtime": <seconds>, "size": <bytes>, "sha256": "<hex>" } }, …other sections kept… }
 *
 * An entry of ours must match the file's mtime and size; one A1111 wrote (no size) holds while the file is not
 * newer than it, A1111's own rule, so an A1111 install's cache.json serves checkpoint hashes here and back.
 * The file is written atomically and merged with what is on disk at each write, so a CLI run and a server
 * sharing it keep each other's entries.
 */
import { readFile, stat } from 'node:fs/promises';
import { writeBufferAtomic } from './atomic-write.ts';
import { sha256File } from './sha256-file.ts';

interface Entry {
  /** Seconds, as Python's os.path.getmtime. */
  mtime: number;
  /** Absent in entries A1111 wrote. */
  size?: number;
  sha256: string;
}

type CacheFile = Record<string, unknown> & { hashes?: Record<string, Entry> };

/** The keys both sides write, one rule: A1111's `<kind>/<name>` titles. */
export const hashKey = {
  /** A checkpoint by its name in the checkpoint folder (`sub/model.safetensors`), or its absolute path outside it. */
  checkpoint: (name: string) => `checkpoint/${name}`,
  vae: (name: string) => `vae/${name}`,
  /** LoRAs by path: the same stem may sit in two subfolders. */
  lora: (path: string) => `lora/${path}`,
};

function isEntry(v: unknown): v is Entry {
  const e = v as Entry;
  return !!e && typeof e === 'object' && typeof e.mtime === 'number' && (e.size === undefined || typeof e.size === 'number') && typeof e.sha256 === 'string';
}

async function readCacheFile(path: string): Promise<CacheFile> {
  try {
    const j = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return j && typeof j === 'object' && !Array.isArray(j) ? (j as CacheFile) : {};
  } catch {
    // A missing or damaged cache only costs a rehash.
    return {};
  }
}

export class HashCache {
  private data: Record<string, Entry> = {};
  private loading: Promise<void> | null = null;
  private saving: Promise<void> = Promise.resolve();
  /** Entries hashed since the last write: they go over what is on disk, the rest of the disk's entries stay. */
  private pending: Record<string, Entry> = {};

  constructor(readonly path: string) {}

  private load(): Promise<void> {
    this.loading ??= readCacheFile(this.path).then((j) => {
      const hashes = j.hashes && typeof j.hashes === 'object' ? j.hashes : {};
      for (const [k, v] of Object.entries(hashes)) if (isEntry(v)) this.data[k] = v;
    });
    return this.loading;
  }

  /** The cached hash if the file is unchanged (same mtime and size), else null. */
  async peek(key: string, file: string): Promise<string | null> {
    await this.load();
    const e = this.data[key];
    if (!e) return null;
    const st = await stat(file).catch(() => null);
    if (!st) return null;
    const mtime = st.mtimeMs / 1000;
    // Microseconds of slack: the seconds went through a JSON float.
    const fresh = e.size === undefined ? mtime <= e.mtime + 1e-6 : st.size === e.size && Math.abs(mtime - e.mtime) < 1e-6;
    return fresh ? e.sha256 : null;
  }

  /** The cached hash, or `compute()`'s, then kept on disk. */
  async get(key: string, file: string, compute: () => Promise<string>): Promise<string> {
    const hit = await this.peek(key, file);
    if (hit) return hit;
    const st = await stat(file);
    const sha256 = await compute();
    const entry = { mtime: st.mtimeMs / 1000, size: st.size, sha256 };
    this.data[key] = entry;
    this.pending[key] = entry;
    this.saving = this.saving.then(() => this.save()).catch(() => {});
    await this.saving;
    return sha256;
  }

  /** The whole file's sha256 (hex), from the cache when the file is unchanged. */
  sha256(key: string, file: string): Promise<string> {
    return this.get(key, file, () => sha256File(file));
  }

  private async save(): Promise<void> {
    const onDisk = await readCacheFile(this.path);
    const hashes = { ...(onDisk.hashes && typeof onDisk.hashes === 'object' ? onDisk.hashes : {}), ...this.pending };
    this.pending = {};
    await writeBufferAtomic(this.path, JSON.stringify({ ...onDisk, hashes }, null, 1));
  }
}

/** sha256 of a file through `cache` when there is one, else computed. */
export function cachedSha256(cache: HashCache | null | undefined, key: string, file: string): Promise<string> {
  return cache ? cache.sha256(key, file) : sha256File(file);
}
