/**
 * Generation and training run on worker threads (server/backend-thread.ts, server/training-thread.ts): while
 * a real ONNX Runtime job runs, /sdapi/v1/progress and other routes keep answering *during* each step, and
 * /sdapi/v1/interrupt stops the job mid-run. A thread that dies fails its job with a clear 500 and the next
 * job runs on a new thread.
 *
 * The discriminating measure needs no absolute timing: a client that polls one request after another gets
 * about one answer per step when steps hold the HTTP loop (each request waits for the step to end), and many
 * when they do not. Steps are made long by size (4× the fixture's native side, read from its configs).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import sharp from 'sharp';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';
import { patternFiles, upload } from './server-train-support.ts';
import { WorkerPool } from '../engine/util/worker-pool.ts';

let t: TestServer;
/** The fixture's native image side: the UNet's latent sample size times the VAE's downscale factor. */
let native = 0;

before(async () => {
  const unet = JSON.parse(await readFile(join(sdTiny, 'diffusers/unet/config.json'), 'utf8')) as { sample_size: number };
  const vae = JSON.parse(await readFile(join(sdTiny, 'diffusers/vae/config.json'), 'utf8')) as { block_out_channels: number[] };
  native = unet.sample_size * 2 ** (vae.block_out_channels.length - 1);
  t = await startTestServer({ withModel: true });
  await t.server.ctx.queue.idle();
});
after(async () => {
  await t?.close();
});

interface Answer {
  sent: number;
  at: number;
  status: number;
  body: any;
}

