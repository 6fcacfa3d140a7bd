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
import { COLOUR_NAMES, renderScene, sampleScene } from './toy-world.ts';

export const STRIPES_IMAGES = 80;

/**
 * Writes `count` striped scenes and their metadata.csv into `dir`. The shape colours take turns, so each named
 * colour is striped as often (with 40 scenes drawn freely, cyan and green had one each and stayed flat).
 */
export async function writeStripesDataset(dir: string, seed: number, count = STRIPES_IMAGES, size = DEMO_RESOLUTION): Promise<void> {
  await mkdir(dir, { recursive: true });
  const rows = [];
  for (let i = 0, j = 0; i < count; i++) {
    const colour = COLOUR_NAMES[i % COLOUR_NAMES.length];
    let scene = sampleScene(seed, j++, 'striped');
    while (scene.colour !== colour) scene = sampleScene(seed, j++, 'striped');
    const fileName = `stripes_${String(i).padStart(3, '0')}.png`;
    const png = await sharp(Buffer.from(renderScene(scene, size)), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
    await writeBufferAtomic(join(dir, fileName), png);
    rows.push({ fileName, caption: scene.caption, line: i + 2, fields: { file_name: fileName, text: scene.caption } });
  }
  const file = join(dir, 'metadata.csv');
  await writeBufferAtomic(file, formatTable({ file, format: 'csv', columns: ['file_name', 'text'], captionColumn: 'text', rows, warnings: [] }));
}
