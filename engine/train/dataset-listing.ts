/**
 * Reading a folder the way training reads it, for everything that only looks at a dataset (listing, caption
 * editing, auto-labelling): its caption table and a config that makes loadDataset accept uncaptioned images.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { TrainConfig } from './config.ts';
import { trainConfigDefaults } from './config-fields.ts';

/** `metadata.csv`, else `metadata.jsonl`, in `dir`; null when there is neither. */
export async function findTable(dir: string): Promise<string | null> {
  for (const n of ['metadata.csv', 'metadata.jsonl']) {
    const s = await stat(join(dir, n)).catch(() => null);
    if (s?.isFile()) return join(dir, n);
  }
  return null;
}

/** A config that makes loadDataset read `dir` as a training run would, without refusing uncaptioned images. */
export function listingConfig(dir: string, metadataPath: string | null, scratch: string, captionExtension?: string): TrainConfig {
  const defaults = trainConfigDefaults() as unknown as TrainConfig;
  return {
    ...defaults,
    train_data_dir: dir,
    metadata_path: metadataPath,
    caption_extension: captionExtension ?? defaults.caption_extension,
    allow_missing_captions: true,
    enable_bucket: false,
    base_model: '',
    tokenizer: '',
    output_dir: scratch,
    logging_dir: scratch,
    latent_cache_dir: scratch,
    sample_prompts: [],
  };
}
