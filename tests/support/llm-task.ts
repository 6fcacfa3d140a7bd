/** A small generated instruction task for LLM training tests: any request, one fixed answer format. */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { seededRandom } from '../../engine/train/seeded-random.ts';

export const ANSWER = '[[ok]]';
const WORDS = ['apple', 'river', 'stone', 'cloud', 'green', 'tiger', 'piano', 'lemon', 'house', 'mouse', 'light', 'north', 'sugar', 'table', 'water', 'zebra'];

export function taskPrompt(rnd: () => number): string {
  const w = () => WORDS[Math.floor(rnd() * WORDS.length)]!;
  return `Rate this: ${w()} ${w()}`;
}

/** `rows` instruction rows in `<dir>/train.jsonl`. */
export async function writeTask(dir: string, rows: number, seed: number): Promise<void> {
  await mkdir(dir, { recursive: true });
  const rnd = seededRandom(seed, 'llm-task');
  const lines = Array.from({ length: rows }, () => JSON.stringify({ instruction: taskPrompt(rnd), output: ANSWER }));
  await writeFile(join(dir, 'train.jsonl'), lines.join('\n') + '\n');
}

export function taskConfig(o: { base: string; data: string; out: string; epochs: number; extra?: string }): string {
  return [
    `base_model: ${o.base}`,
    `train_data_dir: ${o.data}`,
    `output_dir: ${o.out}`,
    'output_name: adapter',
    'lora_rank: 8',
    'lora_alpha: 16',
    'target_modules: all-linear',
    'learning_rate: 0.01',
    'lr_scheduler: constant',
    `epochs: ${o.epochs}`,
    'batch_size: 4',
    'max_seq_length: 96',
    'validation_split: 0.25',
    'save_every_n_epochs: 0',
    'seed: 3',
    o.extra ?? '',
  ].join('\n');
}
