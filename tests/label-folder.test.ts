import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { labelFolder } from '../engine/label/label-folder.ts';
import { parseLabelSettings } from '../engine/label/options.ts';
import { Wd14Tagger } from '../engine/label/wd14.ts';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { logit, writeTinyTagger } from './support/tiny-tagger.ts';

// Folder labelling with a tiny WD14 tagger (fast): stopping midway keeps what was done and a second run in
// 'missing' mode finishes; append adds only new tags; a kohya repeat folder's class tokens are not a caption.

let dir: string;
let tagger: Wd14Tagger;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'label-folder-'));
  await writeTinyTagger(join(dir, 'tagger'), [
    { name: 'solo', category: 0, weights: [0, 0, 0], bias: logit(0.9) },
    { name: 'red_theme', category: 0, weights: [0, 0, 20], bias: -10 },
  ], 16);
  tagger = await Wd14Tagger.load(join(dir, 'tagger'), { threads: 1 });
  await mkdir(join(dir, 'data/10_mychar'), { recursive: true });
  for (let i = 0; i < 5; i++) {
    const c = i % 2 ? { r: 255, g: 0, b: 0 } : { r: 0, g: 0, b: 255 };
    await sharp({ create: { width: 20, height: 20, channels: 3, background: c } }).png().toFile(join(dir, `data/10_mychar/img${i}.png`));
  }
});
after(async () => {
  await tagger.release();
  await rm(dir, { recursive: true, force: true });
});

const settings = (o: Record<string, unknown> = {}) => parseLabelSettings({ model: 'wd14', ...o }, 'test');
const captions = async () => new Map((await readCaptionTable(join(dir, 'data/metadata.csv'))).rows.map((r) => [r.fileName, r.caption]));

test('a stopped run keeps its captions; running again in missing mode finishes the rest', async () => {
  const stop = new AbortController();
  const seen: number[] = [];
  const first = await labelFolder(join(dir, 'data'), settings(), { wd14: tagger }, {
    signal: stop.signal,
    onProgress: (p) => {
      seen.push(p.done);
      assert.equal(p.total, 5, 'repeat-folder class tokens do not count as captions');
      if (p.done === 2) stop.abort();
    },
  });
  assert.equal(first.cancelled, true);
  assert.deepEqual(seen, [1, 2]);
  assert.equal((await captions()).size, 2);
  const second = await labelFolder(join(dir, 'data'), settings(), { wd14: tagger });
  assert.deepEqual([second.captioned, second.skipped, second.cancelled], [3, 2, false]);
  const all = await captions();
  assert.equal(all.size, 5);
  assert.equal(all.get('10_mychar/img1.png'), 'red theme, solo');
  assert.equal(all.get('10_mychar/img0.png'), 'solo');
});

test('append adds only the tags a caption lacks; overwrite replaces; the trigger comes first once', async () => {
  const t = await readCaptionTable(join(dir, 'data/metadata.csv'));
  await writeFile(join(dir, 'data/metadata.csv'), `file_name,caption\n${t.rows.map((r) => `${r.fileName},"${r.fileName.endsWith('img1.png') ? 'my char, solo' : r.caption}"`).join('\n')}\n`);
  const r = await labelFolder(join(dir, 'data'), settings({ mode: 'append' }), { wd14: tagger });
  assert.equal((await captions()).get('10_mychar/img1.png'), 'my char, solo, red theme');
  assert.equal(r.changes.filter((c) => c.action === 'appended').length, 1);
  await labelFolder(join(dir, 'data'), settings({ mode: 'overwrite', trigger: 'solo' }), { wd14: tagger });
  assert.equal((await captions()).get('10_mychar/img1.png'), 'solo, red theme');
  assert.ok((await readFile(join(dir, 'data/metadata.csv'), 'utf8')).startsWith('file_name,caption\n'));
});

test('settings name the bad key', () => {
  assert.throws(() => parseLabelSettings({ mode: 'sometimes' }, 'label.yaml'), /label\.yaml: mode: /);
  assert.throws(() => parseLabelSettings({ general_threshold: 2 }, 'x'), /general_threshold/);
  assert.throws(() => parseLabelSettings({ colour: 'red' }, 'x'), /colour/);
});
