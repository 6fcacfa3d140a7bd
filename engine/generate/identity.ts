/**
 * What an infotext says about the weights that made an image: the checkpoint's stem and short hash, a separate
 * VAE's file name and short hash (A1111 `sd_model_name`/`sd_model_hash`, `get_loaded_vae_name`/`_hash`), and
 * the options that leave them out. Full-file hashes go through A1111's cache.json when the caller keeps one,
 * so a multi-GB checkpoint is read once, not on every `lora-scripts generate`.
 */
import { stat } from 'node:fs/promises';
import { basename, isAbsolute, relative, sep } from 'node:path';
import { cachedSha256, hashKey, type HashCache } from '../util/hash-cache.ts';
import type { InfotextFields } from './infotext.ts';

export interface ModelIdentity {
  /** Checkpoint file stem (A1111 `Model`). */
  name: string;
  /** First 10 hex digits of the file's sha256 (A1111 `Model hash`), or null when not hashed. */
  shortHash: string | null;
}

export interface VaeIdentity {
  /** The VAE's file name, extension included (A1111 `VAE`). */
  name: string;
  /** First 10 hex digits of the file's sha256 (A1111 `VAE hash`). */
  shortHash: string;
}

/**
 * The name a model file is cached under: its path inside `folder` (`sub/model.safetensors`, as the server lists
 * it, so CLI and server share the entry), or its absolute path when it lies outside.
 */
export function nameInFolder(folder: string, file: string): string {
  const rel = relative(folder, file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel.split(sep).join('/') : file;
}

/** A checkpoint's identity: its stem, and for a single file its sha256's first 10 hex digits (cached under `checkpoint/<name>`). */
export async function modelIdentity(checkpoint: string, opts: { cache?: HashCache | null; name?: string } = {}): Promise<ModelIdentity> {
  const name = basename(checkpoint).replace(/\.safetensors$/i, '');
  if (!(await stat(checkpoint)).isFile()) return { name, shortHash: null };
  const sha = await cachedSha256(opts.cache, hashKey.checkpoint(opts.name ?? checkpoint), checkpoint);
  return { name, shortHash: sha.slice(0, 10) };
}

/** A separate VAE's identity (cached under `vae/<name>`). */
export async function vaeIdentity(path: string, opts: { cache?: HashCache | null; name?: string } = {}): Promise<VaeIdentity> {
  const sha = await cachedSha256(opts.cache, hashKey.vae(opts.name ?? path), path);
  return { name: basename(path), shortHash: sha.slice(0, 10) };
}

/**
 * The model entries of an infotext as A1111 writes them: options add_model_hash_to_info, add_model_name_to_info,
 * add_vae_hash_to_info and add_vae_name_to_info (all on unless set to false); no VAE entries without a separate VAE.
 */
export function modelInfotextFields(
  model: ModelIdentity,
  vae: VaeIdentity | null,
  options: Readonly<Record<string, unknown>> = {},
): Pick<InfotextFields, 'modelHash' | 'model' | 'vaeHash' | 'vae'> {
  const on = (k: string) => options[k] !== false;
  return {
    modelHash: on('add_model_hash_to_info') ? model.shortHash : null,
    model: on('add_model_name_to_info') ? model.name : null,
    vaeHash: vae && on('add_vae_hash_to_info') ? vae.shortHash : null,
    vae: vae && on('add_vae_name_to_info') ? vae.name : null,
  };
}
