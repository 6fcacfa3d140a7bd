/**
 * Checkpoints and VAEs on disk, listed as A1111 lists them, and resolution of the ids clients send
 * (`sd_model_checkpoint`, `sd_vae`, `refiner_checkpoint`). Only names found by scanning resolve, so a
 * request can never point the server at a path outside its folders.
 */
import { stat } from 'node:fs/promises';
import { join, extname, basename } from 'node:path';
import { statedNativeSize } from '../engine/sd/sidecar.ts';
import type { CheckpointRef, VaeRef } from './backend.ts';
import { hashKey, type HashCache } from '../engine/util/hash-cache.ts';
import { legacyHash } from '../engine/util/sha256-file.ts';
import { nameInFolder, vaeIdentity, type ModelIdentity, type VaeIdentity } from '../engine/generate/identity.ts';
import { findVae, listVaes } from '../engine/generate/vae-choice.ts';
import { listFilesRecursive } from '../engine/util/list-files.ts';

const SAFETENSORS = new Set(['.safetensors']);

/** A diffusers model folder is one checkpoint, listed as a whole. */
const isDiffusersFolder = async (dir: string): Promise<boolean> => (await stat(join(dir, 'model_index.json')).catch(() => null)) !== null;

export interface CheckpointEntry extends CheckpointRef {
  legacyHash: string | null;
  /** A `.yaml` beside the file (A1111 `config`), or null. */
  config: string | null;
  /** The picture side the model was trained at, when its config says (`image_size`), else null. */
  resolution: number | null;
}

export class ModelIndex {
  private ckpts: CheckpointEntry[] = [];
  private vaeList: VaeRef[] = [];

  /** True while the checkpoint folder is empty and the list holds the fallback checkpoint instead. */
  usingFallback = false;

  constructor(
    readonly ckptDir: string,
    readonly vaeDir: string,
    private readonly hashes: HashCache,
    /** A checkpoint file listed (under its file name) whenever the checkpoint folder holds none: the demo model. */
    private readonly fallback?: string,
  ) {}

  async refreshCheckpoints(): Promise<void> {
    const found = await listFilesRecursive(this.ckptDir, SAFETENSORS, { isModelFolder: isDiffusersFolder });
    this.usingFallback = found.length === 0 && this.fallback !== undefined;
    const files = this.usingFallback ? [this.fallback!] : found;
    const list: CheckpointEntry[] = [];
    for (const path of files) {
      const name = this.usingFallback ? basename(path) : nameInFolder(this.ckptDir, path);
      const isFile = extname(path).toLowerCase() === '.safetensors';
      const sha256 = isFile ? await this.hashes.peek(hashKey.checkpoint(name), path) : null;
      const yaml = path.replace(/\.safetensors$/i, '') + '.yaml';
      list.push(
        fill({
          name,
          path,
          modelName: name.replace(/\.safetensors$/i, '').replace(/[/\\]/g, '_'),
          sha256,
          legacyHash: isFile ? await legacyHash(path).catch(() => null) : null,
          config: isFile && (await stat(yaml).catch(() => null)) ? yaml : null,
          // A config that cannot be read fails when the model loads, with its reason; the listing goes on.
          resolution: isFile ? ((await statedNativeSize(path)) ?? null) : null,
        }),
      );
    }
    this.ckpts = list;
  }

  async refreshVaes(): Promise<void> {
    this.vaeList = await listVaes(this.vaeDir);
  }

  checkpoints(): CheckpointEntry[] {
    return this.ckpts;
  }

  vaes(): VaeRef[] {
    return this.vaeList;
  }

  /** A1111 `checkpoint_aliases`: title, name, model_name, stem, hashes and "name [hash]" forms. */
  findCheckpoint(id: string): CheckpointEntry | null {
    const t = id.trim();
    for (const c of this.ckpts) {
      const stem = basename(c.name).replace(/\.safetensors$/i, '');
      const ids = [c.title, c.name, c.modelName, stem];
      if (c.legacyHash) ids.push(c.legacyHash, `${c.name} [${c.legacyHash}]`);
      if (c.sha256 && c.shortHash) ids.push(c.sha256, c.shortHash, `${c.name} [${c.shortHash}]`, `${stem} [${c.shortHash}]`);
      if (ids.includes(t)) return c;
    }
    return null;
  }

  /** A1111's `get_closet_checkpoint_match`: an id `findCheckpoint` knows, else the shortest title containing the text. */
  closestCheckpoint(id: string): CheckpointEntry | null {
    const exact = this.findCheckpoint(id);
    if (exact) return exact;
    const found = this.ckpts.filter((c) => c.title.includes(id)).sort((a, b) => a.title.length - b.title.length);
    return found[0] ?? null;
  }

  findVae(name: string): VaeRef | null {
    return findVae(this.vaeList, name);
  }

  /** The infotext's identity of a checkpoint: its stem and short hash (known once `ensureHashed` ran). */
  identity(c: CheckpointEntry): ModelIdentity {
    return { name: basename(c.name).replace(/\.safetensors$/i, ''), shortHash: c.shortHash };
  }

  /** The infotext's identity of a VAE of the folder: its file name and short hash (cached on disk). */
  vaeIdentity(v: VaeRef): Promise<VaeIdentity> {
    return vaeIdentity(v.path, { cache: this.hashes, name: v.name });
  }

  /** Hashes a checkpoint (once; cached on disk) and updates its title, as A1111 does on first load. */
  async ensureHashed(c: CheckpointEntry): Promise<CheckpointEntry> {
    if (c.sha256 || extname(c.path).toLowerCase() !== '.safetensors') return c;
    c.sha256 = await this.hashes.sha256(hashKey.checkpoint(c.name), c.path);
    Object.assign(c, fill(c));
    return c;
  }
}

function fill(c: Omit<CheckpointEntry, 'title' | 'shortHash'> & { title?: string; shortHash?: string | null }): CheckpointEntry {
  const shortHash = c.sha256 ? c.sha256.slice(0, 10) : null;
  return { ...c, shortHash, title: shortHash ? `${c.name} [${shortHash}]` : c.name };
}
