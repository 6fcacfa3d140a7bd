/**
 * Training over the API on a real server with the engine backend and the sd-tiny fixture: upload a dataset,
 * train a few steps in the shared queue while a txt2img waits its turn, follow it over socket.io, then use the
 * LoRA through `<lora:name:1>`; cancel a waiting and a running job and resume the latter from its state.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { patternFiles, recordEvents, upload } from './server-train-support.ts';

let t: TestServer;
let rec: Awaited<ReturnType<typeof recordEvents>>;

const tiny = (extra: Record<string, unknown> = {}) => ({
  train_data_dir: 'datasets/disks',
  lora_rank: 4,
  lora_alpha: 4,
  target_modules: 'attention_mlp',
  train_text_encoder: false,
  resolution: 64,
  enable_bucket: false,
  batch_size: 2,
  epochs: 2,
  learning_rate: 1e-3,
  save_every_n_epochs: 0,
  seed: 7,
  output_name: 'disks',
  ...extra,
});

const gen = { steps: 3, width: 64, height: 64, seed: 3, sampler_name: 'Euler', cfg_scale: 7 };

before(async () => {
  t = await startTestServer({ withModel: true });
  rec = await recordEvents(t.server.url);
  const up = await upload(t, 'disks', await patternFiles(4));
  assert.equal(up.status, 201, JSON.stringify(up.body));
});
after(async () => {
  rec?.socket.close();
  await t?.close();
});

const ended = (id: string) => rec.waitFor((e) => e.event === 'job-end' && e.data.id === id, 120_000);

test('train in the queue with a txt2img waiting behind it, follow it over socket.io, then use the LoRA', async () => {
  const start = await t.post('/sdapi/v1/train/jobs', tiny());
  assert.equal(start.status, 202, JSON.stringify(start.body));
  const id: string = start.body.id;
  assert.match(id, /^train-[0-9a-f]{12}$/);
  assert.equal(start.body.lora, join(t.dataDir, 'models/Lora/disks.safetensors'));

  // Submitted while the training is queued or running: it must wait for the training to end.
  const waiting = t.post('/sdapi/v1/txt2img', { ...gen, prompt: 'a disk' });
  const listed = await t.get('/sdapi/v1/train/jobs');
  assert.ok(listed.body.some((j: any) => j.id === id && ['queued', 'running'].includes(j.status)));
  const r = await waiting;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const trainEnd = await ended(id);
  assert.equal(trainEnd.data.status, 'done');

  const ev = rec.events;
  const genStart = ev.findIndex((e) => e.event === 'job-start' && e.data.job === 'scripts_txt2img');
  assert.ok(genStart > ev.indexOf(trainEnd), 'the generation started only after the training ended');
  assert.ok(ev.findIndex((e) => e.event === 'job-start' && e.data.id === id) < ev.indexOf(trainEnd));

  const job = (await t.get(`/sdapi/v1/train/jobs/${id}`)).body;
  assert.equal(job.status, 'done');
  assert.equal(job.error, null);
  assert.equal(job.total_steps, 4, '4 images, batch 2, 2 epochs');
  assert.deepEqual(job.loss_history.map((p: any) => p.step), [1, 2, 3, 4]);
  for (const p of job.loss_history) {
    assert.ok(Number.isFinite(p.loss) && p.loss > 0, `loss ${p.loss}`);
    assert.equal(p.lrs.unet, 1e-3);
  }
  assert.equal(job.config.base_model, join(t.dataDir, 'models/Stable-diffusion/sd-tiny.safetensors'), 'base_model defaults to the checkpoint');
  assert.equal(job.outputs.work_dir, join(t.dataDir, 'training', id));
  assert.equal(job.outputs.lora, join(t.dataDir, 'models/Lora/disks.safetensors'));
  assert.ok(job.logs.some((l: string) => l.includes('tensorboard --logdir')));
  assert.ok(JSON.parse(await readFile(join(job.outputs.work_dir, 'job.json'), 'utf8')).status === 'done');

  // socket.io: train-progress once per optimizer step with loss, lr and ETA; the queue's progress with textinfo.
  const steps = ev.filter((e) => e.event === 'train-progress' && e.data.id === id && e.data.phase === 'training' && e.data.loss !== null);
  assert.deepEqual(steps.map((e) => e.data.step), [1, 2, 3, 4]);
  assert.deepEqual(steps.map((e) => e.data.loss), job.loss_history.map((p: any) => p.loss));
  for (const e of steps) {
    assert.equal(e.data.lr.unet, 1e-3);
    assert.equal(e.data.total_steps, 4);
    assert.equal(typeof e.data.eta_seconds, 'number');
  }
  assert.ok(ev.some((e) => e.event === 'progress' && e.data.id === id && /^Training disks: epoch \d\/2, step \d\/4, loss/.test(e.data.textinfo ?? '')));
  assert.ok(ev.some((e) => e.event === 'train-log' && e.data.id === id && e.data.message.startsWith('LoRA ready')));

  // The LoRA is in the LoRA folder, listed, and usable in a prompt.
  assert.ok((await stat(join(t.dataDir, 'models/Lora/disks.safetensors'))).size > 0);
  assert.equal((await t.post('/sdapi/v1/refresh-loras')).status, 200);
  const lora = (await t.get('/sdapi/v1/loras')).body.find((l: any) => l.name === 'disks');
  assert.ok(lora, 'listed by /sdapi/v1/loras');
  assert.equal(lora.metadata.ss_output_name, 'disks');
  assert.equal(lora.metadata.ss_network_dim, '4');
  const plain = await t.post('/sdapi/v1/txt2img', { ...gen, prompt: 'a disk' });
  const withLora = await t.post('/sdapi/v1/txt2img', { ...gen, prompt: 'a disk <lora:disks:1>' });
  assert.equal(withLora.status, 200, JSON.stringify(withLora.body));
  const info = JSON.parse(withLora.body.info);
  assert.match(info.infotexts[0], /Lora hashes: "disks: [0-9a-f]{12}"/);
  assert.deepEqual(info.notes ?? [], []);
  assert.notEqual(withLora.body.images[0], plain.body.images[0], 'the trained LoRA changes the image');

  // The name is taken now.
  const again = await t.post('/sdapi/v1/train/jobs', tiny());
  assert.equal(again.status, 409);
  assert.match(again.body.detail, /already has disks\.safetensors/);
});

test('cancel: a waiting job is removed, a running one stops with a state that a new job resumes to the end', async () => {
  const a = await t.post('/sdapi/v1/train/jobs', tiny({ output_name: 'disks-cancel', batch_size: 1, epochs: 4 }));
  const b = await t.post('/sdapi/v1/train/jobs', tiny({ output_name: 'disks-waiting' }));
  assert.equal(a.status, 202, JSON.stringify(a.body));
  assert.equal(b.status, 202);
  const cb = await t.post(`/sdapi/v1/train/jobs/${b.body.id}/cancel`);
  assert.deepEqual(cb.body, { id: b.body.id, status: 'cancelled', cancel: 'removed' });

  await rec.waitFor((e) => e.event === 'train-progress' && e.data.id === a.body.id && e.data.phase === 'training' && e.data.step >= 1, 120_000);
  const ca = await t.post(`/sdapi/v1/train/jobs/${a.body.id}/cancel`);
  assert.equal(ca.status, 200);
  assert.equal(ca.body.cancel, 'stopping');
  assert.equal((await ended(a.body.id)).data.status, 'interrupted');

  const ja = (await t.get(`/sdapi/v1/train/jobs/${a.body.id}`)).body;
  assert.equal(ja.status, 'cancelled');
  assert.equal(ja.outputs.lora, null);
  const done = ja.result.steps as number;
  assert.ok(done >= 1 && done < 16, `stopped after ${done} of 16 steps`);
  assert.equal(ja.outputs.last_state, join(ja.outputs.work_dir, `state-${String(done).padStart(8, '0')}`));
  assert.equal(JSON.parse(await readFile(join(ja.outputs.last_state, 'state.json'), 'utf8')).step, done);
  await assert.rejects(stat(join(t.dataDir, 'models/Lora/disks-cancel.safetensors')), { code: 'ENOENT' });

  const jb = (await t.get(`/sdapi/v1/train/jobs/${b.body.id}`)).body;
  assert.equal(jb.status, 'cancelled');
  assert.equal(jb.started_at, null);
  assert.ok(!rec.events.some((e) => e.event === 'job-start' && e.data.id === b.body.id));
  assert.equal((await t.post(`/sdapi/v1/train/jobs/${b.body.id}/cancel`)).status, 409, 'an ended job cannot be cancelled');

  // resume_from is given relative to the data folder, as a client sees it.
  const resumed = await t.post('/sdapi/v1/train/jobs', tiny({ output_name: 'disks-cancel', batch_size: 1, epochs: 4, resume_from: relative(t.dataDir, ja.outputs.last_state) }));
  assert.equal(resumed.status, 202, JSON.stringify(resumed.body));
  assert.equal((await ended(resumed.body.id)).data.status, 'done');
  const jr = (await t.get(`/sdapi/v1/train/jobs/${resumed.body.id}`)).body;
  assert.equal(jr.status, 'done');
  assert.equal(jr.result.steps, 16);
  assert.equal(jr.loss_history[0].step, done + 1, 'the resumed run continues after the saved step');
  assert.ok(jr.logs.some((l: string) => l.startsWith(`resumed from ${ja.outputs.last_state}`)));
  assert.ok((await stat(join(t.dataDir, 'models/Lora/disks-cancel.safetensors'))).size > 0);
});

test('a run that fails reports status failed with the error, and the queue goes on', async () => {
  // Valid as a config (the file exists), wrong at run time: the fixture LoRA has rank 4.
  const r = await t.post('/sdapi/v1/train/jobs', tiny({ output_name: 'disks-fail', lora_rank: 8, init_lora: 'models/Lora/lora_a.safetensors' }));
  assert.equal(r.status, 202, JSON.stringify(r.body));
  const after = t.post('/sdapi/v1/txt2img', { ...gen, prompt: 'still works' });
  const end = await ended(r.body.id);
  assert.equal(end.data.status, 'error');
  const j = (await t.get(`/sdapi/v1/train/jobs/${r.body.id}`)).body;
  assert.equal(j.status, 'failed');
  assert.match(j.error, /lora_rank 8/);
  assert.equal(j.outputs.lora, null);
  assert.equal((await after).status, 200);
  await assert.rejects(stat(join(t.dataDir, 'models/Lora/disks-fail.safetensors')), { code: 'ENOENT' });
});

test('a restarted server lists the jobs of its earlier run from their job.json', async () => {
  const before = (await t.get('/sdapi/v1/train/jobs')).body as any[];
  assert.ok(before.length >= 4);
  const again = await startTestServer({ dataDir: t.dataDir, loadOnStart: false });
  try {
    const listed = (await again.get('/sdapi/v1/train/jobs')).body as any[];
    // Every job has its record from the moment it was queued, those removed before they started included.
    assert.deepEqual(listed.map((j) => [j.id, j.status, j.lora]).sort(), before.map((j) => [j.id, j.status, j.lora]).sort());
    const ran = before.filter((j) => j.started_at !== null);
    const done = ran.find((j) => j.status === 'done')!;
    const d = (await again.get(`/sdapi/v1/train/jobs/${done.id}`)).body;
    assert.deepEqual(d.loss_history, (await t.get(`/sdapi/v1/train/jobs/${done.id}`)).body.loss_history);
    assert.equal((await again.post(`/sdapi/v1/train/jobs/${done.id}/cancel`)).status, 409);
  } finally {
    await again.server.close();
  }
});
