import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { DEFAULT_WD14, Wd14Tagger } from '../engine/label/wd14.ts';
import { logit, writeTinyTagger, type TinyTag } from './support/tiny-tagger.ts';

// A tagger built here with the project's ONNX writer, with WD14's input/output conventions. Tags that
// depend on one colour channel fail if the channel order or the white padding is wrong; tags with a fixed
// probability pin the thresholds, the rating, underscores, exclusions and the tag limit.

const fixed = (name: string, category: 0 | 4 | 9, p: number): TinyTag => ({ name, category, weights: [0, 0, 0], bias: logit(p) });
const TAGS: TinyTag[] = [
  fixed('general', 9, 0.7),
  fixed('sensitive', 9, 0.2),
  fixed('explicit', 9, 0.05),
  { name: 'red_theme', category: 0, weights: [0, 0, 20], bias: -10 }, // fires when R (third in BGR) is high
  { name: 'blue_theme', category: 0, weights: [20, 0, 0], bias: -15 }, // B mean above 0.75
  { name: 'white_border', category: 0, weights: [0, 20, 0], bias: -5 }, // G mean above 0.25: only white padding brings green into a red image
  fixed('half_sure', 0, 0.5),
  fixed('unsure', 0, 0.3),
  fixed('hero_(character)', 4, 0.9),
  fixed('side_character', 4, 0.8),
  fixed('^_^', 0, 0.95),
  fixed('long_hair', 0, 0.6),
];
const SIZE = 24; // the model's input size: the tagger must read it from the graph

let dir: string;
let red: Buffer;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'wd14-'));
  await writeTinyTagger(join(dir, 'nhwc'), TAGS, SIZE, 'nhwc');
  await writeTinyTagger(join(dir, 'nchw'), TAGS, SIZE + 8, 'nchw');
  // A 60×30 red image with transparent stripes on the right: padded to a white 60×60 square.
  const px = Buffer.alloc(60 * 30 * 4);
  for (let i = 0; i < 60 * 30; i++) px.set([255, 0, 0, i % 60 < 50 ? 255 : 0], i * 4);
  red = await sharp(px, { raw: { width: 60, height: 30, channels: 4 } }).png().toBuffer();
});
after(() => rm(dir, { recursive: true, force: true }));

test('input size and layout come from the graph; input is white-padded, resized, BGR 0-255', async () => {
  const t = await Wd14Tagger.load(join(dir, 'nhwc'), { threads: 1 });
  assert.equal(t.size, SIZE);
  assert.equal(t.layout, 'nhwc');
  const img = { width: 60, height: 30, data: new Uint8Array(60 * 30 * 3) };
  for (let i = 0; i < 60 * 30; i++) img.data.set([255, 0, 0], i * 3);
  const x = t.input(img);
  assert.equal(x.length, SIZE * SIZE * 3);
  assert.deepEqual([...x.subarray(0, 3)], [255, 255, 255], 'top-left pixel is the white padding');
  const c = ((SIZE / 2) * SIZE + SIZE / 2) * 3;
  assert.deepEqual([...x.subarray(c, c + 3)], [0, 0, 255], 'centre pixel is red, stored B, G, R');
  const n = await Wd14Tagger.load(join(dir, 'nchw'), { threads: 1 });
  assert.equal(n.layout, 'nchw');
  assert.equal(n.size, SIZE + 8);
  await Promise.all([t.release(), n.release()]);
});

test('thresholds, order, ratings, underscores, exclusions and max tags', async () => {
  for (const layout of ['nhwc', 'nchw']) {
    const t = await Wd14Tagger.load(join(dir, layout), { threads: 1 });
    const probs = await t.predict(red);
    const names = (o = {}) => t.select(probs, { ...DEFAULT_WD14, ...o }).map((x) => x.name);
    // Characters first, then general tags by probability; transparent pixels became white, so 'white border'.
    assert.deepEqual(names(), ['hero (character)', 'red theme', 'white border', '^_^', 'long hair', 'half sure'], layout);
    assert.deepEqual(names({ ratings: true }).slice(0, 2), ['general', 'hero (character)']);
    assert.deepEqual(names({ generalThreshold: 0.55, characterThreshold: 0.75 }), ['hero (character)', 'side character', 'red theme', 'white border', '^_^', 'long hair']);
    assert.deepEqual(names({ replaceUnderscores: false, exclude: ['long hair', 'half_sure'] }), ['hero_(character)', 'red_theme', 'white_border', '^_^']);
    assert.deepEqual(names({ maxTags: 2 }), ['hero (character)', 'red theme']);
    await t.release();
  }
  // A blue square: no padding (no green), blue tag on, red off.
  const t = await Wd14Tagger.load(join(dir, 'nhwc'), { threads: 1 });
  const blue = await sharp({ create: { width: 40, height: 40, channels: 3, background: { r: 0, g: 0, b: 255 } } }).png().toBuffer();
  const { caption } = await t.tag(blue);
  assert.equal(caption, 'hero (character), blue theme, ^_^, long hair, half sure');
  await t.release();
});

test('a missing or mismatched file is named in the error', async () => {
  const broken = join(dir, 'broken');
  await writeTinyTagger(broken, TAGS.slice(0, 4), SIZE);
  await writeFile(join(broken, 'selected_tags.csv'), 'tag_id,name,category,count\n1,a,0,1\n');
  const t = await Wd14Tagger.load(broken, { threads: 1 });
  await assert.rejects(t.predict(red), /gives 4 scores but selected_tags.csv lists 1 tags/);
  await t.release();
  await unlink(join(broken, 'model.onnx'));
  await assert.rejects(Wd14Tagger.load(broken), new RegExp(`${broken.replace(/[/\\]/g, '.')} has no model.onnx`));
  await assert.rejects(Wd14Tagger.load(join(dir, 'nowhere')), /has no model.onnx/);
});
