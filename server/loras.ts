/**
 * The LoRA folder as the server shows it: the engine's LoraLibrary (the one name → file rule the CLI uses too,
 * §2.2 of the reference) plus what HTTP needs on top: `/sdapi/v1/loras` metadata and cached short hashes.
 */
import { LoraLibrary, type LoraEntry } from '../engine/lora/resolve.ts';
import { cachedLoraShortHash } from '../engine/lora/hash.ts';
import type { HashCache } from '../engine/util/hash-cache.ts';

export type { LoraEntry };

const FIRST_KEYS = ['ss_sd_model_name', 'ss_resolution', 'ss_clip_skip', 'ss_num_train_images', 'ss_tag_frequency'];

/** A1111's `/sdapi/v1/loras` metadata: values starting with `{` JSON-decoded, a few keys moved first. */
export function apiMetadata(meta: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const decode = (v: string): unknown => {
    if (!v.startsWith('{')) return v;
    try {
      return JSON.parse(v);
    } catch {
      return v;
    }
  };
  for (const k of FIRST_KEYS) if (k in meta) out[k] = decode(meta[k]!);
  for (const [k, v] of Object.entries(meta)) if (!(k in out)) out[k] = decode(v);
  return out;
}

export class LoraIndex {
  readonly library: LoraLibrary;

  constructor(
    readonly dir: string,
    private readonly hashes: HashCache,
  ) {
    this.library = new LoraLibrary(dir);
  }

  async refresh(): Promise<void> {
    await this.library.refresh();
  }

  /** As `/sdapi/v1/loras` lists them: one per file stem. */
  list(): LoraEntry[] {
    return this.library.listByStem();
  }

  /** The file for a `<lora:NAME>` stem or alias as of the last scan (the engine's rule), or null. */
  resolve(name: string): LoraEntry | null {
    return this.library.find(name) ?? null;
  }

  /** Short hash (12 hex) for infotexts, the engine's rule, computed hashes cached by file size + mtime. */
  async shortHash(e: LoraEntry): Promise<string> {
    return cachedLoraShortHash(e, this.hashes);
  }
}
