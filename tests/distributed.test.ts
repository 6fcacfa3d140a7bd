/**
 * The Redis-backed queue on real parts: a real redis-server, one API front (`serve --queue`) and two workers
 * (`worker --queue`), each a separate `lora-scripts` process over one shared data folder, on the sd-tiny
 * fixture model. Every answer is compared with the same request to a single-process server in this process
 * (same engine, one thread, so the floating-point order is the same).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import sharp from 'sharp';
import { Redis } from 'ioredis';
import { startRedis, type TestRedis } from './support/redis.ts';
import { launchCli, type CliProcess } from './support/cli-process.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { createEngineBackend } from '../server/engine-backend.ts';
import { WORKER_KEY_PREFIX, bullJobId, type WorkerAnnouncement } from '../server/distributed/protocol.ts';
import { writePatternDataset } from './support/train-fixture.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';

// Training in this process (the reference) and in the workers runs on one thread, like generation.
process.env['LORA_SCRIPTS_TRAIN_THREADS'] = '1';

type Proc = CliProcess;
const launch = (name: string, args: string[]): Proc => launchCli(name, args, { LORA_SCRIPTS_TRAIN_THREADS: '1' });

let redis: TestRedis;
let single: TestServer;
let front: Proc;
let frontUrl: string;
const workers: Proc[] = [];
let nextWorker = 1;
/** The front asks for the same --api-auth as a single server would. */
const FRONT_AUTH = 'tester:front-secret';
const frontHeaders = (): Record<string, string> => ({ authorization: `Basic ${Buffer.from(FRONT_AUTH).toString('base64')}` });
/**
 * Longer than the longest event-loop pause of a worker (building the tiny model's training sessions: ≈3 s on
 * an idle core, several times that on this shared machine under load); shorter makes a busy worker lose its job.
 */
const STALL_S = 20;

function startWorker(): Proc {
  const id = `w${nextWorker++}`;
  const w = launch(id, ['worker', '--queue', redis.url, '--data-dir', single.dataDir, '--threads', '1', '--stall-timeout', String(STALL_S), '--id', id]);
  workers.push(w);
  return w;
}

async function call(base: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  // A server whose event loop a training blocks may close an idle keep-alive connection just as a poll
  // reuses it; a GET is safe to send again.
  for (let attempt = 0; body === undefined && attempt < 3; attempt++) {
    try {
      return await callOnce(base, path);
    } catch (e) {
      if (attempt === 2) throw e;
    }
  }
  return callOnce(base, path, body);
}

