import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm, cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import sharp from 'sharp';
import { loadTrainConfig, type TrainConfig } from '../engine/train/config.ts';
import { loadDataset, stepPlan, loadItemTensor } from '../engine/train/dataset.ts';
import { makeBuckets, placeImage, epochBatches } from '../engine/train/buckets.ts';
import { loadImageTensor, probeImage } from '../engine/image/load.ts';
import { processCaption, captionForStep, splitTags } from '../engine/train/captions.ts';
import { seededRandom } from '../engine/train/seeded-random.ts';
import { UserError } from '../engine/util/errors.ts';
import { repoRoot, fixturesDir } from './support/paths.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');
const baseModel = join(fixturesDir, 'sd-tiny/diffusers');
let root: string;

/** w×h RGB image: left half red, right half blue (so orientation and flips are visible). */
function halves(w: number, h: number): sharp.Sharp {
  const raw = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const o = (y * w + x) * 3;
      if (x < w / 2) raw[o] = 255;
      else raw[o + 2] = 255;
    }
  return sharp(raw, { raw: { width: w, height: h, channels: 3 } });
}

/** A dataset with every kind of image and caption source this loader supports. */
async function makeDataset(dir: string): Promise<void> {
  await mkdir(join(dir, '5_sks dog'), { recursive: true });
  await halves(300, 200).png().toFile(join(dir, 'a.png'));
  // Stored 200×100 with EXIF orientation 6 (rotate 90° clockwise): displayed 100×200.
  await halves(200, 100).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toFile(join(dir, 'b.jpg'));
  await writeFile(join(dir, 'b.txt'), 'tag one, tag two, tag three\nsecond line is ignored\n');
  const rgba = Buffer.alloc(150 * 150 * 4);
  for (let i = 0; i < 150 * 150; i++) rgba[i * 4 + 3] = i % 150 < 75 ? 255 : 0; // opaque black left, transparent right
  await sharp(rgba, { raw: { width: 150, height: 150, channels: 4 } }).webp({ lossless: true }).toFile(join(dir, 'c.webp'));
  await writeFile(join(dir, 'c.txt'), '\uFEFFwebp with alpha');
  await halves(97, 131).toColourspace('b-w').png().toFile(join(dir, '5_sks dog', 'd.png'));
  await halves(64, 64).toColourspace('cmyk').jpeg().toFile(join(dir, 'e.JPG'));
  await writeFile(join(dir, 'metadata.csv'), 'file_name,text\na.png,"a red and blue, png"\ne.JPG,cmyk jpeg\nb.jpg,\n');
}

async function config(dataDir: string, extra = ''): Promise<{ config: TrainConfig; warnings: string[]; path: string }> {
  const path = join(dataDir, '..', `cfg-${Math.random().toString(36).slice(2)}.yaml`);
  await writeFile(
    path,
    `train_data_dir: ${JSON.stringify(dataDir)}\nbase_model: ${JSON.stringify(baseModel)}\n` +
      `${extra.includes('output_dir:') ? '' : 'output_dir: out\n'}resolution: 256\nmin_bucket_reso: 128\nmax_bucket_reso: 512\n${extra}`,
  );
  return { ...(await loadTrainConfig(path)), path };
}

