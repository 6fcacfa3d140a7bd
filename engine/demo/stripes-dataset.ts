/**
 * The demo LoRA's data set: toy-world scenes whose shapes have striped fills, a style the demo model never
 * saw, as PNGs with a `metadata.csv` of their captions (the same plain captions the base model knows, so the
 * LoRA learns the style alone and applies it to any prompt).
 *
 * Beside them are pictures in the base model's own flat style with empty captions. A1111 applies a LoRA to
 * both halves of classifier-free guidance, ε(∅) + s·(ε(prompt) − ε(∅)). Trained on striped pictures alone, the
 * LoRA also stripes ε(∅), with the stripe of no colour in particular, and where the prompt's own stripe is
 * smaller than that, guidance takes away more stripe than the prompt adds: such a LoRA left every cyan shape
 * flat at CFG 7 while it striped most of them at CFG 1. The flat pictures keep ε(∅) near the base model's, so
 * guidance adds the prompt's stripes instead (DreamBooth's regularisation images play the same part for a
 * class prior).
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { formatTable } from '../train/caption-table.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';
import { DEMO_RESOLUTION } from './demo-model.ts';
import { COLOUR_NAMES, renderScene, sampleScene, type Scene } from './toy-world.ts';

export const STRIPES_IMAGES = 80;
/** Flat pictures with empty captions (see above): the config trains them with `allow_missing_captions`. */
export const FLAT_IMAGES = 40;

/**
 * Writes `count` striped scenes, `flat` flat ones with empty captions and their metadata.csv into `dir`. The
 * striped shapes' colours take turns, so each named colour is striped as often (with 40 scenes drawn freely,
 * cyan and green had one each and stayed flat). The flat scenes come from the next seed.
 */
export async function writeStripesDataset(dir: string, seed: number, count = STRIPES_IMAGES, flat = FLAT_IMAGES, size = DEMO_RESOLUTION): Promise<void> {
  await mkdir(dir, { recursive: true });
  const pictures: { fileName: string; scene: Scene; caption: string }[] = [];
  for (let i = 0, j = 0; i < count; i++) {
    const colour = COLOUR_NAMES[i % COLOUR_NAMES.length];
    let scene = sampleScene(seed, j++, 'striped');
    while (scene.colour !== colour) scene = sampleScene(seed, j++, 'striped');
    pictures.push({ fileName: `stripes_${String(i).padStart(3, '0')}.png`, scene, caption: scene.caption });
  }
  for (let i = 0; i < flat; i++) pictures.push({ fileName: `flat_${String(i).padStart(3, '0')}.png`, scene: sampleScene(seed + 1, i), caption: '' });
  const rows = [];
  for (const [i, { fileName, scene, caption }] of pictures.entries()) {
    const png = await sharp(Buffer.from(renderScene(scene, size)), { raw: { width: size, height: size, channels: 3 } }).png().toBuffer();
    await writeBufferAtomic(join(dir, fileName), png);
    rows.push({ fileName, caption, line: i + 2, fields: { file_name: fileName, text: caption } });
  }
  const file = join(dir, 'metadata.csv');
  await writeBufferAtomic(file, formatTable({ file, format: 'csv', columns: ['file_name', 'text'], captionColumn: 'text', rows, warnings: [] }));
}