async function callOnce(base: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const auth = base === frontUrl ? frontHeaders() : {};
  const r = await fetch(base + path, { method: body === undefined ? 'GET' : 'POST', headers: body === undefined ? auth : { ...auth, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}

async function announcements(): Promise<WorkerAnnouncement[]> {
  const c = new Redis(redis.port, '127.0.0.1', { password: 'queue-secret' });
  try {
    const keys = await c.keys(`${WORKER_KEY_PREFIX}*`);
    return (keys.length ? await c.mget(...keys) : []).filter((v): v is string => v !== null).map((v) => JSON.parse(v) as WorkerAnnouncement);
  } finally {
    c.disconnect();
  }
}

/** The answer without what differs between two runs of the same request (the wall-clock job timestamp). */
function comparable(body: any): any {
  const info = JSON.parse(body.info);
  delete info.job_timestamp;
  return { images: body.images, parameters: body.parameters, info };
}

before(async () => {
  // A password on Redis: the URL carries it to the front and the workers.
  redis = await startRedis({ password: 'queue-secret' });
  // The single-process reference, its data folder shared with the workers (checkpoint and LoRAs linked in).
  single = await startTestServer({
    withModel: true,
    backend: createEngineBackend({ device: 'cpu', threads: 1, fallbackTokenizerDirs: [] }),
  });
  await writePatternDataset(join(single.dataDir, 'datasets/disks'), 4, 0, 'yellow disk, dark background');
  front = launch('front', ['serve', '--queue', redis.url, '--port', '0', '--data-dir', single.dataDir, '--api-auth', FRONT_AUTH]);
  frontUrl = (await front.waitFor(/lora-scripts API on (http:\/\/\S+)/))[1]!;
  const [a, b] = [startWorker(), startWorker()];
  await Promise.all([a.waitFor(/worker w1 on/), b.waitFor(/worker w2 on/)]);
});

after(async () => {
  // Should cleanup hang (a job the single process still runs after a failed test, or a handle left alive),
  // name what is left, stop Redis and end rather than hang the suite.
  setTimeout(() => {
    const handles = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles().map((h) => h.constructor.name);
    console.error(`distributed test: cleanup did not finish within 60 s (${handles.join(', ')}); exiting`);
    redis?.kill();
    // Failed tests have set the exit code already; passing ones stay passed.
    process.exit(process.exitCode ?? 0);
  }, 60_000).unref();
  await Promise.all([front?.stop(), ...workers.map((w) => w.stop())]);
  await redis?.stop();
  await single?.close();
});

test('workers announce the checkpoints, LoRAs, device and memory they have', async () => {
  const anonymous = await fetch(`${frontUrl}/sdapi/v1/options`);
  assert.equal(anonymous.status, 401, 'the front asks for its --api-auth');
  const list = await announcements();
  assert.deepEqual(list.map((w) => w.id).sort(), ['w1', 'w2']);
  for (const w of list) {
    assert.deepEqual(w.checkpoints, ['sd-tiny.safetensors']);
    assert.deepEqual(w.loras.sort(), ['lora_a', 'lora_b']);
    assert.equal(w.device, 'cpu');
    assert.equal(w.concurrency, 1);
    assert.ok(w.freeMemBytes > 0 && w.freeMemBytes <= w.totalMemBytes);
  }
});

test('a burst of mixed txt2img/img2img with different LoRA stacks answers exactly as the single process', async () => {
  const init = (await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 80, b: 40 } } }).png().toBuffer()).toString('base64');
  // A fixed subseed: -1 would draw a random one per run (the infotext and info carry it).
  const base = { steps: 4, width: 64, height: 64, sampler_name: 'Euler a', cfg_scale: 7, subseed: 7 };
  const requests: { kind: 'txt2img' | 'img2img'; body: Record<string, unknown> }[] = [
    { kind: 'txt2img', body: { ...base, prompt: 'a cat', seed: 11 } },
    { kind: 'txt2img', body: { ...base, prompt: 'a cat <lora:lora_a:0.8>', seed: 12, batch_size: 2 } },
    { kind: 'img2img', body: { ...base, prompt: 'a dog <lora:lora_b:1>', seed: 13, init_images: [init], denoising_strength: 0.6 } },
    { kind: 'txt2img', body: { ...base, prompt: 'a cat <lora:lora_a:1> <lora:lora_b:0.5>', seed: 14, sampler_name: 'DPM++ 2M' } },
    { kind: 'img2img', body: { ...base, prompt: 'a house', seed: 15, init_images: [init], denoising_strength: 0.4, n_iter: 2 } },
    { kind: 'txt2img', body: { ...base, prompt: 'a tree <lora:lora_b:0.7>', seed: 16, override_settings: { CLIP_stop_at_last_layers: 2 } } },
  ];
  const started = Date.now();
  const distributed = await Promise.all(requests.map((r) => call(frontUrl, `/sdapi/v1/${r.kind}`, r.body)));
  const burstMs = Date.now() - started;
  for (const [i, r] of requests.entries()) {
    const d = distributed[i]!;
    assert.equal(d.status, 200, JSON.stringify(d.body));
    const s = await single.post(`/sdapi/v1/${r.kind}`, r.body);
    assert.equal(s.status, 200, JSON.stringify(s.body));
    assert.deepEqual(comparable(d.body), comparable(s.body), `request ${i} (${r.kind} ${String(r.body['prompt'])}) differs from the single process`);
  }
  // Both workers took part.
  for (const w of workers) assert.match(w.out, /job task\(\S+\) \(scripts_(txt|img)2img\) started/, `${w.name} ran no job in ${burstMs} ms:\n${w.out}`);
  // The front's options follow the worker's checkpoint load, as in the single process.
  const opts = await call(frontUrl, '/sdapi/v1/options');
  assert.equal(opts.body.sd_model_checkpoint, (await single.get('/sdapi/v1/options')).body.sd_model_checkpoint);
});