async function freshCopy(name: string): Promise<string> {
  const d = join(root, name);
  await cp(join(root, 'data'), d, { recursive: true });
  return d;
}

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'lora-dataset-'));
  await makeDataset(join(root, 'data'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

test('captions come from metadata.csv, sidecars and repeat-folder names; sizes are EXIF-oriented', async () => {
  const { config: cfg } = await config(join(root, 'data'));
  const ds = await loadDataset(cfg, { verifyImages: true });
  const byKey = new Map(ds.items.map((i) => [i.key, i]));
  assert.deepEqual([...byKey.keys()], ['5_sks dog/d.png', 'a.png', 'b.jpg', 'c.webp', 'e.JPG']);
  const a = byKey.get('a.png')!;
  assert.equal(a.caption, 'a red and blue, png');
  assert.equal(a.captionSource, 'metadata');
  const b = byKey.get('b.jpg')!;
  assert.equal(b.caption, 'tag one, tag two, tag three', 'an empty metadata caption falls back to the sidecar, first line');
  assert.equal(b.captionSource, 'sidecar');
  assert.deepEqual([b.width, b.height], [100, 200], 'EXIF orientation 6 swaps the sides');
  assert.equal(byKey.get('c.webp')!.caption, 'webp with alpha', 'BOM stripped');
  const d = byKey.get('5_sks dog/d.png')!;
  assert.equal(d.caption, 'sks dog');
  assert.equal(d.captionSource, 'folder');
  assert.equal(d.repeats, 5);
  assert.deepEqual(ds.coverage, {
    total: 5,
    captioned: 5,
    bySource: { metadata: 2, sidecar: 2, folder: 1, none: 0 },
    missing: [],
  });
  const buckets = makeBuckets({ resolution: 256, minReso: 128, maxReso: 512, step: 64 });
  assert.deepEqual(ds.buckets, buckets);
  for (const it of ds.items) assert.deepEqual(it.placement, placeImage({ width: it.width, height: it.height }, buckets), it.key);
  // 6 samples in buckets of batch 2 → steps follow the per-bucket ceil, not 6 / 2.
  const plan = stepPlan(ds, { ...cfg, batch_size: 2, gradient_accumulation_steps: 2, epochs: 3 });
  const batches = epochBatches(ds.items.map((i) => i.placement), ds.items.map((i) => i.repeats), 2, 0, 0);
  assert.equal(plan.batchesPerEpoch, batches.length);
  assert.equal(plan.stepsPerEpoch, Math.ceil(batches.length / 2));
  assert.equal(plan.totalSteps, plan.stepsPerEpoch * 3);
});

test('images without a caption are refused, listed, and accepted with allow_missing_captions', async () => {
  const dir = await freshCopy('missing');
  await halves(80, 60).png().toFile(join(dir, 'nocap.png'));
  await mkdir(join(dir, 'sub'));
  await halves(60, 80).webp().toFile(join(dir, 'sub', 'nocap2.webp'));
  const { config: cfg } = await config(dir);
  await assert.rejects(loadDataset(cfg), (e: unknown) => {
    assert.ok(e instanceof UserError);
    assert.match(e.message, /2 of 7 images have no caption: nocap\.png, sub\/nocap2\.webp/);
    assert.match(e.message, /allow_missing_captions: true/);
    return true;
  });
  const ds = await loadDataset({ ...cfg, allow_missing_captions: true });
  assert.deepEqual(ds.coverage.missing, ['nocap.png', 'sub/nocap2.webp']);
  assert.equal(ds.coverage.captioned, 5);
  assert.equal(ds.items.find((i) => i.key === 'nocap.png')!.caption, '');
});

test('output folders inside train_data_dir and hidden folders are not scanned', async () => {
  const dir = await freshCopy('nested-out');
  const { config: cfg } = await config(dir, `output_dir: ${JSON.stringify(join(dir, 'out'))}\n`);
  for (const sub of ['out/sample', 'out/latent_cache', '.thumbs']) {
    await mkdir(join(dir, sub), { recursive: true });
    await halves(64, 64).png().toFile(join(dir, sub, 'x.png'));
  }
  const ds = await loadDataset(cfg);
  assert.equal(ds.items.length, 5, ds.items.map((i) => i.key).join());
});

test('metadata problems name the file and row; `caption` column and jsonl work too', async () => {
  const dir = await freshCopy('meta');
  await writeFile(join(dir, 'metadata.csv'), 'file_name,caption\na.png,x\nmissing.png,y\n');
  const { config: cfg } = await config(dir);
  await assert.rejects(loadDataset(cfg), /metadata\.csv: row 3 names missing\.png, but .*missing\.png does not exist/);
  await writeFile(join(dir, 'metadata.csv'), 'file_name,words\na.png,x\n');
  await assert.rejects(loadDataset(cfg), /metadata\.csv: no caption column; name it 'caption' or 'text'/);
  await writeFile(join(dir, 'metadata.csv'), 'file_name,caption\na.png,x\n5_sks dog/d.png,"quoted, with comma"\na.png,z\n');
  await assert.rejects(loadDataset(cfg), /a\.png is listed twice \(rows 2 and 4\)/);
  await writeFile(join(dir, 'metadata.csv'), 'file_name,caption\na.png,x\n5_sks dog/d.png,"quoted, with comma"\n');
  const ds = await loadDataset({ ...cfg, allow_missing_captions: true });
  assert.equal(ds.items.find((i) => i.key === '5_sks dog/d.png')!.caption, 'quoted, with comma', 'metadata wins over the folder name');
  assert.equal(ds.items.find((i) => i.key === 'e.JPG')!.captionSource, 'none');
  await rm(join(dir, 'metadata.csv'));
  await writeFile(join(dir, 'captions.jsonl'), '{"file_name": "a.png", "text": "from jsonl"}\n{"file_name": "e.JPG", "text": "cmyk"}\n');
  const { config: cfg2 } = await config(dir, `metadata_path: ${JSON.stringify(join(dir, 'captions.jsonl'))}\n`);
  const ds2 = await loadDataset(cfg2);
  assert.equal(ds2.items.find((i) => i.key === 'a.png')!.caption, 'from jsonl');
  assert.equal(ds2.coverage.bySource.metadata, 2);
});

test('a corrupt or truncated image is an error naming the file', async () => {
  const dir = await freshCopy('corrupt');
  await writeFile(join(dir, 'broken.png'), Buffer.from('this is not a png at all'));
  await writeFile(join(dir, 'broken.txt'), 'x');
  const { config: cfg } = await config(dir);
  await assert.rejects(loadDataset(cfg), /cannot read image .*broken\.png/);
  await rm(join(dir, 'broken.png'));
  const whole = await halves(64, 64).png().toBuffer();
  await writeFile(join(dir, 'broken.png'), whole.subarray(0, whole.length - 30));
  await assert.rejects(loadDataset(cfg, { verifyImages: true }), /cannot read image .*broken\.png/);
  await assert.rejects(loadImageTensor(join(dir, 'broken.png')), /cannot read image .*broken\.png/);
});

test('image loading: orientation applied, alpha on white, grey and CMYK to RGB, CHW in [-1, 1], flip', async () => {
  const dir = join(root, 'data');
  const b = await loadImageTensor(join(dir, 'b.jpg'));
  assert.deepEqual([b.width, b.height], [100, 200]);
  const plane = b.width * b.height;
  const px = (t: typeof b, c: number, x: number, y: number) => t.data[c * t.width * t.height + y * t.width + x]!;
  // Rotating the red-left/blue-right image clockwise puts red on top.
  assert.ok(px(b, 0, 50, 20) > 0.9 && px(b, 2, 50, 20) < -0.9, 'top is red');
  assert.ok(px(b, 2, 50, 180) > 0.9 && px(b, 0, 50, 180) < -0.9, 'bottom is blue');
  assert.equal(b.data.length, 3 * plane);

  const c = await loadImageTensor(join(dir, 'c.webp'));
  for (let ch = 0; ch < 3; ch++) {
    assert.equal(px(c, ch, 10, 10), -1, 'opaque black stays black');
    assert.equal(px(c, ch, 140, 10), 1, 'transparent becomes white');
  }
  const d = await loadImageTensor(join(dir, '5_sks dog', 'd.png'));
  for (let i = 0; i < d.width * d.height; i++) {
    assert.equal(d.data[i], d.data[d.width * d.height + i]);
    assert.equal(d.data[i], d.data[2 * d.width * d.height + i]);
  }
  const e = await loadImageTensor(join(dir, 'e.JPG'));
  assert.ok(px(e, 0, 5, 30) > 0.5 && px(e, 2, 5, 30) < -0.5, 'CMYK red is still reddish in RGB');
  for (const t of [b, c, d, e]) for (const v of t.data) assert.ok(v >= -1 && v <= 1);

  const deep = join(root, 'deep16.png');
  await halves(8, 4).toColourspace('rgb16').png().toFile(deep);
  assert.equal((await sharp(deep).metadata()).depth, 'ushort', 'the test file really is 16-bit');
  const g = await loadImageTensor(deep);
  assert.deepEqual([px(g, 0, 0, 0), px(g, 1, 0, 0), px(g, 2, 0, 0)], [1, -1, -1]);
  assert.deepEqual([px(g, 0, 7, 3), px(g, 1, 7, 3), px(g, 2, 7, 3)], [-1, -1, 1]);

  const a = await probeImage(join(dir, 'a.png'));
  const placement = placeImage(a, makeBuckets({ resolution: 128, minReso: 64, maxReso: 256, step: 64 }));
  const t = await loadImageTensor(join(dir, 'a.png'), { resized: placement.resized, crop: placement.crop });
  const f = await loadImageTensor(join(dir, 'a.png'), { resized: placement.resized, crop: placement.crop, flip: true });
  assert.deepEqual([t.width, t.height], [placement.bucket.width, placement.bucket.height]);
  for (let ch = 0; ch < 3; ch++)
    for (let y = 0; y < t.height; y += 7)
      for (let x = 0; x < t.width; x++) assert.equal(px(f, ch, x, y), px(t, ch, t.width - 1 - x, y));
  assert.ok(px(t, 0, 2, 2) > 0.9 && px(f, 2, 2, 2) > 0.9, 'flip puts blue on the left');
});

test('loadItemTensor gives the bucket-sized picture of a dataset item', async () => {
  const { config: cfg } = await config(join(root, 'data'));
  const ds = await loadDataset(cfg);
  for (const it of ds.items) {
    const t = await loadItemTensor(it);
    assert.deepEqual([t.width, t.height], [it.placement.bucket.width, it.placement.bucket.height], it.key);
  }
});

test('validation split is deterministic from the seed and never takes every image', async () => {
  const { config: cfg } = await config(join(root, 'data'), 'validation_split: 0.4\n');
  const one = await loadDataset(cfg);
  const two = await loadDataset(cfg);
  const val = (ds: typeof one) => ds.items.filter((i) => i.split === 'validation').map((i) => i.key);
  assert.equal(val(one).length, 2);
  assert.deepEqual(val(one), val(two));
  const seeds = new Set<string>();
  for (let s = 0; s < 8; s++) seeds.add(val(await loadDataset({ ...cfg, seed: s })).join());
  assert.ok(seeds.size > 1, 'the seed chooses the held-out images');
  assert.equal(val(await loadDataset({ ...cfg, validation_split: 0.99 })).length, 4);
});

test('caption processing: keep_tokens fixed, shuffle, dropout, deterministic per (seed, image, step)', () => {
  const caption = 'sks, dog, red collar, grass, sunny, park';
  const tags = splitTags(caption);
  const none = { shuffle: false, keepTokens: 0, dropoutRate: 0, tagDropoutRate: 0 };
  assert.equal(processCaption(caption, none, seededRandom(1)), caption, 'untouched without options');
  const shuf = { ...none, shuffle: true, keepTokens: 2 };
  const seen = new Set<string>();
  for (let step = 0; step < 50; step++) {
    const out = captionForStep(caption, shuf, 3, 'a.png', step);
    const t = splitTags(out);
    assert.deepEqual(t.slice(0, 2), ['sks', 'dog']);
    assert.deepEqual([...t].sort(), [...tags].sort());
    assert.equal(out, captionForStep(caption, shuf, 3, 'a.png', step));
    seen.add(out);
  }
  assert.ok(seen.size > 10, 'shuffles differ between steps');
  // Dropout rates, measured over many steps, match the configured probabilities.
  const n = 4000;
  let empty = 0;
  let kept = 0;
  const drop = { ...none, keepTokens: 1, dropoutRate: 0.1, tagDropoutRate: 0.3 };
  for (let step = 0; step < n; step++) {
    const out = captionForStep(caption, drop, 9, 'x', step);
    if (out === '') empty++;
    else {
      assert.ok(out.startsWith('sks'));
      kept += splitTags(out).length - 1;
    }
  }
  assert.ok(Math.abs(empty / n - 0.1) < 0.02, `caption dropout ${empty / n}`);
  assert.ok(Math.abs(kept / ((n - empty) * 5) - 0.7) < 0.02, `tag keep rate ${kept / ((n - empty) * 5)}`);
});

function cli(...args: string[]) {
  return spawnSync(process.execPath, [bin, 'train', ...args], { encoding: 'utf8' });
}

test('train --dry-run prints config, coverage, samples, buckets and each image placement, exit 0', async () => {
  const { config: cfg, path } = await config(join(root, 'data'), 'shuffle_caption: true\nkeep_tokens: 1\noutput_dir: "o\\tut"\n');
  const r = cli('--config', path, '--dry-run');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`train_data_dir: ${join(root, 'data')}`));
  assert.match(r.stdout, /shuffle_caption: true/);
  assert.match(r.stderr, /warning: line \d+: output_dir: the double-quoted value "o\\tut" contains \\t \(tab\)/);
  assert.match(r.stdout, /caption coverage: 5\/5 \(100\.0%\): metadata 2, sidecar 2, folder name 1, none 0/);
  assert.match(r.stdout, /b\.jpg \[sidecar\]: "tag one, tag two, tag three"\n {4}as seen at step 0: "tag one, /);
  const ds = await loadDataset(cfg);
  for (const it of ds.items) {
    const p = it.placement;
    const row = new RegExp(
      `${it.key.replace('.', '\\.')}\\s+${it.width}x${it.height}\\s+${p.bucket.width}x${p.bucket.height}\\s+${p.resized.width}x${p.resized.height}\\s+${p.crop.left},${p.crop.top}\\s+${it.repeats}\\s+train`,
    );
    assert.match(r.stdout, row, it.key);
  }
  const plan = stepPlan(ds, cfg);
  assert.match(r.stdout, new RegExp(`steps: ${plan.batchesPerEpoch} batches of ≤ 1 per epoch, ${plan.stepsPerEpoch} optimizer steps per epoch`));
  assert.match(r.stdout, /# buckets \(area ≤ 256², sides 128–512 in steps of 64; \d+ possible, \d+ used\)/);
  assert.match(r.stdout, /dry run: config and dataset are valid; nothing was trained/);
});

test('train --dry-run fails with the config problems or the uncaptioned images, one message, no stack', async () => {
  const bad = join(root, 'bad.yaml');
  await writeFile(bad, `train_data_dir: data\nbase_model: ${JSON.stringify(baseModel)}\nbatch_size: four\nlearning_rat: 1\n`);
  const r = cli('--config', bad, '--dry-run');
  assert.equal(r.status, 2);
  assert.match(r.stderr, /line 3: batch_size: expected an integer ≥ 1, got "four"/);
  assert.match(r.stderr, /line 4: unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)/);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  const dir = await freshCopy('cli-missing');
  await halves(70, 70).png().toFile(join(dir, 'lonely.png'));
  const { path } = await config(dir);
  const m = cli('--config', path, '--dry-run');
  assert.equal(m.status, 2);
  assert.match(m.stderr, /1 of 6 images have no caption: lonely\.png/);
  assert.equal((await readFile(path, 'utf8')).includes('allow_missing_captions'), false);
});
