/**
 * The Redis-backed queue on real parts: a real redis-server, one API front (`serve --queue`) and two workers
 * (`worker --queue`), each a separate `lora-scripts` process over one shared data folder, on the sd-tiny
 * fixture model. Every answer is compared with the same request to a single-process server in this process
 * (same engine, one thread, so the floating-point order is the same).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import sharp from 'sharp';
import { Redis } from 'ioredis';
import { startRedis, type TestRedis } from './support/redis.ts';
import { repoRoot } from './support/paths.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { createEngineBackend } from '../server/engine-backend.ts';
import { WORKER_KEY_PREFIX, type WorkerAnnouncement } from '../server/distributed/protocol.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');

interface Proc {
  name: string;
  child: ChildProcess;
  out: string;
  waitFor(re: RegExp, ms?: number): Promise<RegExpExecArray>;
  stop(): Promise<void>;
}

function launch(name: string, args: string[]): Proc {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LORA_SCRIPTS_TRAIN_THREADS: '1' } });
  const p: Proc = {
    name,
    child,
    out: '',
    waitFor: (re, ms = 60_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(p.out);
          if (m) {
            clearTimeout(timer);
            child.stdout!.off('data', check);
            child.off('exit', gone);
            resolve(m);
          }
        };
        const gone = () => reject(new Error(`${name} exited before printing ${re}:\n${p.out}`));
        const timer = setTimeout(() => reject(new Error(`${name}: no ${re} within ${ms} ms:\n${p.out}`)), ms);
        child.stdout!.on('data', check);
        child.once('exit', gone);
        check();
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    },
  };
  child.stdout!.on('data', (d) => (p.out += d));
  child.stderr!.on('data', (d) => (p.out += d));
  return p;
}

let redis: TestRedis;
let single: TestServer;
let front: Proc;
let frontUrl: string;
const workers: Proc[] = [];
let nextWorker = 1;

function startWorker(): Proc {
  const id = `w${nextWorker++}`;
  const w = launch(id, ['worker', '--queue', redis.url, '--data-dir', single.dataDir, '--threads', '1', '--stall-timeout', '2', '--id', id]);
  workers.push(w);
  return w;
}

async function call(base: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const r = await fetch(base + path, { method: body === undefined ? 'GET' : 'POST', headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  try {
    return { status: r.status, body: JSON.parse(text) };
  } catch {
    return { status: r.status, body: text };
  }
}

async function announcements(): Promise<WorkerAnnouncement[]> {
  const c = new Redis(redis.port, '127.0.0.1');
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
  redis = await startRedis();
  // The single-process reference, its data folder shared with the workers (checkpoint and LoRAs linked in).
  single = await startTestServer({
    withModel: true,
    backend: createEngineBackend({ device: 'cpu', threads: 1, fallbackTokenizerDirs: [] }),
  });
  front = launch('front', ['serve', '--queue', redis.url, '--port', '0', '--data-dir', single.dataDir]);
  frontUrl = (await front.waitFor(/lora-scripts API on (http:\/\/\S+)/))[1]!;
  const [a, b] = [startWorker(), startWorker()];
  await Promise.all([a.waitFor(/worker w1 on/), b.waitFor(/worker w2 on/)]);
});

after(async () => {
  await Promise.all([front?.stop(), ...workers.map((w) => w.stop())]);
  await single?.close();
  await redis?.stop();
});

test('workers announce the checkpoints, LoRAs, device and memory they have', async () => {
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

test('errors caused by the request answer the same status and body as the single process', async () => {
  const bad = { prompt: 'x', steps: 2, width: 64, height: 64, override_settings: { sd_model_checkpoint: 'missing-model' } };
  const d = await call(frontUrl, '/sdapi/v1/txt2img', bad);
  const s = await single.post('/sdapi/v1/txt2img', bad);
  assert.equal(d.status, s.status);
  assert.deepEqual(d.body, s.body);
});
