/**
 * The LoRA folder as A1111's Lora extension sees it: `/sdapi/v1/loras` entries, name/alias resolution for
 * `<lora:…>` tags (§2.2 of the reference), and LoRA hashes for infotexts.
 */
import { extname, basename } from 'node:path';
import { readHeaderOnly } from '../engine/safetensors/index.ts';
import { HashCache, safetensorsDataStart, sha256File } from './hashes.ts';
import { walkFiles } from './models.ts';

export interface LoraEntry {
  /** File stem; subfolders are not part of it. */
  name: string;
  /** `ss_output_name` or the stem. */
  alias: string;
  path: string;
  /** The raw `__metadata__` strings ({} for non-safetensors files or unreadable headers). */
  metadata: Record<string, string>;
  /** Why the header could not be read, if it could not. */
  error: string | null;
}

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
  private byName = new Map<string, LoraEntry>();
  private aliases = new Map<string, LoraEntry>();
  private forbidden = new Set<string>();

  constructor(
    readonly dir: string,
    private readonly hashes: HashCache,
    private readonly log: (msg: string) => void = () => {},
  ) {}

  async refresh(): Promise<void> {
    const files = await walkFiles(this.dir, ['.safetensors', '.pt', '.ckpt']);
    const byName = new Map<string, LoraEntry>();
    for (const path of files) {
      const name = basename(path, extname(path));
      let metadata: Record<string, string> = {};
      let error: string | null = null;
      if (extname(path).toLowerCase() === '.safetensors') {
        try {
          metadata = (await readHeaderOnly(path)).metadata;
        } catch (e) {
          error = (e as Error).message;
          this.log(`warning: LoRA ${path}: ${error}`);
        }
      }
      const alias = metadata['ss_output_name'] ?? name;
      // A later file with the same stem replaces the earlier one but keeps its place, as a Python dict does.
      byName.set(name, { name, alias, path, metadata, error });
    }
    const aliases = new Map<string, LoraEntry>();
    const count = new Map<string, number>();
    const forbidden = new Set(['none', 'addams']);
    for (const e of byName.values()) {
      aliases.set(e.name, e);
      aliases.set(e.alias, e);
      count.set(e.alias.toLowerCase(), (count.get(e.alias.toLowerCase()) ?? 0) + 1);
    }
    for (const [a, n] of count) if (n > 1) forbidden.add(a);
    this.byName = byName;
    this.aliases = aliases;
    this.forbidden = forbidden;
  }

  list(): LoraEntry[] {
    return [...this.byName.values()];
  }

  /** A1111 lookup: by stem only when the name is a forbidden alias, else by stem or alias. Exact case. */
  resolve(name: string): LoraEntry | null {
    if (this.forbidden.has(name.toLowerCase())) return this.byName.get(name) ?? null;
    return this.aliases.get(name) ?? null;
  }

  /** Short hash (12 hex) for infotexts: `sshs_model_hash` if the file carries it, else the addnet hash. */
  async shortHash(e: LoraEntry): Promise<string> {
    const stored = e.metadata['sshs_model_hash'];
    if (stored && /^[0-9a-f]{12,}$/i.test(stored)) return stored.slice(0, 12).toLowerCase();
    const isSt = extname(e.path).toLowerCase() === '.safetensors';
    const full = await this.hashes.get(`lora/${e.path}`, e.path, async () => sha256File(e.path, isSt ? await safetensorsDataStart(e.path) : 0));
    return full.slice(0, 12);
  }
}
