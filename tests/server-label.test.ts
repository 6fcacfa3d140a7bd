/**
 * Auto-labelling on a real server: models found in <data-dir>/models/CLIP and models/WD14 (clip-tiny and a
 * tiny tagger written here), a labelling job over an uploaded dataset followed over socket.io, and A1111's
 * /sdapi/v1/interrogate for both models, with the 4xx answers that name what is missing.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { recordEvents, upload } from './server-train-support.ts';
import { fixturesDir } from './support/paths.ts';
import { logit, writeTinyTagger } from './support/tiny-tagger.ts';

const clip = join(fixturesDir, 'clip-tiny');
const images = ['photo_rgb.png', 'sticker_rgba.png', 'scan_grey.png'];
let t: TestServer;
let rec: Awaited<ReturnType<typeof recordEvents>>;

before(async () => {
  t = await startTestServer();
  rec = await recordEvents(t.server.url);
  // A Hugging Face CLIP folder as people copy it: weights, configs and the tokenizer files together.
  const m = join(t.dataDir, 'models/CLIP/clip-tiny');
  await mkdir(m, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'preprocessor_config.json']) await symlink(join(clip, 'model', f), join(m, f));
  for (const f of ['vocab.json', 'merges.txt']) await symlink(join(fixturesDir, 'clip-bpe', f), join(m, f));
  const files: [string, Uint8Array, string][] = [];
  for (const f of images) files.push([f, await readFile(join(clip, 'images', f)), 'image/png']);
  const up = await upload(t, 'pics', files);
  assert.equal(up.status, 201, JSON.stringify(up.body));
});
after(async () => {
  rec?.socket.close();
  await t?.close();
});

const b64 = async (f: string) => (await readFile(join(clip, 'images', f))).toString('base64');
const ended = (id: string) => rec.waitFor((e) => e.event === 'job-end' && (e.data as { id: string }).id === id, 120_000);

test('deepdanbooru without a tagger is a 4xx naming the folder; models are listed', async () => {
  const r = await t.post('/sdapi/v1/interrogate', { image: await b64('photo_rgb.png'), model: 'deepdanbooru' });
  assert.equal(r.status, 422);
  assert.match(r.body.detail, new RegExp(`no WD14 tagger in ${join(t.dataDir, 'models/WD14').replace(/[/\\.]/g, '.')}`));
  assert.equal((await t.post('/sdapi/v1/interrogate', { image: await b64('photo_rgb.png'), model: 'blip' })).status, 404);
  const list = await t.get('/sdapi/v1/label/models');
  assert.deepEqual(list.body.clip.map((m: any) => [m.name, m.kind, m.error]), [['clip-tiny', 'hf', null]]);
  assert.deepEqual(list.body.wd14, []);
});

test('a labelling job captions the dataset with progress events; interrogate clip gives the same caption', async () => {
  const start = await t.post('/sdapi/v1/label', { dataset: 'pics', mode: 'missing', trigger: 'pxl' });
  assert.equal(start.status, 202, JSON.stringify(start.body));
  const id: string = start.body.id;
  assert.equal(start.body.model, 'clip');
  const end = await ended(id);
  assert.equal((end.data as any).status, 'done', JSON.stringify(end.data));
  const progress = rec.events.filter((e) => e.event === 'label-progress' && (e.data as any).id === id).map((e) => e.data as any);
  assert.deepEqual(progress.map((p) => [p.done, p.total]), [[1, 3], [2, 3], [3, 3]]);
  assert.ok(progress.every((p) => typeof p.file === 'string' && p.caption.startsWith('pxl, ') && p.images_per_second > 0));
  const job = (await t.get(`/sdapi/v1/label/jobs/${id}`)).body;
  assert.equal(job.status, 'done');
  assert.deepEqual(job.changes.map((c: any) => [c.file, c.action]).sort(), images.map((f) => [f, 'added']).sort());
  const table = await readCaptionTable(join(t.dataDir, 'datasets/pics/metadata.csv'));
  const photo = table.rows.find((r) => r.fileName === 'photo_rgb.png')!.caption;
  assert.equal(photo, job.changes.find((c: any) => c.file === 'photo_rgb.png').after);

  const r = await t.post('/sdapi/v1/interrogate', { image: await b64('photo_rgb.png'), model: 'clip' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(`pxl, ${r.body.caption}`, photo);

  // Missing mode again: nothing to do; overwrite as a dry run: every caption would change, the file does not.
  const before = await readFile(join(t.dataDir, 'datasets/pics/metadata.csv'), 'utf8');
  const again = await t.post('/sdapi/v1/label', { dataset: 'pics' });
  await ended(again.body.id);
  assert.deepEqual((await t.get(`/sdapi/v1/label/jobs/${again.body.id}`)).body.result.skipped, 3);
  const dry = await t.post('/sdapi/v1/label', { dataset: 'pics', mode: 'overwrite', dry_run: true });
  await ended(dry.body.id);
  const dj = (await t.get(`/sdapi/v1/label/jobs/${dry.body.id}`)).body;
  assert.deepEqual(dj.changes.map((c: any) => c.action), ['replaced', 'replaced', 'replaced']);
  assert.equal(await readFile(join(t.dataDir, 'datasets/pics/metadata.csv'), 'utf8'), before);
});

test('WD14 tagger: deepdanbooru interrogate and "both" labelling; bad requests name the field', async () => {
  await writeTinyTagger(join(t.dataDir, 'models/WD14/tiny'), [
    { name: 'hero_(character)', category: 4, weights: [0, 0, 0], bias: logit(0.95) },
    { name: 'long_hair', category: 0, weights: [0, 0, 0], bias: logit(0.8) },
    { name: 'pxl', category: 0, weights: [0, 0, 0], bias: logit(0.7) },
  ], 16);
  const r = await t.post('/sdapi/v1/interrogate', { image: await b64('sticker_rgba.png'), model: 'deepdanbooru' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.caption, 'hero \\(character\\), long hair, pxl');

  await copyFile(join(clip, 'images/scan_grey.png'), join(t.dataDir, 'datasets/pics/extra.png'));
  const start = await t.post('/sdapi/v1/label', { dataset: 'pics', model: 'both', trigger: 'pxl', target: 'sidecar', wd14_model: 'tiny' });
  assert.equal(start.status, 202, JSON.stringify(start.body));
  await ended(start.body.id);
  const job = (await t.get(`/sdapi/v1/label/jobs/${start.body.id}`)).body;
  assert.equal(job.status, 'done', job.error);
  assert.deepEqual(job.changes.map((c: any) => c.file), ['extra.png'], 'images captioned in metadata.csv are left alone');
  const side = (await readFile(join(t.dataDir, 'datasets/pics/extra.txt'), 'utf8')).trim();
  assert.match(side, /^pxl, .+, hero \(character\), long hair$/, 'trigger first, CLIP caption, then tags without repeating the trigger');

  // A job cancelled while it waits behind another never runs; an ended job cannot be cancelled.
  const first = await t.post('/sdapi/v1/label', { dataset: 'pics', mode: 'overwrite', dry_run: true });
  const second = await t.post('/sdapi/v1/label', { dataset: 'pics', mode: 'overwrite', dry_run: true });
  assert.equal((await t.post(`/sdapi/v1/label/jobs/${second.body.id}/cancel`, {})).status, 200);
  await ended(first.body.id);
  assert.equal((await t.get(`/sdapi/v1/label/jobs/${second.body.id}`)).body.status, 'cancelled');
  assert.ok(!rec.events.some((e) => e.event === 'job-start' && (e.data as { id: string }).id === second.body.id), 'the cancelled job never started');
  assert.equal((await t.post(`/sdapi/v1/label/jobs/${first.body.id}/cancel`, {})).status, 409);

  const bad = await t.post('/sdapi/v1/label', { dataset: 'pics', mode: 'sometimes' });
  assert.equal(bad.status, 422);
  assert.match(bad.body.detail, /mode: /);
  assert.equal((await t.post('/sdapi/v1/label', { dataset: 'nope' })).status, 404);
  const wrong = await t.post('/sdapi/v1/label', { dataset: 'pics', model: 'wd14', wd14_model: 'other' });
  assert.equal(wrong.status, 404);
  assert.match(wrong.body.detail, /WD14 tagger 'other' not found .* \(found: tiny\)/);
});
