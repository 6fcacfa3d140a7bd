/**
 * The demo LoRA's data set: toy-world scenes whose shapes have striped fills, a style the demo model never
 * saw, as PNGs with a `metadata.csv` of their captions (the same plain captions the base model knows, so the
 * LoRA learns the style alone and applies it to any prompt).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { formatTable } from '../train/caption-table.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';
import { DEMO_RESOLUTION } from './demo-model.ts';
import { renderScene, sampleScene } from './toy-world.ts';

export const STRIPES_IMAGES = 40;

/** Writes `count` striped scenes and their metadata.csv into `dir`. */
export async function writeStripesDataset(dir: string, seed: number, count = STRIPES_IMAGES, size = DEMO_RESOLUTION): Promise<void> {
  await mkdir(dir, { recursive: true });
  const rows = [];
  for (let i = 0; i < count; i++) {
    const scene = sampleScene(seed, i, 'striped');
    const fileName = `stripes_${String(i).padStart(3, '0')}.png`;
    const png = await sharp(Buffer.from(renderScene(scene, size)), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
    await writeBufferAtomic(join(dir, fileName), png);
    rows.push({ fileName, caption: scene.caption, line: i + 2, fields: { file_name: fileName, text: scene.caption } });
  }
  const file = join(dir, 'metadata.csv');
  await writeBufferAtomic(file, formatTable({ file, format: 'csv', columns: ['file_name', 'text'], captionColumn: 'text', rows, warnings: [] }));
}
