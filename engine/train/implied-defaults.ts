/**
 * Defaults that follow what the user wrote. A key the user left out must never turn a key they did write into
 * an error: `resolution: 64` alone would otherwise fail against the default min_bucket_reso of 256. So before
 * the cross-key rules run, every unwritten key that one of them ties to a written key takes the nearest value
 * that agrees with it; the rules then only catch conflicts between keys the user wrote.
 */
import type { TrainConfig } from './config-fields.ts';

/** Whether the user's file sets `key` (null counts as unset: it asks for the default). */
export function wrote(raw: Record<string, unknown>, key: keyof TrainConfig): boolean {
  return raw[key] !== undefined && raw[key] !== null;
}

export function applyImpliedDefaults(c: TrainConfig, raw: Record<string, unknown>): void {
  const w = (k: keyof TrainConfig) => wrote(raw, k);
  // Buckets enclose the resolution: the written sizes win, the others move just enough.
  if (!w('resolution')) {
    const lo = w('min_bucket_reso') ? c.min_bucket_reso : -Infinity;
    const hi = w('max_bucket_reso') ? c.max_bucket_reso : Infinity;
    if (lo <= hi) c.resolution = Math.min(Math.max(c.resolution, lo), hi);
  }
  if (!w('min_bucket_reso')) c.min_bucket_reso = Math.min(c.min_bucket_reso, c.resolution, w('max_bucket_reso') ? c.max_bucket_reso : Infinity);
  if (!w('max_bucket_reso')) c.max_bucket_reso = Math.max(c.max_bucket_reso, c.resolution, w('min_bucket_reso') ? c.min_bucket_reso : -Infinity);
  // A warmup asks for a schedule that has one.
  if (!w('lr_scheduler') && c.lr_scheduler === 'constant' && c.lr_warmup_steps > 0) c.lr_scheduler = 'constant_with_warmup';
  // A crop that changes every epoch cannot be cached.
  if (!w('cache_latents') && c.random_crop) c.cache_latents = false;
}
