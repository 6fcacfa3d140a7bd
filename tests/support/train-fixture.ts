// A small synthetic training set (a bright disk on a dark gradient, jittered per image) and a config for
// the sd-tiny fixture model, shared by the trainer tests.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { stringify } from 'yaml';
import { fixturesDir } from './paths.ts';
import { parseTrainConfig, type TrainConfig } from '../../engine/train/config.ts';

export const SD_TINY = join(fixturesDir, 'sd-tiny', 'sd-tiny.safetensors');
export const SD_TINY_TOKENIZER = join(fixturesDir, 'sd-tiny', 'diffusers', 'tokenizer');

/** One 64×64 RGB image of the pattern; `k` picks the jitter deterministically. */
export function patternImage(k: number, size = 64): Buffer {
  const px = Buffer.alloc(size * size * 3);
  const cx = size / 2 + ((k * 7) % 9) - 4;
  const cy = size / 2 + ((k * 5) % 9) - 4;
  const r = size * 0.28;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      px[i] = inside ? 240 : 20 + y;
      px[i + 1] = inside ? 200 : 30;
      px[i + 2] = inside ? 40 : 60 + x;
    }
  }
  return px;
}

/** Writes `count` png images with metadata.csv captions into `dir`; returns the file names. */
export async function writePatternDataset(dir: string, count: number, first = 0, caption = 'a yellow disk, dark background'): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let k = first; k < first + count; k++) {
    const name = `img${String(k).padStart(2, '0')}.png`;
    await sharp(patternImage(k), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(join(dir, name));
    names.push(name);
  }
  await writeFile(join(dir, 'metadata.csv'), `file_name,caption\n${names.map((n) => `${n},"${caption}"`).join('\n')}\n`);
  return names;
}

/** YAML text of a config training a small LoRA on sd-tiny at 64×64. */
export function tinyConfigYaml(dataDir: string, outputDir: string, extra: Record<string, unknown> = {}): string {
  return stringify({
    train_data_dir: dataDir,
    base_model: SD_TINY,
    tokenizer: SD_TINY_TOKENIZER,
    lora_rank: 4,
    lora_alpha: 4,
    target_modules: 'attention_mlp',
    train_text_encoder: false,
    resolution: 64,
    enable_bucket: false,
    batch_size: 2,
    epochs: 4,
    learning_rate: 1e-3,
    output_dir: outputDir,
    output_name: 'tiny',
    save_every_n_epochs: 0,
    seed: 7,
    ...extra,
  });
}

export async function tinyConfig(dir: string, dataDir: string, outputDir: string, extra: Record<string, unknown> = {}): Promise<TrainConfig> {
  const file = join(dir, 'cfg.yaml');
  const text = tinyConfigYaml(dataDir, outputDir, extra);
  await writeFile(file, text);
  return (await parseTrainConfig(text, file)).config;
}
