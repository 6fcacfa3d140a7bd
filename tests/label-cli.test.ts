import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { ClipModel } from '../engine/clip/model.ts';
import { decodeRgb } from '../engine/image/decode-rgb.ts';
import { formatTable, readCaptionTable } from '../engine/train/caption-table.ts';
import { Goldens } from './support/golden.ts';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { logit, writeTinyTagger } from './support/tiny-tagger.ts';

// `lora-scripts label` on a mixed-format folder: RGB, RGBA and grey PNGs (the clip-tiny images), a CMYK
// JPEG, a 16-bit PNG, an EXIF-rotated JPEG and a WebP in a subfolder.

const clip = join(fixturesDir, 'clip-tiny');
const model = join(clip, 'model');
const tokenizer = join(fixturesDir, 'clip-bpe');
const bin = join(repoRoot, 'bin/lora-scripts.js');
const originals = ['photo_rgb.png', 'sticker_rgba.png', 'scan_grey.png'];

let dir: string;
let data: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'label-'));
  data = join(dir, 'data');
  await mkdir(join(data, 'sub'), { recursive: true });
  for (const f of originals) await copyFile(join(clip, 'images', f), join(data, f));
  const photo = join(clip, 'images/photo_rgb.png');
  await sharp(photo).toColourspace('cmyk').jpeg({ quality: 95 }).toFile(join(data, 'print_cmyk.jpg'));
  await sharp(photo).toColourspace('rgb16').png().toFile(join(data, 'deep_16bit.png'));
  await sharp(photo).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(join(data, 'phone_rotated.jpg'));
  await sharp(photo).webp({ lossless: true }).toFile(join(data, 'sub/web.webp'));
});
after(() => rm(dir, { recursive: true, force: true }));

function label(args: string[]) {
  const r = spawnSync(process.execPath, [bin, 'label', data, '--model', model, '--tokenizer', tokenizer, '--threads', '1', '--no-progress', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, `label ${args.join(' ')} failed:\n${r.stderr}`);
  return r.stdout;
}

const table = async () => new Map((await readCaptionTable(join(data, 'metadata.csv'))).rows.map((r) => [r.fileName, r.caption]));

test('every format decodes as Pillow would give it, and the images embed as transformers does', async () => {
  const base = await decodeRgb(join(data, 'photo_rgb.png'));
  const deep = await decodeRgb(join(data, 'deep_16bit.png'));
  assert.ok(deep.data.every((v, i) => Math.abs(v - base.data[i]!) <= 1), '16-bit PNG scales down to the 8-bit values');
  const rot = await decodeRgb(join(data, 'phone_rotated.jpg'));
  assert.deepEqual([rot.width, rot.height], [base.height, base.width], 'EXIF orientation 6 is applied');
  const cmyk = await decodeRgb(join(data, 'print_cmyk.jpg'));
  let err = 0;
  cmyk.data.forEach((v, i) => (err += Math.abs(v - base.data[i]!)));
  assert.ok(err / base.data.length < 12, `CMYK JPEG converts back to sRGB (mean error ${err / base.data.length})`);

  const g = await Goldens.open(clip);
  const m = await ClipModel.load(model, { tokenizer, threads: 1 });
  const manifest = JSON.parse(await readFile(join(clip, 'manifest.json'), 'utf8')) as { images: { file: string }[] };
  const S = m.arch.vision.imageSize;
  const px = new Float32Array(manifest.images.length * 3 * S * S);
  for (const [i, img] of manifest.images.entries()) px.set(await m.pixelValues(join(clip, img.file)), i * 3 * S * S);
  await g.expectClose(await m.imageEmbeds(px, manifest.images.length), 'golden/vision.safetensors', 'image_embeds');
});

test('label writes metadata.csv for every image; missing mode keeps hand edits and adds the trigger', async () => {
  const out = label([]);
  const images = ['deep_16bit.png', 'phone_rotated.jpg', 'photo_rgb.png', 'print_cmyk.jpg', 'scan_grey.png', 'sticker_rgba.png', 'sub/web.webp'];
  let t = await table();
  assert.deepEqual([...t.keys()].sort(), images);
  for (const [k, v] of t) assert.ok(v.length > 0, `${k} has a caption`);
  assert.match(out, /7 of 7 images captioned/);
  // Same pixels, same caption, whatever the file format.
  assert.equal(t.get('deep_16bit.png'), t.get('photo_rgb.png'));
  assert.equal(t.get('sub/web.webp'), t.get('photo_rgb.png'));

  // A hand edit, an emptied caption and a new image.
  const edited = await readCaptionTable(join(data, 'metadata.csv'));
  for (const r of edited.rows) {
    if (r.fileName === 'scan_grey.png') r.fields['caption'] = 'my own words';
    if (r.fileName === 'sub/web.webp') r.fields['caption'] = '';
  }
  await writeFile(join(data, 'metadata.csv'), formatTable(edited));
  await copyFile(join(clip, 'images/scan_grey.png'), join(data, 'new.png'));
  const second = label(['--trigger', 'zkx']);
  assert.match(second, /2 of 8 images captioned/);
  t = await table();
  assert.equal(t.get('scan_grey.png'), 'my own words', 'a hand-written caption is never replaced in missing mode');
  assert.match(t.get('new.png')!, /^zkx, /);
  assert.match(t.get('sub/web.webp')!, /^zkx, /);
  assert.equal(t.get('photo_rgb.png'), (await table()).get('deep_16bit.png'));
});

test('sidecars with WD14 tags after the CLIP caption (both); a tags-only dry run writes nothing', async () => {
  const tagger = join(dir, 'tagger');
  await writeTinyTagger(tagger, [
    { name: 'grey_theme', category: 0, weights: [0, 0, 0], bias: logit(0.9) },
    { name: 'unlikely', category: 0, weights: [0, 0, 0], bias: logit(0.1) },
  ], 16);
  const out = label(['--wd14', tagger, '--target', 'sidecar', '--mode', 'overwrite']);
  assert.match(out, /8 of 8 images captioned/);
  const txt = (await readdir(data)).filter((f) => f.endsWith('.txt'));
  assert.equal(txt.length, 7);
  const photo = (await readFile(join(data, 'photo_rgb.txt'), 'utf8')).trim();
  assert.ok(photo.endsWith(', grey theme') && !photo.includes('unlikely'), photo);
  assert.equal((await readFile(join(data, 'sub/web.txt'), 'utf8')).trim(), photo);
  // Tags alone, as a dry run over the table: every change printed with the old caption, nothing written.
  const before = await readFile(join(data, 'metadata.csv'), 'utf8');
  const onlyTags = spawnSync(process.execPath, [bin, 'label', data, '--wd14', tagger, '--dry-run', '--mode', 'overwrite', '--no-progress', '--threads', '1'], { encoding: 'utf8' });
  assert.equal(onlyTags.status, 0, onlyTags.stderr);
  assert.match(onlyTags.stdout, /would replace {2}scan_grey\.png: grey theme {3}\(was: my own words\)/);
  assert.match(onlyTags.stdout, /would change 8 caption/);
  assert.equal(await readFile(join(data, 'metadata.csv'), 'utf8'), before, 'dry run leaves the table alone');
  const noModel = spawnSync(process.execPath, [bin, 'label', data, '--model', join(dir, 'nope')], { encoding: 'utf8' });
  assert.equal(noModel.status, 2);
  assert.match(noModel.stderr, /CLIP model not found: .*nope/);
});