test('a job goes to the worker that holds its checkpoint and LoRA stack when both are idle', async () => {
  const stacks = ['a fox <lora:lora_a:0.9>', 'a fox <lora:lora_b:0.3>'];
  const ranOn = async (prompt: string, seed: number): Promise<string> => {
    const id = `task(affinity-${seed})`;
    const r = await call(frontUrl, '/sdapi/v1/txt2img', { prompt, seed, steps: 2, width: 64, height: 64, force_task_id: id });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const w = workers.find((x) => x.out.includes(`job ${id} (scripts_txt2img) started`));
    assert.ok(w);
    return w.name;
  };
  // Two jobs at once land on the two idle workers: each then holds one of the stacks.
  let first: string[] = [];
  for (let round = 0; round < 3 && (first.length === 0 || first[0] === first[1]); round++) {
    first = await Promise.all([ranOn(stacks[0]!, 400 + 2 * round), ranOn(stacks[1]!, 401 + 2 * round)]);
  }
  assert.notEqual(first[0], first[1], 'two concurrent jobs ran on two workers');
  await new Promise((r) => setTimeout(r, 1500));
  const holder = new Map<string, string>();
  for (const w of await announcements()) for (const slot of w.loaded) for (const st of slot.stacks) holder.set(st, w.id);
  assert.equal(holder.get('lora_a:0.9:0.9'), first[0]);
  assert.equal(holder.get('lora_b:0.3:0.3'), first[1]);
  for (let i = 0; i < 4; i++) {
    const k = i % 2;
    assert.equal(await ranOn(stacks[k]!, 410 + i), first[k], `request ${i} with stack ${k} went to the other worker`);
    await new Promise((r) => setTimeout(r, 1200));
  }
});

test('errors caused by the request answer the same status and body as the single process', async () => {
  const bad = { prompt: 'x', steps: 2, width: 64, height: 64, override_settings: { samples_format: 'bmp' } };
  const d = await call(frontUrl, '/sdapi/v1/txt2img', bad);
  const s = await single.post('/sdapi/v1/txt2img', bad);
  assert.equal(d.status, s.status);
  assert.deepEqual(d.body, s.body);
});

