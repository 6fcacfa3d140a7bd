/**
 * On-disk cache of VAE latents, one .safetensors file per (image content, bucket, resize, crop, flip, VAE).
 * Keying on the file's bytes rather than its name or mtime means an edited image is re-encoded and a renamed
 * one is not; keying on the VAE means switching models never serves latents of another VAE. Each file also
 * records its own key, so a truncated, foreign or colliding file is detected, deleted and re-encoded.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { loadImageTensor, type ImageTensor } from '../image/load.ts';
import type { Crop, ImagePlacement, Size } from './buckets.ts';

/** Bump when the meaning of a cached latent changes (image preprocessing, layout), to orphan old entries. */
export const LATENT_CACHE_VERSION = 1;
const TENSOR = 'latent';
const META_KEY = 'lora_scripts.latent_cache_key';
const META_INPUT = 'lora_scripts.latent_cache_input';

export interface LatentKeyInput {
  /** sha256 of the image file's bytes, hex. */
  contentHash: string;
  bucket: Size;
  resized: Size;
  crop: Crop;
  flip: boolean;
  /** Identifies the VAE weights (e.g. a hash of them); chosen by whoever owns the VAE. */
  vaeId: string;
}

export interface Latent {
  /** [channels, height / 8, width / 8] */
  shape: number[];
  data: Float32Array;
}

export type EncodeFn = (image: ImageTensor) => Promise<Float32Array>;

/** A stable hex key: sha256 of the inputs in a fixed field order, so key order in objects never matters. */
export function latentCacheKey(k: LatentKeyInput): string {
  const canonical = JSON.stringify([
    LATENT_CACHE_VERSION,
    k.contentHash,
    [k.bucket.width, k.bucket.height],
    [k.resized.width, k.resized.height],
    [k.crop.left, k.crop.top, k.crop.width, k.crop.height],
    k.flip,
    k.vaeId,
  ]);
  return createHash('sha256').update(canonical).digest('hex');
}

/** sha256 of a file's bytes, streamed. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  } catch (e) {
    throw new UserError(`cannot read image ${path}: ${(e as Error).message}`, { cause: e });
  }
  return h.digest('hex');
}

export interface CacheableImage {
  path: string;
  placement: ImagePlacement;
}

export class LatentCache {
  /** Content hashes by path, reused while size, mtime and ctime are unchanged, so later epochs do not re-read images. */
  private readonly hashes = new Map<string, { size: number; mtimeMs: number; ctimeMs: number; hash: string }>();

  constructor(
    readonly dir: string,
    readonly vaeId: string,
    /** Spatial downscale of the VAE (8 for SD). */
    readonly vaeScale = 8,
  ) {}

  pathFor(key: string): string {
    return join(this.dir, key.slice(0, 2), `${key}.safetensors`);
  }

  async contentHash(path: string): Promise<string> {
    const s = await stat(path).catch((e: Error) => {
      throw new UserError(`cannot read image ${path}: ${e.message}`);
    });
    const known = this.hashes.get(path);
    if (known && known.size === s.size && known.mtimeMs === s.mtimeMs && known.ctimeMs === s.ctimeMs) return known.hash;
    const hash = await hashFile(path);
    this.hashes.set(path, { size: s.size, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, hash });
    return hash;
  }

  async keyFor(image: CacheableImage, opts: { flip?: boolean; crop?: Crop } = {}): Promise<{ key: string; input: LatentKeyInput }> {
    const input: LatentKeyInput = {
      contentHash: await this.contentHash(image.path),
      bucket: image.placement.bucket,
      resized: image.placement.resized,
      crop: opts.crop ?? image.placement.crop,
      flip: opts.flip ?? false,
      vaeId: this.vaeId,
    };
    return { key: latentCacheKey(input), input };
  }

  /** The cached latent, or undefined when absent. An entry that fails its checks is deleted. */
  async get(key: string): Promise<Latent | undefined> {
    const path = this.pathFor(key);
    if (!(await stat(path).catch(() => undefined))) return undefined;
    let latent: Latent | undefined;
    const file = await SafetensorsFile.open(path).catch(() => undefined);
    if (file) {
      try {
        const info = file.tensors.get(TENSOR);
        if (file.metadata[META_KEY] === key && info) latent = { shape: [...info.shape], data: await file.readFloat32(TENSOR) };
      } catch {
        latent = undefined;
      } finally {
        await file.close().catch(() => {});
      }
    }
    // Closed before deleting: Windows refuses to unlink an open file.
    if (!latent) await this.invalidate(key);
    return latent;
  }

  async put(key: string, latent: Latent, input?: LatentKeyInput, source?: string): Promise<void> {
    const metadata: Record<string, string> = { [META_KEY]: key };
    if (input) metadata[META_INPUT] = JSON.stringify({ ...input, source });
    await writeSafetensors(this.pathFor(key), { [TENSOR]: { dtype: 'F32', shape: latent.shape, data: latent.data } }, metadata);
  }

  async invalidate(key: string): Promise<void> {
    await unlink(this.pathFor(key)).catch(() => {});
  }

  /**
   * The latent of an image as trained (bucket, crop, flip), from the cache or by loading the image (resized,
   * cropped, flipped, CHW in [-1, 1]) and calling `encode`; encoded latents are checked for NaN/inf and stored.
   */
  async getOrEncode(
    image: CacheableImage,
    opts: { flip?: boolean; crop?: Crop },
    encode: EncodeFn,
  ): Promise<Latent & { key: string; hit: boolean }> {
    const { key, input } = await this.keyFor(image, opts);
    const cached = await this.get(key);
    if (cached) return { ...cached, key, hit: true };
    const pixels = await loadImageTensor(image.path, { resized: input.resized, crop: input.crop, flip: input.flip });
    const data = await encode(pixels);
    const shape = this.latentShape(data.length, input.crop, image.path);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!))
        throw new UserError(
          `the VAE produced NaN or infinite latents for ${image.path}; nothing was cached (a float16 VAE can overflow: use a float32 VAE)`,
        );
    }
    await this.put(key, { shape, data }, input, image.path);
    return { shape, data, key, hit: false };
  }

  /** Deletes every entry whose key is not in `keep` (stale after images changed or the VAE was swapped); returns the count. */
  async prune(keep: ReadonlySet<string>): Promise<number> {
    let removed = 0;
    const shards = await readdir(this.dir, { withFileTypes: true }).catch(() => []);
    for (const shard of shards) {
      if (!shard.isDirectory()) continue;
      const dir = join(this.dir, shard.name);
      for (const name of await readdir(dir)) {
        const m = /^([0-9a-f]{64})\.safetensors$/.exec(name);
        // Temporary files of an interrupted write are stale too.
        if ((m && !keep.has(m[1]!)) || name.includes('.tmp-')) {
          await unlink(join(dir, name)).catch(() => {});
          removed++;
        }
      }
    }
    return removed;
  }

  async clear(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }

  private latentShape(length: number, crop: Crop, path: string): number[] {
    const h = crop.height / this.vaeScale;
    const w = crop.width / this.vaeScale;
    const channels = length / (h * w);
    if (!Number.isInteger(h) || !Number.isInteger(w) || !Number.isInteger(channels) || channels < 1)
      throw new Error(`encode returned ${length} values for ${path}, not a multiple of the ${w}×${h} latent grid of a ${crop.width}×${crop.height} crop`);
    return [channels, h, w];
  }
}