/** Requests `path` one after another (each sent when the previous answered) until `stop()` is true. */
function pollSequentially(path: string, stop: () => boolean): { answers: Answer[]; done: Promise<void> } {
  const answers: Answer[] = [];
  const done = (async () => {
    while (!stop()) {
      const sent = performance.now();
      const r = await fetch(t.server.url + path);
      const body = await r.json();
      answers.push({ sent, at: performance.now(), status: r.status, body });
    }
  })();
  return { answers, done };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** Per step seen in the progress answers: how many answers showed it, and how long it lasted (first sight to the next step's). */
function stepsSeen(answers: Answer[], stepOf: (a: Answer) => number | null): { counts: number[]; durations: number[] } {
  const runs: { step: number; first: number; n: number }[] = [];
  for (const a of answers) {
    const s = stepOf(a);
    if (s === null) continue;
    const last = runs.at(-1);
    if (last && last.step === s) last.n++;
    else runs.push({ step: s, first: a.at, n: 1 });
  }
  // The first and last runs are cut by the start and end of polling.
  const whole = runs.slice(1, -1);
  return { counts: whole.map((r) => r.n), durations: whole.map((r, i) => runs[i + 2]!.first - r.first) };
}

test('progress and other routes answer during every generation step; interrupt stops the run mid-way', async (tc) => {
  const side = 4 * native;
  const steps = 1000;
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let ended = false;
  const started = performance.now();
  const job = t.post('/sdapi/v1/txt2img', { prompt: 'a long run', steps, width: side, height: side, seed: 4, sampler_name: 'Euler', cfg_scale: 7 }).finally(() => (ended = true));
  // Wait for the run to be in its sampling loop before measuring.
  while (!ended && (t.server.ctx.queue.current()?.step ?? 0) < 1) await new Promise((r) => setTimeout(r, 10));
  const progress = pollSequentially('/sdapi/v1/progress?skip_current_image=false', () => ended);
  const other = pollSequentially('/sdapi/v1/sd-models', () => ended);
  const stepOf = (a: Answer) => (a.body.progress > 0 && a.body.progress < 1 ? (a.body.state.sampling_step as number) : null);
  // Observe a few whole steps, then interrupt.
  while (!ended && stepsSeen(progress.answers, stepOf).counts.length < 3) await new Promise((r) => setTimeout(r, 20));
  assert.ok(!ended, 'the run ended before it was interrupted');
  const asked = performance.now();
  const stopAnswer = await fetch(t.server.url + '/sdapi/v1/interrupt', { method: 'POST' });
  assert.equal(stopAnswer.status, 200);
  const r = await job;
  const finished = performance.now();
  await Promise.all([progress.done, other.done]);
  loop.disable();

  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.images.length, 1);
  const meta = await sharp(Buffer.from(r.body.images[0], 'base64')).metadata();
  assert.equal(meta.width, side);

  const running = progress.answers.filter((a) => stepOf(a) !== null);
  const lastStep = Math.max(...running.map((a) => a.body.state.sampling_step as number));
  assert.ok(lastStep < steps / 2, `interrupted mid-run: ${lastStep} of ${steps} steps were done`);
  assert.ok(running.length >= 8, `progress strictly between 0 and 1 seen ${running.length} times`);
  for (const a of running) assert.equal(a.body.state.sampling_steps, steps);
  // Previews cross from the generation thread when asked for.
  assert.ok(progress.answers.some((a) => typeof a.body.current_image === 'string' && a.body.current_image.length > 0), 'a live preview came back');

  const { counts, durations } = stepsSeen(progress.answers, stepOf);
  const latency = progress.answers.map((a) => a.at - a.sent);
  const otherLatency = other.answers.map((a) => a.at - a.sent);
  const stepMs = median(durations);
  tc.diagnostic(
    `side ${side}: step ${stepMs.toFixed(0)} ms (median of ${durations.length}), progress answers per step ${counts.join(',')}, ` +
      `latency median ${median(latency).toFixed(1)} ms / max ${Math.max(...latency).toFixed(0)} ms, /sd-models ${other.answers.length} answers median ${median(otherLatency).toFixed(1)} ms, ` +
      `event-loop delay max ${(loop.max / 1e6).toFixed(0)} ms p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms, interrupt answered in ${(finished - asked).toFixed(0)} ms, run ${(finished - started).toFixed(0)} ms`,
  );
  // Answers come during a step, not only between steps: several per step, each far quicker than a step.
  assert.ok(median(counts) >= 3, `progress answers per whole step: ${counts.join(',')}`);
  assert.ok(median(latency) < stepMs / 2, `median progress latency ${median(latency).toFixed(1)} ms against ${stepMs.toFixed(0)} ms steps`);
  assert.ok(other.answers.length >= running.length / 2 && other.answers.every((a) => a.status === 200), `/sdapi/v1/sd-models answered ${other.answers.length} times`);
  assert.ok(median(otherLatency) < stepMs / 2, `median /sd-models latency ${median(otherLatency).toFixed(1)} ms against ${stepMs.toFixed(0)} ms steps`);
  // Every answer arrived before the run ended (the poll that saw the end aside).
  assert.ok(running.every((a) => a.at <= finished));
});

test('progress answers during every training step; interrupt stops the training', async (tc) => {
  const up = await upload(t, 'offthread', await patternFiles(4));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const start = await t.post('/sdapi/v1/train/jobs', {
    train_data_dir: 'datasets/offthread',
    lora_rank: 4,
    lora_alpha: 4,
    target_modules: 'attention_mlp',
    train_text_encoder: false,
    resolution: 2 * native,
    enable_bucket: false,
    batch_size: 2,
    epochs: 200,
    learning_rate: 1e-3,
    save_every_n_epochs: 0,
    seed: 7,
    output_name: 'offthread',
  });
  assert.equal(start.status, 202, JSON.stringify(start.body));
  const id: string = start.body.id;
  const status = async () => (await t.get(`/sdapi/v1/train/jobs/${id}`)).body.status as string;
  const t0 = Date.now();
  while ((t.server.ctx.queue.current()?.step ?? 0) < 1) {
    assert.ok(Date.now() - t0 < 120_000, 'the training never reached its first step');
    assert.ok(!['done', 'failed', 'cancelled'].includes(await status()), 'the training ended before its first step');
    await new Promise((r) => setTimeout(r, 20));
  }
  let stopped = false;
  const progress = pollSequentially('/sdapi/v1/progress?skip_current_image=true', () => stopped);
  const stepOf = (a: Answer) => (a.body.state.job === 'train_lora' && a.body.state.sampling_steps > 0 ? (a.body.state.sampling_step as number) : null);
  while (stepsSeen(progress.answers, stepOf).counts.length < 3) {
    assert.ok(Date.now() - t0 < 180_000, 'too few training steps observed');
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await t.post('/sdapi/v1/interrupt');
  assert.equal(r.status, 200);
  while (!['done', 'failed', 'cancelled'].includes(await status())) {
    assert.ok(Date.now() - t0 < 240_000, 'the training did not stop after interrupt');
    await new Promise((r) => setTimeout(r, 50));
  }
  stopped = true;
  await progress.done;
  const job = (await t.get(`/sdapi/v1/train/jobs/${id}`)).body;
  assert.equal(job.status, 'cancelled', JSON.stringify(job.error));
  assert.ok(job.loss_history.length < job.total_steps, `stopped after ${job.loss_history.length} of ${job.total_steps} steps`);

  const { counts, durations } = stepsSeen(progress.answers, stepOf);
  const latency = progress.answers.map((a) => a.at - a.sent);
  const stepMs = median(durations);
  tc.diagnostic(`training at ${2 * native}²: step ${stepMs.toFixed(0)} ms, progress answers per step ${counts.join(',')}, latency median ${median(latency).toFixed(1)} ms / max ${Math.max(...latency).toFixed(0)} ms`);
  assert.ok(median(counts) >= 3, `progress answers per whole training step: ${counts.join(',')}`);
  assert.ok(median(latency) < stepMs / 2, `median progress latency ${median(latency).toFixed(1)} ms against ${stepMs.toFixed(0)} ms steps`);
});

test('a generation thread that dies fails its job with a 500 saying so; the next job runs on a new thread', async () => {
  const gen = (prompt: string) => t.post('/sdapi/v1/txt2img', { prompt, steps: 2, width: native, height: native, seed: 6, sampler_name: 'Euler', cfg_scale: 7 });
  assert.equal((await gen('warm')).status, 200);
  // An idle thread that is gone (WorkerPool.closeAll ends every worker of the process) is replaced by the
  // next job, which loads the checkpoint the server had loaded.
  await WorkerPool.closeAll();
  const again = await gen('after an idle death');
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.images.length, 1);

  // A thread that dies under a job: here while it starts (ending a thread inside an ONNX Runtime call would
  // abort the test process itself, see server/backend-thread.ts), so the unload below comes first.
  assert.equal((await t.post('/sdapi/v1/unload-checkpoint')).status, 200);
  let answered = false;
  const doomed = gen('doomed').finally(() => (answered = true));
  while (!answered) {
    await WorkerPool.closeAll();
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await doomed;
  assert.equal(r.status, 500, JSON.stringify(r.body));
  assert.match(JSON.stringify(r.body), /generation thread stopped/);
  assert.doesNotMatch(JSON.stringify(r.body), /at .*\.ts:\d+/, 'no stack trace');
  assert.equal((await t.get('/sdapi/v1/progress')).status, 200, 'the server keeps answering');
  const next = await gen('after');
  assert.equal(next.status, 200, JSON.stringify(next.body));
  assert.equal(next.body.images.length, 1);
});
