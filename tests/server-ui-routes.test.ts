/**
 * The routes the browser UI added, on a real server: the training-config schema, checking a config with a
 * 200 answer, a dataset's items with the trainer's buckets, thumbnails, caption edits (kept columns, 409 on
 * a caption changed meanwhile, nothing written), LoRA upload (refused unless it reads as a LoRA), details
 * and the preview list.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { trainConfigDefaults, trainConfigKeys } from '../engine/train/config-fields.ts';
import { readHeaderOnly } from '../engine/safetensors/index.ts';
import { DEMO_MODEL } from '../engine/demo/demo-model.ts';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';
import { patternPng, upload } from './server-train-support.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer({ withModel: true, loadOnStart: false });
});
after(() => t.close());

test('config schema: every key with the engine default, help text and JSON Schema', async () => {
  const r = await t.get('/sdapi/v1/train/config-schema');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.fields.map((f: any) => f.key), trainConfigKeys);
  const defaults = trainConfigDefaults() as Record<string, unknown>;
  for (const f of r.body.fields) {
    assert.deepEqual(f.default, f.required ? null : defaults[f.key] ?? null, f.key);
    assert.ok(f.doc.length > 10, `${f.key} has help text`);
    assert.ok(r.body.json_schema.properties[f.key], `${f.key} is in the JSON Schema`);
  }
});

test('train/check answers 200 with the issues of a bad config, and the plan of a good one', async () => {
  const files: [string, Uint8Array | string, string?][] = [];
  for (let k = 0; k < 3; k++) files.push([`img${k}.png`, await patternPng(k), 'image/png']);
  files.push(['metadata.csv', 'file_name,caption,source\nimg0.png,a disk,cam\nimg1.png,a disk,cam\nimg2.png,a disk,scan\n', 'text/csv']);
  assert.equal((await upload(t, 'checks', files)).status, 201);
  const bad = await t.post('/sdapi/v1/train/check', { train_data_dir: 'datasets/checks', lora_rank: 0 });
  assert.equal(bad.status, 200);
  assert.equal(bad.body.valid, false);
  assert.deepEqual(bad.body.detail[0].loc, ['body', 'lora_rank']);
  const good = await t.post('/sdapi/v1/train/check', { train_data_dir: 'datasets/checks', resolution: 64, batch_size: 1, epochs: 2 });
  assert.equal(good.body.valid, true, JSON.stringify(good.body));
  assert.equal(good.body.images, 3);
  assert.equal(good.body.plan.total_steps, 6);
});

test('dataset items with buckets, thumbnails, caption edits that keep other columns and refuse stale ones', async () => {
  const items = await t.get('/sdapi/v1/train/datasets/checks/items?resolution=64');
  assert.equal(items.status, 200);
  assert.deepEqual(items.body.items.map((i: any) => [i.key, i.caption, i.caption_source]), [['img0.png', 'a disk', 'metadata'], ['img1.png', 'a disk', 'metadata'], ['img2.png', 'a disk', 'metadata']]);
  const meta = await sharp(await patternPng(0)).metadata();
  assert.equal(items.body.items[0].bucket, `${meta.width}x${meta.height}`);
  assert.equal((await t.get('/sdapi/v1/train/datasets/checks/items?resolution=65')).status, 422);
  assert.equal((await t.get('/sdapi/v1/train/datasets/nope/items')).status, 404);

  const thumb = await fetch(`${t.server.url}/sdapi/v1/train/datasets/checks/image?key=img1.png&size=32`);
  assert.equal(thumb.status, 200);
  const tm = await sharp(Buffer.from(await thumb.arrayBuffer())).metadata();
  assert.equal(tm.format, 'jpeg');
  assert.ok(Math.max(tm.width!, tm.height!) <= 32);
  assert.equal((await t.get('/sdapi/v1/train/datasets/checks/image?key=../../config.json')).status, 422);

  const csv = join(t.dataDir, 'datasets/checks/metadata.csv');
  const before = await readFile(csv, 'utf8');
  const stale = await t.post('/sdapi/v1/train/datasets/checks/captions', { edits: [{ key: 'img0.png', caption: 'x', before: 'a disk' }, { key: 'img1.png', caption: 'y', before: 'something else' }] });
  assert.equal(stale.status, 409);
  assert.match(stale.body.detail, /img1\.png/);
  assert.equal(await readFile(csv, 'utf8'), before, 'nothing written when one edit is stale');

  const ok = await t.post('/sdapi/v1/train/datasets/checks/captions', { edits: [{ key: 'img1.png', caption: 'a red disk', before: 'a disk' }] });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.deepEqual(ok.body.changed, ['img1.png']);
  assert.equal(await readFile(csv, 'utf8'), 'file_name,caption,source\nimg0.png,a disk,cam\nimg1.png,a red disk,cam\nimg2.png,a disk,scan\n');
  const nl = await t.post('/sdapi/v1/train/datasets/checks/captions', { edits: [{ key: 'img1.png', caption: 'a\nb' }] });
  assert.equal(nl.status, 422);
  assert.deepEqual(nl.body.detail[0].loc, ['body', 'edits', 0, 'caption']);
  assert.equal((await t.post('/sdapi/v1/train/datasets/checks/captions', { edits: [{ key: 'none.png', caption: 'z' }] })).status, 404);
});

test('LoRA upload: a LoRA lands in the folder and the list; a checkpoint is refused; a name is not replaced silently', async () => {
  const loraDir = join(sdTiny, 'lora-kohya');
  const source = (await readdir(loraDir)).find((n) => n.endsWith('.safetensors'))!;
  const bytes = await readFile(join(loraDir, source));
  const send = async (name: string, data: Uint8Array, query = '') => {
    const form = new FormData();
    form.append('file', new Blob([new Uint8Array(data)]), name);
    const r = await fetch(`${t.server.url}/sdapi/v1/loras/upload${query}`, { method: 'POST', body: form });
    return { status: r.status, body: await r.json() };
  };
  const up = await send('uploaded_one.safetensors', bytes);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.deepEqual(await readFile(join(t.dataDir, 'models/Lora/uploaded_one.safetensors')), bytes);
  assert.ok(((await t.get('/sdapi/v1/loras')).body as any[]).some((l) => l.name === 'uploaded_one'));
  assert.equal((await send('uploaded_one.safetensors', bytes)).status, 409);
  assert.equal((await send('uploaded_one.safetensors', bytes, '?replace=true')).status, 201);
  const ckpt = await send('not_a_lora.safetensors', await readFile(join(sdTiny, 'sd-tiny.safetensors')));
  assert.equal(ckpt.status, 422);
  assert.match(ckpt.body.detail, /not a LoRA/);
  assert.equal((await send('../evil.safetensors', bytes)).status, 422);
  assert.ok(!(await readdir(join(t.dataDir, 'models/Lora'))).some((n) => n.startsWith('.upload-')), 'no staged file left behind');

  const d = await t.get('/sdapi/v1/loras/uploaded_one/details');
  assert.equal(d.status, 200);
  const header = await readHeaderOnly(join(loraDir, source));
  const downs = header.tensors.filter((x) => x.name.endsWith('lora_down.weight')).map((x) => x.shape[0]!);
  assert.deepEqual(d.body.ranks, [...new Set(downs)].sort((a, b) => a - b));

  assert.deepEqual((await t.get('/sdapi/v1/lora-previews')).body, []);
  await writeFile(join(t.dataDir, 'models/Lora/uploaded_one.preview.png'), await patternPng(1));
  assert.deepEqual((await t.get('/sdapi/v1/lora-previews')).body, ['uploaded_one']);
});

test('with the checkpoint folder empty, a training config defaults to the bundled demo model and passes the checks', async () => {
  const s = await startTestServer({ fallbackCheckpoint: DEMO_MODEL, loadOnStart: false });
  try {
    const files: [string, Uint8Array | string, string?][] = [['a.png', await patternPng(0), 'image/png'], ['metadata.csv', 'file_name,caption\na.png,a disk\n', 'text/csv']];
    assert.equal((await upload(s, 'one', files)).status, 201);
    const r = await s.post('/sdapi/v1/train/check', { train_data_dir: 'datasets/one', resolution: 64 });
    assert.equal(r.body.valid, true, JSON.stringify(r.body));
    const dry = await s.post('/sdapi/v1/train/dry-run', { train_data_dir: 'datasets/one', resolution: 64 });
    assert.equal(dry.body.config.base_model, DEMO_MODEL);
    // The resolved config (demo model and bundled tokenizer by their paths) is accepted back, as a resume sends it.
    const again = await s.post('/sdapi/v1/train/check', { train_data_dir: 'datasets/one', resolution: 64, base_model: dry.body.config.base_model, tokenizer: dry.body.config.tokenizer });
    assert.equal(again.body.valid, true, JSON.stringify(again.body));
    // A path outside the checkpoint folder that is not a listed checkpoint stays refused.
    const other = await s.post('/sdapi/v1/train/check', { train_data_dir: 'datasets/one', base_model: join(sdTiny, 'sd-tiny.safetensors') });
    assert.equal(other.body.valid, false);
    assert.equal(other.body.detail[0].type, 'value_error.path');
  } finally {
    await s.close();
  }
});

test('--api-auth: the page loads without credentials; the page\'s own requests get 401 without a browser challenge', async () => {
  const s = await startTestServer({ apiAuth: 'alice:s3cret', loadOnStart: false });
  try {
    const page = await fetch(`${s.server.url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /ui\/app\.js/);
    const plain = await fetch(`${s.server.url}/sdapi/v1/options`);
    assert.equal(plain.status, 401);
    assert.equal(plain.headers.get('www-authenticate'), 'Basic');
    const fromPage = await fetch(`${s.server.url}/sdapi/v1/options`, { headers: { 'X-Requested-With': 'XMLHttpRequest' } });
    assert.equal(fromPage.status, 401);
    assert.equal(fromPage.headers.get('www-authenticate'), null);
    assert.equal((await fromPage.json()).detail, 'Not authenticated');
    const ok = await fetch(`${s.server.url}/sdapi/v1/options`, { headers: { Authorization: `Basic ${Buffer.from('alice:s3cret').toString('base64')}` } });
    assert.equal(ok.status, 200);
  } finally {
    await s.close();
  }
});