/** Polls the front's /progress until `ok` holds for it. */
async function progressUntil(ok: (p: any) => boolean, ms = 60_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const p = (await call(frontUrl, '/sdapi/v1/progress')).body;
    if (ok(p)) return p;
    if (Date.now() > end) throw new Error(`progress never matched: ${JSON.stringify(p)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('progress with a live preview, socket.io events and interrupt reach the job on its worker', async () => {
  const { io } = await import('socket.io-client');
  const socket = io(frontUrl, { transports: ['websocket'], forceNew: true, extraHeaders: frontHeaders() });
  const events: { name: string; data: any }[] = [];
  socket.onAny((name: string, data: unknown) => events.push({ name, data }));
  await new Promise<void>((r) => socket.once('connect', () => r()));
  try {
    const body = { prompt: 'a lighthouse', seed: 21, subseed: 7, steps: 60, width: 64, height: 64, sampler_name: 'Euler', force_task_id: 'task(interrupt-me)' };
    const answer = call(frontUrl, '/sdapi/v1/txt2img', body);
    // show_progress_every_n_steps is 10: the worker renders a preview at step 10 and sends it with the step.
    const p = await progressUntil((x) => x.state.job === 'scripts_txt2img' && x.state.sampling_step >= 10 && x.current_image !== null);
    assert.equal(p.state.sampling_steps, 60);
    assert.ok(p.progress > 0 && p.progress < 1);
    // The engine's preview is the cheap latent approximation (one pixel per latent), as in the single process.
    const png = await sharp(Buffer.from(p.current_image, 'base64')).metadata();
    assert.equal(png.format, 'png');
    assert.ok(png.width! > 0 && png.width! <= 64 && png.height! > 0 && png.height! <= 64);
    assert.deepEqual((await call(frontUrl, '/sdapi/v1/interrupt', {})).body, {});
    const r = await answer;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const full = await single.post('/sdapi/v1/txt2img', { ...body, force_task_id: undefined });
    assert.notEqual(r.body.images[0], full.body.images[0], 'the interrupted job returned its partly denoised image, not the finished one');
    const idle = await progressUntil((x) => x.state.job === '');
    assert.equal(idle.progress, 0);
    const mine = events.filter((e) => e.data?.id === 'task(interrupt-me)');
    assert.ok(mine.some((e) => e.name === 'job-start'), JSON.stringify(events.map((e) => e.name)));
    assert.ok(mine.some((e) => e.name === 'progress' && e.data.state.sampling_step >= 1));
    const end = mine.find((e) => e.name === 'job-end');
    assert.equal(end?.data.status, 'interrupted');
  } finally {
    socket.close();
  }
});

test('a worker killed with SIGKILL mid-job: after the stall timeout the other worker runs the job, and the answer is the same', async () => {
  const body = { prompt: 'a red boat <lora:lora_a:0.6>', seed: 31, subseed: 7, steps: 40, width: 64, height: 64, sampler_name: 'Euler a', force_task_id: 'task(kill-its-worker)' };
  const answer = call(frontUrl, '/sdapi/v1/txt2img', body);
  const started = /job task\(kill-its-worker\) \(scripts_txt2img\) started/;
  const victim = await Promise.any(workers.filter((w) => w.child.exitCode === null).map((w) => w.waitFor(started).then(() => w)));
  // Only this job has 40 steps: kill once it is under way.
  await progressUntil((x) => x.state.sampling_steps === 40 && x.state.sampling_step >= 2);
  assert.ok(victim, 'one of the workers runs the job');
  const killedAt = Date.now();
  await victim.stop();
  // Two workers again for what follows; the newcomer may also be the one that takes the job over.
  const replacement = startWorker();
  const r = await answer;
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const rescuer = workers.find((w) => w !== victim && w.out.includes('job task(kill-its-worker) done'));
  assert.ok(rescuer, `another worker finished the job:\n${workers.map((w) => `${w.name}: ${w.out}`).join('\n')}`);
  assert.ok(Date.now() - killedAt >= STALL_S * 1000 * 0.75, 'the job waited for the stall timeout');
  const s = await single.post('/sdapi/v1/txt2img', body);
  assert.deepEqual(comparable(r.body), comparable(s.body));
  await replacement.waitFor(/worker w\d+ on/);
});

const tinyTraining = (extra: Record<string, unknown>) => ({
  train_data_dir: 'datasets/disks',
  lora_rank: 4,
  lora_alpha: 4,
  target_modules: 'attention_mlp',
  train_text_encoder: false,
  resolution: 64,
  enable_bucket: false,
  batch_size: 1,
  epochs: 3,
  learning_rate: 1e-3,
  lr_scheduler: 'linear',
  save_every_n_epochs: 0,
  save_steps: 3,
  seed: 7,
  ...extra,
});

async function trainingEnded(base: string, id: string, ms = 90_000): Promise<any> {
  const end = Date.now() + ms;
  for (;;) {
    const j = (await call(base, `/sdapi/v1/train/jobs/${id}`)).body;
    if (j.ended_at) return j;
    if (Date.now() > end) throw new Error(`training ${id} did not end: ${JSON.stringify(j)}\n${workers.map((w) => `${w.name}: ${w.out}`).join('\n')}\nfront: ${front.out}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function tensors(path: string): Promise<Map<string, Buffer>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, Buffer>();
    for (const n of f.names()) out.set(n, Buffer.from((await f.readFloat32(n)).buffer));
    return out;
  } finally {
    await f.close();
  }
}

