/**
 * The hardening cases of the server, end to end over HTTP and socket.io: requests that used to stall or
 * kill the process (prompt-editing bombs, 4096², 100000 hires steps, rank 1000000, an SVG blur bomb) get a
 * 422 naming the field and the limit while the event loop keeps answering; task ids and queue events stay
 * with the user who queued the job; and a soak of mixed requests keeps its memory flat and its answers
 * byte-identical.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { io as ioClient, type Socket } from 'socket.io-client';
import sharp from 'sharp';
import { FixtureBackend, startTestServer } from './server-fixture-backend.ts';
import { patternFiles, upload } from './server-train-support.ts';

test('requests that used to stall the server are refused with a 422 naming the field, and the loop keeps answering', async () => {
  const t = await startTestServer({ withModel: true, backend: new FixtureBackend(), limits: { maxPixels: 1024 * 1024, maxLoraRank: 64 } });
  try {
    assert.equal((await upload(t, 'disks', await patternFiles(2))).status, 201);
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="8000" height="8000"><filter id="b"><feGaussianBlur stdDeviation="900"/></filter><rect width="8000" height="8000" filter="url(#b)"/></svg>';
    const cases: [string, string, unknown, (string | number)[]][] = [
      ['prompt [×5000', '/sdapi/v1/txt2img', { prompt: '['.repeat(5000) + 'cat', steps: 1, width: 8, height: 8 }, ['body', 'prompt']],
      ['prompt [×2000', '/sdapi/v1/txt2img', { prompt: '['.repeat(2000), steps: 1, width: 8, height: 8 }, ['body', 'prompt']],
      ['4096²', '/sdapi/v1/txt2img', { prompt: 'x', width: 4096, height: 4096 }, ['body', 'width']],
      ['hr steps', '/sdapi/v1/txt2img', { prompt: 'x', steps: 2, width: 64, height: 64, enable_hr: true, hr_second_pass_steps: 100000 }, ['body', 'hr_second_pass_steps']],
      ['hr target', '/sdapi/v1/txt2img', { prompt: 'x', steps: 2, width: 512, height: 512, enable_hr: true, hr_scale: 4 }, ['body', 'hr_scale']],
      ['batch memory', '/sdapi/v1/txt2img', { prompt: 'x', steps: 2, width: 1024, height: 1024, batch_size: 4 }, ['body', 'batch_size']],
      ['images', '/sdapi/v1/txt2img', { prompt: 'x', steps: 2, width: 8, height: 8, batch_size: 8, n_iter: 9 }, ['body', 'n_iter']],
      ['rank', '/sdapi/v1/train/dry-run', { train_data_dir: 'datasets/disks', lora_rank: 1000000, resolution: 64, enable_bucket: false }, ['body', 'lora_rank']],
    ];
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    for (const [name, path, body, loc] of cases) {
      const r = await t.post(path, body);
      assert.equal(r.status, 422, `${name}: ${JSON.stringify(r.body).slice(0, 300)}`);
      assert.deepEqual(r.body.detail[0].loc, loc, name);
      if (name !== 'prompt [×5000' && name !== 'prompt [×2000') assert.match(r.body.detail[0].msg, /limit|between/, name);
    }
    const svgR = await t.post('/sdapi/v1/img2img', { init_images: [Buffer.from(svg).toString('base64')], steps: 1, width: 8, height: 8 });
    assert.equal(svgR.status, 422);
    // The progress route answers while the refusals are worked out.
    const bombs = Array.from({ length: 4 }, () => t.post('/sdapi/v1/txt2img', { prompt: '['.repeat(3000), steps: 1, width: 8, height: 8 }));
    const t0 = Date.now();
    const progress = await t.get('/sdapi/v1/progress');
    const progressMs = Date.now() - t0;
    assert.equal(progress.status, 200);
    for (const b of await Promise.all(bombs)) assert.equal(b.status, 422);
    loop.disable();
    const worstMs = loop.max / 1e6;
    console.log(`hardening: longest event-loop stall ${worstMs.toFixed(0)} ms, /progress answered in ${progressMs} ms beside 4 prompt bombs`);
    assert.ok(worstMs < 1000, `the event loop stalled for ${worstMs.toFixed(0)} ms`);
  } finally {
    await t.close();
  }
});

function socket(url: string, user: string, password: string): Promise<{ s: Socket; events: { event: string; data: any }[] }> {
  const s = ioClient(url, { transports: ['websocket'], reconnection: false, auth: { username: user, password } });
  const events: { event: string; data: any }[] = [];
  s.onAny((event: string, data: unknown) => events.push({ event, data }));
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve({ s, events }));
    s.once('connect_error', reject);
  });
}

test("task ids and queue events stay with the user who queued the job", async () => {
  const backend = new FixtureBackend(15);
  const t = await startTestServer({ withModel: true, backend, apiAuth: 'alice:a,bob:b' });
  const auth = (u: string, p: string) => ({ authorization: 'Basic ' + Buffer.from(`${u}:${p}`).toString('base64') });
  const alice = await socket(t.server.url, 'alice', 'a');
  const bob = await socket(t.server.url, 'bob', 'b');
  try {
    const job = t.post('/sdapi/v1/txt2img', { prompt: 'alice', steps: 12, width: 16, height: 16, force_task_id: 'task(shared)' }, auth('alice', 'a'));
    await new Promise((r) => setTimeout(r, 60));
    // Bob reuses the id and leaves at once: refused, and his leaving cannot touch Alice's job.
    const ctl = new AbortController();
    const stolen = await fetch(`${t.server.url}/sdapi/v1/txt2img`, { method: 'POST', headers: { 'content-type': 'application/json', ...auth('bob', 'b') }, body: JSON.stringify({ prompt: 'bob', steps: 1, width: 8, height: 8, force_task_id: 'task(shared)' }), signal: ctl.signal });
    assert.equal(stolen.status, 409);
    assert.match((await stolen.json()).detail, /task\(shared\).*already queued or running/);
    ctl.abort();
    const r = await job;
    assert.equal(r.status, 200);
    assert.equal(backend.calls.find((c) => c.params.prompt === 'alice')!.stepsDone, 12, "Alice's job ran all its steps");
    await new Promise((r) => setTimeout(r, 100));
    const aliceSaw = alice.events.filter((e) => e.data?.id === 'task(shared)').map((e) => e.event);
    assert.ok(aliceSaw.includes('job-start') && aliceSaw.includes('progress') && aliceSaw.includes('job-end'), aliceSaw.join());
    assert.deepEqual(bob.events.filter((e) => JSON.stringify(e.data).includes('task(shared)')), [], "Bob's socket heard nothing of Alice's job");
  } finally {
    alice.s.close();
    bob.s.close();
    await t.close();
  }
});

test('soak: 300 mixed requests keep memory flat and answers byte-identical', async () => {
  const t = await startTestServer({ withModel: true, backend: new FixtureBackend() });
  try {
    const png = (await sharp({ create: { width: 24, height: 16, channels: 3, background: '#468' } }).png().toBuffer()).toString('base64');
    const reqs = [
      ['/sdapi/v1/txt2img', { prompt: 'soak [a:b:0.5] (x:1.2)', steps: 3, width: 32, height: 32, seed: 1, batch_size: 2 }],
      ['/sdapi/v1/img2img', { prompt: 'soak', init_images: [png], steps: 3, width: 24, height: 16, seed: 2, denoising_strength: 0.5 }],
      ['/sdapi/v1/png-info', { image: png }],
    ] as const;
    const first: string[] = [];
    const rss: number[] = [];
    const heap: number[] = [];
    for (let i = 0; i < 300; i++) {
      const [path, body] = reqs[i % reqs.length]!;
      const r = await t.post(path, body);
      assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.body).slice(0, 200)}`);
      const key = JSON.stringify(r.body.images ?? r.body);
      if (i < reqs.length) first.push(key);
      else assert.equal(key, first[i % reqs.length], `request ${i} answered differently`);
      if (i % 10 === 9) {
        rss.push(process.memoryUsage().rss);
        heap.push(process.memoryUsage().heapUsed);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const third = Math.floor(rss.length / 3);
    const growth = mean(rss.slice(-third)) - mean(rss.slice(third, 2 * third));
    const peak = Math.max(...rss);
    console.log(`soak: 300 requests, RSS peak ${(peak / 2 ** 20).toFixed(0)} MiB, growth second→last third ${(growth / 2 ** 20).toFixed(1)} MiB, heap ${(Math.max(...heap) / 2 ** 20).toFixed(0)} MiB`);
    assert.ok(growth < 48 * 2 ** 20, `RSS grew by ${(growth / 2 ** 20).toFixed(1)} MiB`);
  } finally {
    await t.close();
  }
});
