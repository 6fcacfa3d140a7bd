/**
 * On a real server: images added to a dataset with their captions (written through the engine's caption
 * table, hand edits following the mode), and a LoRA's file and preview image fetched by name.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile, readdir, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';
import { patternPng } from './server-train-support.ts';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { readHeaderOnly } from '../engine/safetensors/index.ts';

let t: TestServer;
before(async () => {
  t = await startTestServer({ loadOnStart: false, withModel: true });
});
after(() => t.close());

const ds = (name: string) => join(t.dataDir, 'datasets', name);

test('images are added to a new dataset with captions; an existing file keeps its bytes; bad images name the field', async () => {
  const png = (await patternPng(1)).toString('base64');
  const add = await t.post('/sdapi/v1/train/datasets/sent/images', { images: [{ image: `data:image/png;base64,${png}`, file_name: 'one.png', caption: 'from a1111, 1girl' }, { image: png }] });
  assert.equal(add.status, 201, JSON.stringify(add.body));
  assert.equal(add.body.added.length, 2);
  assert.equal(add.body.added[0], 'one.png');
  assert.deepEqual((await readdir(ds('sent'))).filter((f) => !f.startsWith('img-')).sort(), ['metadata.csv', 'one.png']);
  const rows = (await readCaptionTable(join(ds('sent'), 'metadata.csv'))).rows;
  assert.deepEqual(rows.map((r) => [r.fileName, r.caption]), [['one.png', 'from a1111, 1girl']]);

  const again = await t.post('/sdapi/v1/train/datasets/sent/images', { images: [{ image: png, file_name: 'one.png', caption: 'other, tags' }], mode: 'append' });
  assert.equal(again.status, 201);
  assert.deepEqual(again.body.kept, ['one.png']);
  assert.equal((await readCaptionTable(join(ds('sent'), 'metadata.csv'))).rows[0]!.caption, 'from a1111, 1girl, other, tags');

  const junk = await t.post('/sdapi/v1/train/datasets/sent/images', { images: [{ image: Buffer.from('not an image').toString('base64') }] });
  assert.equal(junk.status, 422);
  assert.match(junk.body.detail, /^images\[0\]\.image/);
  const wrongExt = await t.post('/sdapi/v1/train/datasets/sent/images', { images: [{ image: png, file_name: 'x.jpg' }] });
  assert.equal(wrongExt.status, 422);
  assert.match(wrongExt.body.detail, /file_name/);
  const badName = await t.post('/sdapi/v1/train/datasets/..%2Fevil/images', { images: [{ image: png }] });
  assert.ok(badName.status === 422 || badName.status === 404, String(badName.status));
});

test('a LoRA file and its preview by name; unknown names 404', async () => {
  const loras = (await t.get('/sdapi/v1/loras')).body as { name: string; path: string }[];
  const first = loras[0]!;
  const r = await fetch(`${t.server.url}/sdapi/v1/loras/${encodeURIComponent(first.name)}/file`);
  assert.equal(r.status, 200);
  const bytes = Buffer.from(await r.arrayBuffer());
  assert.deepEqual(bytes, await readFile(join(sdTiny, 'lora-kohya', `${first.name}.safetensors`)));
  assert.match(r.headers.get('content-disposition') ?? '', new RegExp(`${first.name}\\.safetensors`));
  // The downloaded bytes are a readable safetensors file.
  const dir = join(t.dataDir, 'dl');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'x.safetensors'), bytes);
  assert.ok(Object.keys((await readHeaderOnly(join(dir, 'x.safetensors'))).tensors).length > 0);

  assert.equal((await t.get(`/sdapi/v1/loras/${encodeURIComponent(first.name)}/preview`)).status, 404);
  const preview = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#f00' } }).png().toBuffer();
  await writeFile(join(t.dataDir, 'models/Lora', `${first.name}.preview.png`), preview);
  const p = await fetch(`${t.server.url}/sdapi/v1/loras/${encodeURIComponent(first.name)}/preview`);
  assert.equal(p.status, 200);
  assert.deepEqual(Buffer.from(await p.arrayBuffer()), preview);
  assert.equal((await t.get('/sdapi/v1/loras/no-such-lora/file')).status, 404);
});