test('a training pinned to a label no worker carries waits in the queue until cancelled', async () => {
  const r = await call(frontUrl, '/sdapi/v1/train/jobs?worker_label=big-gpu', tinyTraining({ output_name: 'pinned' }));
  assert.equal(r.status, 202, JSON.stringify(r.body));
  await new Promise((res) => setTimeout(res, 2500));
  const j = (await call(frontUrl, `/sdapi/v1/train/jobs/${r.body.id}`)).body;
  assert.equal(j.status, 'queued', 'no worker has the label, so none ran it');
  assert.equal(j.queue_position, 0);
  for (const w of workers) assert.doesNotMatch(w.out, new RegExp(`job ${r.body.id} \\(train_lora\\) started`));
  const c = await call(frontUrl, `/sdapi/v1/train/jobs/${r.body.id}/cancel`, {});
  assert.deepEqual(c.body, { id: r.body.id, status: 'cancelled', cancel: 'removed' });
});

test('a training whose worker and front are killed moves to the other worker, resumes from its last state to a bit-identical LoRA, and a new front reports it', async () => {
  // The reference run in the single process trains meanwhile.
  const kept = await single.post('/sdapi/v1/train/jobs', tinyTraining({ output_name: 'kept' }));
  assert.equal(kept.status, 202, JSON.stringify(kept.body));
  const referenceEnded = trainingEnded(single.server.url, kept.body.id);

  const moved = await call(frontUrl, '/sdapi/v1/train/jobs', tinyTraining({ output_name: 'moved' }));
  assert.equal(moved.status, 202, JSON.stringify(moved.body));
  const id: string = moved.body.id;
  const started = new RegExp(`job ${id} \\(train_lora\\) started`);
  const victim = await Promise.any(workers.filter((w) => w.child.exitCode === null).map((w) => w.waitFor(started, 120_000).then(() => w)));
  // Kill once the front has heard of a saved state (the record travels with every progress report).
  for (let i = 0; ; i++) {
    const j = (await call(frontUrl, `/sdapi/v1/train/jobs/${id}`)).body;
    assert.ok(!j.ended_at, `the training ended before its worker could be killed: ${JSON.stringify({ status: j.status, error: j.error, logs: j.logs })}`);
    if (j.outputs.last_state) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  // Under heavy load a worker's event loop may stay blocked past the stall timeout, and the job moves before
  // the kill; the worker that lost it says so and stops. Kill the one that runs it now.
  const lost = `lost the lock on ${bullJobId(id)}`;
  const runner = workers.filter((w) => w.child.exitCode === null && started.test(w.out) && !w.out.includes(lost)).at(-1) ?? victim;
  await runner.stop();
  // The front goes down too; a new one on the same Redis takes over the job's record from the workers.
  await front.stop();
  front = launch('front-2', ['serve', '--queue', redis.url, '--port', '0', '--data-dir', single.dataDir, '--api-auth', FRONT_AUTH]);
  frontUrl = (await front.waitFor(/lora-scripts API on (http:\/\/\S+)/))[1]!;
  const done = await trainingEnded(frontUrl, id);
  const reference = await referenceEnded;
  assert.equal(reference.status, 'done', JSON.stringify(reference.error));
  assert.equal(done.status, 'done', JSON.stringify(done.error));
  assert.equal(done.result.steps, reference.result.steps);
  assert.ok(done.logs.some((l: string) => /^resumed from .*state-\d{8}: step [1-9]/.test(l)), `${done.logs.join('\n')}\n${workers.map((w) => `${w.name}: ${w.out}`).join('\n')}`);
  assert.ok(workers.some((w) => w !== runner && w.out.includes(`job ${id} done`)), 'another worker finished it');

  const a = await tensors(join(single.dataDir, 'models/Lora/kept.safetensors'));
  const b = await tensors(join(single.dataDir, 'models/Lora/moved.safetensors'));
  assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
  for (const [k, v] of a) assert.ok(v.equals(b.get(k)!), `${k} differs after the move`);
  // The new front lists the new LoRA at once.
  const listed = (await call(frontUrl, '/sdapi/v1/loras')).body as { name: string }[];
  assert.ok(listed.some((l) => l.name === 'moved'));
});
