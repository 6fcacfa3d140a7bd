/**
 * txt2img/img2img through the real server, queue, progress, socket.io and PNG encoding, with the fixture
 * backend (tests/server-fixture-backend.ts) standing in for the SD pipeline behind the GenerationBackend
 * interface. What is checked is the server's part: what it hands the backend and what clients get back.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { io as ioClient } from 'socket.io-client';
import { readPngText } from '../engine/image/png-info.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { FixtureBackend, startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';

let t: TestServer;
let backend: FixtureBackend;

async function addnetHash(path: string): Promise<string> {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  return createHash('sha256').update(buf.subarray(8 + n)).digest('hex').slice(0, 12);
}

before(async () => {
  backend = new FixtureBackend();
  t = await startTestServer({ withModel: true, backend });
  await writeFile(join(t.dataDir, 'styles.csv'), 'name,prompt,negative_prompt\nPhoto,"{prompt}, photo",cartoon\n');
  await writeSafetensors(
    join(t.dataDir, 'models/Lora/renamed.safetensors'),
    { 'lora_unet_x.alpha': { dtype: 'F32', shape: [], data: new Float32Array([1]) } },
    { ss_output_name: 'fancy', sshs_model_hash: 'abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789' },
  );
  await t.post('/sdapi/v1/refresh-loras');
  await t.post('/sdapi/v1/reload-checkpoint');
});
after(() => t.close());

const waitFor = async (cond: () => boolean | Promise<boolean>, what: string, ms = 10000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('txt2img: A1111 response shape, PNGs carrying their infotexts, seeds per image, one backend call per batch', async () => {
  backend.stepMs = 0;
  const n0 = backend.calls.length;
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'a red fox', negative_prompt: 'blurry', steps: 3, width: 64, height: 48, seed: 7, batch_size: 2, n_iter: 2 });
  assert.equal(r.status, 200);
  assert.deepEqual(Object.keys(r.body).sort(), ['images', 'info', 'parameters']);
  assert.equal(typeof r.body.info, 'string', 'info is a JSON string, as in A1111');
  const info = JSON.parse(r.body.info);
  assert.deepEqual(info.all_seeds, [7, 8, 9, 10]);
  assert.equal(info.seed, 7);
  assert.equal(info.sampler_name, 'Euler');
  assert.equal(info.steps, 3);
  assert.equal(info.sd_model_name, 'sd-tiny');
  assert.match(info.sd_model_hash, /^[0-9a-f]{10}$/);
  assert.equal(info.infotexts.length, 4);
  assert.equal(r.body.images.length, 4);
  for (let i = 0; i < 4; i++) {
    const png = Buffer.from(r.body.images[i], 'base64');
    assert.ok(!r.body.images[i].startsWith('data:'));
    const meta = await sharp(png).metadata();
    assert.equal(meta.format, 'png');
    assert.equal(meta.width, 64);
    assert.equal(meta.height, 48);
    assert.equal(readPngText(png)['parameters'], info.infotexts[i]);
  }
  assert.equal(
    info.infotexts[1],
    `a red fox\nNegative prompt: blurry\nSteps: 3, Sampler: Euler, Schedule type: Automatic, CFG scale: 7.0, Seed: 8, Size: 64x48, Model hash: ${info.sd_model_hash}, Model: sd-tiny, Version: lora-scripts v0.1.0`,
  );
  const calls = backend.calls.slice(n0);
  assert.equal(calls.length, 2);
  assert.deepEqual(calls.map((c) => c.params.seeds), [[7, 8], [9, 10]]);
  assert.equal(calls[0]!.params.prompt, 'a red fox');
  assert.equal(calls[0]!.params.negativePrompt, 'blurry');
  assert.equal(calls[0]!.params.scheduler, 'automatic');
  assert.equal(calls[0]!.params.clipSkip, 1);
  // Different seeds give different pixels (the backend's output really went through).
  assert.notEqual(r.body.images[0], r.body.images[1]);
  // parameters echoes every field with its effective value, defaults included.
  assert.equal(r.body.parameters.sampler_index, 'Euler');
  assert.equal(r.body.parameters.denoising_strength, null);
  assert.equal(r.body.parameters.enable_hr, false);
  assert.equal(r.body.parameters.cfg_scale, 7);
  assert.equal(r.body.parameters.steps, 3);
});

test('API defaults: 50 steps, 512×512, Euler, random seed', async () => {
  const n0 = backend.calls.length;
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'defaults' });
  assert.equal(r.status, 200);
  const p = backend.calls[n0]!.params;
  assert.equal(p.steps, 50);
  assert.equal(p.width, 512);
  assert.equal(p.height, 512);
  assert.equal(p.sampler, 'Euler');
  assert.equal(p.cfgScale, 7);
  assert.ok(p.seeds[0]! >= 0 && p.seeds[0]! < 2 ** 32);
  assert.equal(JSON.parse(r.body.info).seed, p.seeds[0]);
});

test('LoRA tags stack in prompt order, resolve by stem or alias, never outside the LoRA folder; hashes in infotext', async () => {
  const n0 = backend.calls.length;
  const prompt = 'a cat <lora:lora_a:0.8>, <lora:lora_b:0.5:0.25> <lora:lora_a:te=0.3:unet=0.1> <lora:fancy:1> <lora:missing:1> <lora:../../../etc/passwd:1> <hypernet:foo:1>';
  const r = await t.post('/sdapi/v1/txt2img', { prompt, steps: 2, width: 32, height: 32, seed: 1 });
  assert.equal(r.status, 200);
  const p = backend.calls[n0]!.params;
  const dir = join(t.dataDir, 'models/Lora');
  assert.deepEqual(p.loras, [
    { name: 'lora_a', path: join(dir, 'lora_a.safetensors'), teMultiplier: 0.8, unetMultiplier: 0.8, dynDim: null },
    { name: 'lora_b', path: join(dir, 'lora_b.safetensors'), teMultiplier: 0.5, unetMultiplier: 0.25, dynDim: null },
    { name: 'lora_a', path: join(dir, 'lora_a.safetensors'), teMultiplier: 0.3, unetMultiplier: 0.1, dynDim: null },
    { name: 'fancy', path: join(dir, 'renamed.safetensors'), teMultiplier: 1, unetMultiplier: 1, dynDim: null },
  ]);
  assert.equal(p.prompt, 'a cat ,' + ' '.repeat(6), 'tags are stripped, surrounding text kept');
  const info = JSON.parse(r.body.info);
  assert.ok(info.notes.includes('Lora not found: missing, ../../../etc/passwd'), info.notes.join('; '));
  assert.ok(info.notes.includes('Skipping unknown extra network: hypernet'));
  const ha = await addnetHash(join(sdTiny, 'lora-kohya/lora_a.safetensors'));
  const hb = await addnetHash(join(sdTiny, 'lora-kohya/lora_b.safetensors'));
  assert.equal(info.extra_generation_params['Lora hashes'], `lora_a: ${ha}, lora_b: ${hb}, lora_a: ${ha}, fancy: abcdef012345`);
  const text = readPngText(Buffer.from(r.body.images[0], 'base64'))['parameters']!;
  assert.ok(text.startsWith(prompt + '\n'), 'the infotext keeps the tags');
  assert.match(text, new RegExp(`Lora hashes: "lora_a: ${ha}, lora_b: ${hb}, lora_a: ${ha}, fancy: abcdef012345"`));
  // png-info reads it back.
  const back = (await t.post('/sdapi/v1/png-info', { image: r.body.images[0] })).body;
  assert.equal(back.parameters['Lora hashes'], `lora_a: ${ha}, lora_b: ${hb}, lora_a: ${ha}, fancy: abcdef012345`);
  assert.equal(back.parameters['Prompt'], prompt);

  const off = await t.post('/sdapi/v1/txt2img', { prompt: 'x <lora:lora_a:1>', disable_extra_networks: true, steps: 1, width: 8, height: 8 });
  assert.equal(off.status, 200);
  assert.deepEqual(backend.calls.at(-1)!.params.loras, []);
  const bad = await t.post('/sdapi/v1/txt2img', { prompt: '<lora:lora_a:abc>', steps: 1, width: 8, height: 8 });
  assert.equal(bad.status, 422, 'refused before it is queued');
  assert.deepEqual(bad.body.detail[0].loc, ['body', 'prompt']);
  assert.match(bad.body.detail[0].msg, /<lora:lora_a:abc>.*'abc' is not a number/);
  for (const w of ['inf', '-Infinity', 'nan', '1e999']) {
    const r = await t.post('/sdapi/v1/txt2img', { prompt: `<lora:lora_a:${w}>`, steps: 1, width: 8, height: 8 });
    assert.equal(r.status, 422, w);
    assert.match(r.body.detail[0].msg, /finite number|not a number/, w);
  }
});

test('sampler names: legacy "X Karras" split, explicit scheduler, unknown names fall back', async () => {
  const run = async (body: object) => {
    const r = await t.post('/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8, ...body });
    assert.equal(r.status, 200);
    return { p: backend.calls.at(-1)!.params, info: JSON.parse(r.body.info) };
  };
  let x = await run({ sampler_name: 'DPM++ 2M Karras' });
  assert.equal(x.p.sampler, 'DPM++ 2M');
  assert.equal(x.p.scheduler, 'automatic', "karras is DPM++ 2M's own default, reported as Automatic");
  x = await run({ sampler_name: 'Euler a', scheduler: 'Karras' });
  assert.equal(x.p.sampler, 'Euler a');
  assert.equal(x.p.scheduler, 'karras');
  assert.match(x.info.infotexts[0], /Sampler: Euler a, Schedule type: Karras,/);
  x = await run({ sampler_name: 'k_dpmpp_2m_sde', scheduler: 'exponential' });
  assert.equal(x.p.sampler, 'DPM++ 2M SDE');
  x = await run({ sampler_name: 'Frobnicator' });
  assert.equal(x.p.sampler, 'DPM++ 2M');
  assert.ok(x.info.notes.some((n: string) => /Frobnicator/.test(n)));
});

test('override_settings apply to one job only; styles; infotext fills unset fields; unsupported fields are noted', async () => {
  let r = await t.post('/sdapi/v1/txt2img', { prompt: 'q', steps: 1, width: 8, height: 8, seed: 3, sampler_name: 'Euler a', override_settings: { CLIP_stop_at_last_layers: 2, randn_source: 'CPU', eta_noise_seed_delta: 31337 } });
  assert.equal(r.status, 200);
  let p = backend.calls.at(-1)!.params;
  assert.equal(p.clipSkip, 2);
  assert.equal(p.randnSource, 'CPU');
  assert.equal(p.etaNoiseSeedDelta, 31337);
  assert.match(JSON.parse(r.body.info).infotexts[0], /Clip skip: 2, ENSD: 31337, RNG: CPU/);
  // A1111 writes ENSD only for samplers that draw noise with it (uses_ensd, eta ≠ 0): not for Euler.
  r = await t.post('/sdapi/v1/txt2img', { prompt: 'q', steps: 1, width: 8, height: 8, seed: 3, sampler_name: 'Euler', override_settings: { eta_noise_seed_delta: 31337 } });
  assert.doesNotMatch(JSON.parse(r.body.info).infotexts[0], /ENSD/);
  assert.equal((await t.get('/sdapi/v1/options')).body.CLIP_stop_at_last_layers, 1);
  r = await t.post('/sdapi/v1/txt2img', { prompt: 'q', steps: 1, width: 8, height: 8, override_settings: { eta_noise_seed_delta: 7 }, override_settings_restore_afterwards: false });
  assert.equal(r.status, 200);
  assert.equal((await t.get('/sdapi/v1/options')).body.eta_noise_seed_delta, 7, 'restore_afterwards false keeps the override');
  assert.equal(JSON.parse(await readFile(join(t.dataDir, 'config.json'), 'utf8')).eta_noise_seed_delta, 7);
  await t.post('/sdapi/v1/options', { eta_noise_seed_delta: 0 });

  r = await t.post('/sdapi/v1/txt2img', { prompt: 'portrait', styles: ['Photo', 'Unknown'], steps: 1, width: 8, height: 8, restore_faces: true, enable_hr: true });
  p = backend.calls.at(-1)!.params;
  assert.equal(p.prompt, 'portrait, photo');
  assert.equal(p.negativePrompt, 'cartoon');
  const notes = JSON.parse(r.body.info).notes as string[];
  assert.ok(notes.some((n) => /restore_faces/.test(n)) && notes.some((n) => /enable_hr/.test(n)), notes.join('; '));

  r = await t.post('/sdapi/v1/txt2img', { infotext: 'from text\nNegative prompt: nope\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: 11, Size: 24x16, Clip skip: 2', width: 32 });
  assert.equal(r.status, 200);
  p = backend.calls.at(-1)!.params;
  assert.deepEqual([p.prompt, p.negativePrompt, p.steps, p.sampler, p.cfgScale, p.seeds[0], p.width, p.height, p.clipSkip], ['from text', 'nope', 3, 'Euler a', 5, 11, 32, 16, 2]);
});

test('concurrent requests are queued and run one at a time in arrival order', async () => {
  backend.stepMs = 15;
  const n0 = backend.calls.length;
  const reqs: Promise<{ status: number }>[] = [];
  for (const name of ['first', 'second', 'third']) {
    reqs.push(t.post('/sdapi/v1/txt2img', { prompt: name, steps: 4, width: 16, height: 16 }));
    await waitFor(() => t.server.ctx.queue.pendingIds().length + (t.server.ctx.queue.current() ? 1 : 0) >= reqs.length, `${name} queued`);
  }
  const res = await Promise.all(reqs);
  backend.stepMs = 0;
  for (const r of res) assert.equal(r.status, 200);
  const calls = backend.calls.slice(n0);
  assert.deepEqual(calls.map((c) => c.params.prompt), ['first', 'second', 'third']);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i]!.startedAt >= calls[i - 1]!.endedAt, 'no overlap');
});

test('progress reports job, step, ETA and a live preview while running; idle afterwards', async () => {
  backend.stepMs = 40;
  const req = t.post('/sdapi/v1/txt2img', { prompt: 'slow', steps: 15, width: 40, height: 24 });
  let mid: any;
  await waitFor(async () => {
    mid = (await t.get('/sdapi/v1/progress')).body;
    return mid.state.sampling_step >= 3;
  }, 'step 3');
  assert.equal(mid.state.job, 'scripts_txt2img');
  assert.equal(mid.state.job_count, 1);
  assert.equal(mid.state.sampling_steps, 15);
  assert.match(mid.state.job_timestamp, /^\d{14}$/);
  assert.ok(mid.progress > 0.01 && mid.progress < 1, String(mid.progress));
  assert.ok(mid.eta_relative > 0);
  const img = await sharp(Buffer.from(mid.current_image, 'base64')).metadata();
  assert.deepEqual([img.format, img.width, img.height], ['png', 40, 24]);
  const noImg = (await t.get('/sdapi/v1/progress?skip_current_image=true')).body;
  assert.equal(noImg.current_image, null);
  assert.equal((await req).status, 200);
  backend.stepMs = 0;
  const idle = (await t.get('/sdapi/v1/progress')).body;
  assert.deepEqual([idle.progress, idle.eta_relative, idle.current_image, idle.state.job_count], [0, 0, null, 0]);
});

test('interrupt stops at the next step and returns what was done; later batches are not run', async () => {
  backend.stepMs = 20;
  const n0 = backend.calls.length;
  const req = t.post('/sdapi/v1/txt2img', { prompt: 'stop me', steps: 200, n_iter: 3, width: 16, height: 16 });
  await waitFor(() => (t.server.ctx.queue.current()?.step ?? 0) >= 3, 'step 3');
  const ir = await t.post('/sdapi/v1/interrupt');
  assert.deepEqual([ir.status, ir.body], [200, {}]);
  const r = await req;
  backend.stepMs = 0;
  assert.equal(r.status, 200);
  assert.equal(r.body.images.length, 1);
  const calls = backend.calls.slice(n0);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.stoppedBy, 'interrupt');
  assert.ok(calls[0]!.stepsDone >= 3 && calls[0]!.stepsDone < 200);
  assert.equal((await t.post('/sdapi/v1/interrupt')).status, 200, 'interrupt with nothing running is harmless');
});

test('skip ends the current batch only', async () => {
  backend.stepMs = 15;
  const n0 = backend.calls.length;
  const req = t.post('/sdapi/v1/txt2img', { prompt: 'skip one', steps: 30, n_iter: 2, width: 16, height: 16 });
  await waitFor(() => (t.server.ctx.queue.current()?.step ?? 0) >= 2, 'step 2');
  const sr = await t.post('/sdapi/v1/skip');
  assert.deepEqual([sr.status, sr.body], [200, null]);
  const r = await req;
  backend.stepMs = 0;
  assert.equal(r.body.images.length, 2);
  const calls = backend.calls.slice(n0);
  assert.equal(calls[0]!.stoppedBy, 'skip');
  assert.equal(calls[1]!.stoppedBy, null);
  assert.equal(calls[1]!.stepsDone, 30);
});

test('socket.io streams job-start, per-step progress with periodic previews, and job-end', async () => {
  await t.post('/sdapi/v1/options', { show_progress_every_n_steps: 2 });
  const s = ioClient(t.server.url, { transports: ['websocket'], reconnection: false });
  await new Promise<void>((r) => s.once('connect', () => r()));
  const events: { name: string; data: any }[] = [];
  s.onAny((name, data) => events.push({ name, data }));
  backend.stepMs = 10;
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'streamed', steps: 6, width: 16, height: 16 });
  backend.stepMs = 0;
  await waitFor(() => events.some((e) => e.name === 'job-end'), 'job-end');
  s.close();
  await t.post('/sdapi/v1/options', { show_progress_every_n_steps: 10 });
  assert.equal(r.status, 200);
  const start = events.find((e) => e.name === 'job-start')!;
  assert.equal(start.data.job, 'scripts_txt2img');
  const progress = events.filter((e) => e.name === 'progress' && e.data.id === start.data.id);
  const steps = progress.map((e) => e.data.state.sampling_step);
  assert.ok(steps.includes(6) && steps.includes(3), steps.join(','));
  const withImage = progress.filter((e) => e.data.current_image);
  assert.ok(withImage.length >= 2, 'previews every 2 steps');
  for (const e of withImage) assert.equal(e.data.state.sampling_step % 2, 0);
  const end = events.find((e) => e.name === 'job-end')!;
  assert.deepEqual([end.data.id, end.data.status], [start.data.id, 'done']);
});

test('a client that disconnects does not leave a stuck job, running or waiting', async () => {
  backend.stepMs = 20;
  const n0 = backend.calls.length;
  const ac1 = new AbortController();
  const ac2 = new AbortController();
  const body = (prompt: string) => JSON.stringify({ prompt, steps: 500, width: 16, height: 16 });
  const p1 = fetch(t.server.url + '/sdapi/v1/txt2img', { method: 'POST', headers: { 'content-type': 'application/json' }, body: body('gone-running'), signal: ac1.signal }).catch(() => null);
  await waitFor(() => (t.server.ctx.queue.current()?.step ?? 0) >= 2, 'running');
  const p2 = fetch(t.server.url + '/sdapi/v1/txt2img', { method: 'POST', headers: { 'content-type': 'application/json' }, body: body('gone-waiting'), signal: ac2.signal }).catch(() => null);
  await waitFor(() => t.server.ctx.queue.pendingIds().length === 1, 'second queued');
  ac2.abort();
  ac1.abort();
  await Promise.all([p1, p2]);
  await waitFor(() => t.server.ctx.queue.current() === null && t.server.ctx.queue.pendingIds().length === 0, 'queue empty', 5000);
  backend.stepMs = 0;
  const calls = backend.calls.slice(n0);
  assert.deepEqual(calls.map((c) => c.params.prompt), ['gone-running']);
  assert.equal(calls[0]!.stoppedBy, 'interrupt');
  assert.ok(calls[0]!.stepsDone < 500);
  const after = await t.post('/sdapi/v1/txt2img', { prompt: 'next', steps: 2, width: 8, height: 8 });
  assert.equal(after.status, 200);
});

test('img2img: init image resized by resize_mode, mask inverted, A1111 defaults and echo', async () => {
  const init = await sharp({ create: { width: 100, height: 50, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toBuffer();
  const maskPng = await sharp({ create: { width: 100, height: 50, channels: 3, background: '#ffffff' } }).png().toBuffer();
  const r = await t.post('/sdapi/v1/img2img', {
    prompt: 'repaint',
    init_images: ['data:image/png;base64,' + init.toString('base64')],
    mask: maskPng.toString('base64'),
    inpainting_mask_invert: 1,
    mask_blur: 0,
    // The whole picture: with the default inpaint_full_res a mask left blank by the inversion means plain img2img (A1111).
    inpaint_full_res: false,
    resize_mode: 1,
    width: 64,
    height: 64,
    steps: 2,
    seed: 5,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const p = backend.calls.at(-1)!;
  assert.equal(p.kind, 'img2img');
  const ip = p.params as import('../server/backend.ts').Img2ImgParams;
  assert.equal(ip.initImages.length, 1);
  assert.deepEqual([ip.initImages[0]!.width, ip.initImages[0]!.height, ip.initImages[0]!.channels], [64, 64, 3]);
  assert.deepEqual([...ip.initImages[0]!.data.subarray(0, 3)], [255, 0, 0]);
  assert.deepEqual([ip.mask!.width, ip.mask!.height, ip.mask!.channels], [64, 64, 1]);
  assert.equal(Math.max(...ip.mask!.data), 0, 'white mask inverted to black');
  assert.equal(ip.denoisingStrength, 0.75);
  assert.equal(ip.initialNoiseMultiplier, 1);
  assert.match(JSON.parse(r.body.info).infotexts[0], /Denoising strength: 0\.75/);
  assert.equal(r.body.parameters.init_images, null, 'init images are not echoed unless include_init_images');
  assert.equal(r.body.parameters.mask, null);
});

test('save_images writes atomically into outputs/, samples_format jpg, send_images false', async () => {
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'keep', steps: 1, width: 16, height: 16, seed: 42, save_images: true, send_images: false });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.images, []);
  const base = join(t.dataDir, 'outputs/txt2img-images');
  const [day] = await readdir(base);
  assert.match(day!, /^\d{4}-\d{2}-\d{2}$/);
  const files = await readdir(join(base, day!));
  assert.deepEqual(files, ['00000-42.png']);
  const saved = await readFile(join(base, day!, files[0]!));
  assert.equal(readPngText(saved)['parameters'], JSON.parse(r.body.info).infotexts[0]);
  const j = await t.post('/sdapi/v1/txt2img', { prompt: 'jpeg', steps: 1, width: 16, height: 16, override_settings: { samples_format: 'jpg' } });
  assert.equal((await sharp(Buffer.from(j.body.images[0], 'base64')).metadata()).format, 'jpeg');
  const jInfo = (await t.post('/sdapi/v1/png-info', { image: j.body.images[0] })).body;
  assert.equal(jInfo.info, JSON.parse(j.body.info).infotexts[0], 'png-info reads the JPEG EXIF UserComment');
  assert.equal(jInfo.parameters['Prompt'], 'jpeg');
  const bad = await t.post('/sdapi/v1/txt2img', { prompt: 'x', steps: 1, width: 8, height: 8, override_settings: { samples_format: 'bmp' } });
  assert.deepEqual([bad.status, bad.body.detail], [422, 'Invalid image format']);
});

test('a backend that implements fewer samplers lists only those and falls back to them', async () => {
  const small = new FixtureBackend(0, ['Euler', 'Euler a']);
  const s = await startTestServer({ withModel: true, backend: small });
  try {
    assert.deepEqual((await s.get('/sdapi/v1/samplers')).body.map((x: any) => x.name), ['Euler a', 'Euler']);
    const r = await s.post('/sdapi/v1/txt2img', { sampler_name: 'DDIM', steps: 1, width: 8, height: 8 });
    assert.equal(r.status, 200);
    assert.equal(small.calls[0]!.params.sampler, 'Euler a');
  } finally {
    await s.close();
  }
});

test('sd_vae: a chosen VAE file is loaded with the checkpoint, and changing it reloads', async () => {
  const { symlink } = await import('node:fs/promises');
  await symlink(join(sdTiny, 'sd-tiny.safetensors'), join(t.dataDir, 'models/VAE/sd-tiny.vae.safetensors'));
  await symlink(join(sdTiny, 'sd-tiny.safetensors'), join(t.dataDir, 'models/VAE/other-vae.safetensors'));
  await t.post('/sdapi/v1/refresh-vae');
  const gen = async () => {
    const r = await t.post('/sdapi/v1/txt2img', { prompt: 'v', steps: 1, width: 8, height: 8 });
    assert.equal(r.status, 200);
    return JSON.parse(r.body.info);
  };
  const n0 = backend.loads.length;
  let info = await gen();
  assert.equal(backend.loads.at(-1)!.vae?.name, 'sd-tiny.vae.safetensors', 'Automatic picks <stem>.vae.safetensors');
  assert.equal(info.sd_vae_name, 'sd-tiny.vae.safetensors', "A1111's get_loaded_vae_name: the file name");
  assert.match(info.sd_vae_hash, /^[0-9a-f]{10}$/);
  assert.match(info.infotexts[0], new RegExp(`VAE hash: ${info.sd_vae_hash}, VAE: sd-tiny.vae.safetensors,`));
  assert.ok(backend.loads.length > n0);
  await t.post('/sdapi/v1/options', { sd_vae: 'other-vae.safetensors' });
  info = await gen();
  assert.equal(backend.loads.at(-1)!.vae?.path, join(t.dataDir, 'models/VAE/other-vae.safetensors'));
  assert.match(info.infotexts[0], /VAE: other-vae.safetensors,/);
  const n1 = backend.loads.length;
  await gen();
  assert.equal(backend.loads.length, n1, 'no reload when nothing changed');
  await t.post('/sdapi/v1/options', { sd_vae: 'None' });
  await gen();
  assert.equal(backend.loads.at(-1)!.vae, null);
  await t.post('/sdapi/v1/options', { sd_vae: '../../../etc/passwd' });
  info = await gen();
  assert.equal(backend.loads.at(-1)!.vae, null);
  assert.ok(info.notes.some((n: string) => /VAE '..\/..\/..\/etc\/passwd' not found/.test(n)), info.notes.join('; '));
});

test('with save_images and several images, a grid is prepended (index_of_first_image 1) and saved', async () => {
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'grid', steps: 1, width: 16, height: 8, seed: 100, batch_size: 3, save_images: true });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const info = JSON.parse(r.body.info);
  assert.equal(info.index_of_first_image, 1);
  assert.equal(r.body.images.length, 4);
  assert.equal(info.infotexts.length, 4);
  const grid = Buffer.from(r.body.images[0], 'base64');
  const gm = await sharp(grid).metadata();
  // 3 images: rows = round(√3) = 2, cols = 2, the fourth cell black.
  assert.deepEqual([gm.width, gm.height], [32, 16]);
  const px = await sharp(grid).raw().toBuffer();
  const first = await sharp(Buffer.from(r.body.images[1], 'base64')).raw().toBuffer();
  assert.deepEqual([...px.subarray(0, 16 * 3)], [...first.subarray(0, 16 * 3)], 'cell 0 is image 0');
  assert.deepEqual([...px.subarray((8 * 32 + 16) * 3, (8 * 32 + 17) * 3)], [0, 0, 0], 'empty cell is black');
  assert.equal(readPngText(grid)['parameters'], info.infotexts[1]);
  const base = join(t.dataDir, 'outputs/txt2img-grids');
  const [day] = await readdir(base);
  assert.deepEqual(await readdir(join(base, day!)), ['00000-grid.png']);
  // Without save_images (the API default) there is never a grid.
  const plain = await t.post('/sdapi/v1/txt2img', { prompt: 'grid', steps: 1, width: 16, height: 8, batch_size: 3 });
  assert.equal(plain.body.images.length, 3);
  assert.equal(JSON.parse(plain.body.info).index_of_first_image, 0);
});

test('enable_hr: first pass, pixel upscale, img2img second pass at the target size; A1111 infotext keys', async () => {
  const n0 = backend.calls.length;
  const r = await t.post('/sdapi/v1/txt2img', { prompt: 'hr <lora:lora_b:0.5>', steps: 3, width: 32, height: 24, seed: 9, enable_hr: true, hr_scale: 2, hr_second_pass_steps: 2, denoising_strength: 0.5 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const calls = backend.calls.slice(n0);
  assert.deepEqual(calls.map((c) => [c.kind, c.params.width, c.params.height, c.params.steps]), [['txt2img', 32, 24, 3], ['img2img', 64, 48, 2]]);
  const second = calls[1]!.params as import('../server/backend.ts').Img2ImgParams;
  assert.equal(second.denoisingStrength, 0.5);
  assert.deepEqual([second.initImages[0]!.width, second.initImages[0]!.height], [64, 48]);
  assert.deepEqual(second.seeds, [9]);
  assert.deepEqual(second.loras.map((l) => l.name), ['lora_b'], 'the second pass keeps the prompt’s LoRAs');
  const meta = await sharp(Buffer.from(r.body.images[0], 'base64')).metadata();
  assert.deepEqual([meta.width, meta.height], [64, 48]);
  const info = JSON.parse(r.body.info);
  assert.match(info.infotexts[0], /Size: 32x24, .*Denoising strength: 0\.5, .*Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent/);
  assert.ok(info.notes.some((n: string) => /pixel space/.test(n)));

  const n1 = backend.calls.length;
  const r2 = await t.post('/sdapi/v1/txt2img', { prompt: 'hr', steps: 2, width: 40, height: 30, enable_hr: true, hr_resize_x: 100, hr_upscaler: 'Lanczos', hr_prompt: 'other <lora:lora_a:1>', hr_sampler_name: 'Euler a' });
  assert.equal(r2.status, 200);
  const c2 = backend.calls.slice(n1);
  assert.deepEqual([c2[1]!.params.width, c2[1]!.params.height], [96, 72], '100x75 floored to multiples of 8');
  assert.equal(c2[1]!.params.prompt, 'other ');
  assert.equal(c2[1]!.params.sampler, 'Euler a');
  assert.deepEqual(c2[1]!.params.loras.map((l) => l.name), ['lora_a']);
  assert.equal((c2[1]!.params as any).denoisingStrength, 0.7);
  assert.match(JSON.parse(r2.body.info).infotexts[0], /Hires prompt: "other <lora:lora_a:1>", Hires resize: 100x0, Hires upscaler: Lanczos, Hires sampler: Euler a/);
});

test('A1111 fallbacks: sampler_name "" means sampler_index; an override naming an unknown model runs on the current one', async () => {
  let r = await t.post('/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8, sampler_name: '' });
  assert.equal(r.status, 200);
  assert.equal(backend.calls.at(-1)!.params.sampler, 'Euler', "sampler_index's default");
  r = await t.post('/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8, sampler_name: '', sampler_index: 'DPM++ 2M' });
  assert.equal(backend.calls.at(-1)!.params.sampler, 'DPM++ 2M');

  const before = backend.currentCheckpoint()!.path;
  const loads = backend.loads.length;
  r = await t.post('/sdapi/v1/txt2img', { steps: 1, width: 8, height: 8, override_settings: { sd_model_checkpoint: 'no-such-model' } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(backend.currentCheckpoint()!.path, before);
  assert.equal(backend.loads.length, loads, 'nothing reloaded');
  const info = JSON.parse(r.body.info);
  assert.equal(info.sd_model_name, 'sd-tiny');
  assert.ok(info.notes.some((n: string) => /no-such-model' not found; the current model was used/.test(n)), info.notes.join('; '));
  const opts = (await t.get('/sdapi/v1/options')).body;
  assert.match(opts.sd_model_checkpoint, /^sd-tiny\.safetensors/, 'the setting is unchanged');
});

test('/internal/progress follows one task by id (queued, active with a preview, completed); /internal/pending-tasks lists the waiting ones', async () => {
  backend.stepMs = 30;
  const first = t.post('/sdapi/v1/txt2img', { prompt: 'one', steps: 12, width: 16, height: 16, force_task_id: 'task(first-one)' });
  await waitFor(async () => (await t.get('/sdapi/v1/progress')).body.state.sampling_step >= 1, 'first running');
  const second = t.post('/sdapi/v1/txt2img', { prompt: 'two', steps: 12, width: 16, height: 16, force_task_id: 'task(second-one)' });
  await waitFor(async () => (await t.get('/internal/pending-tasks')).body.size === 1, 'second queued');
  assert.deepEqual((await t.get('/internal/pending-tasks')).body, { size: 1, tasks: ['task(second-one)'] });

  const queued = (await t.post('/internal/progress', { id_task: 'task(second-one)' })).body;
  assert.deepEqual(queued, { active: false, queued: true, completed: false, progress: null, eta: null, live_preview: null, id_live_preview: -1, textinfo: 'In queue: 1/1' });
  let active: any;
  await waitFor(async () => {
    active = (await t.post('/internal/progress', { id_task: 'task(first-one)', id_live_preview: -1 })).body;
    return active.active && active.live_preview !== null;
  }, 'a live preview');
  assert.equal(active.queued, false);
  assert.equal(active.completed, false);
  assert.ok(active.progress > 0 && active.progress < 1, String(active.progress));
  assert.ok(active.eta > 0);
  assert.match(active.live_preview, /^data:image\/png;base64,/);
  assert.ok(active.id_live_preview >= 0);
  const img = await sharp(Buffer.from(active.live_preview.split(',')[1], 'base64')).metadata();
  assert.deepEqual([img.width, img.height], [16, 16]);
  // A client that already has this preview gets none again; one that asks for none gets none.
  const again = (await t.post('/internal/progress', { id_task: 'task(first-one)', id_live_preview: active.id_live_preview })).body;
  if (again.id_live_preview === active.id_live_preview) assert.equal(again.live_preview, null);
  assert.equal((await t.post('/internal/progress', { id_task: 'task(first-one)', live_preview: false })).body.live_preview, null);

  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
  backend.stepMs = 0;
  const done = (await t.post('/internal/progress', { id_task: 'task(first-one)' })).body;
  assert.deepEqual([done.active, done.queued, done.completed, done.textinfo], [false, false, true, 'Waiting...']);
  const unknown = (await t.post('/internal/progress', { id_task: 'task(never)' })).body;
  assert.deepEqual([unknown.active, unknown.queued, unknown.completed], [false, false, false]);
  assert.deepEqual((await t.get('/internal/pending-tasks')).body, { size: 0, tasks: [] });
  const bad = await t.post('/internal/progress', { id_task: 'task(first-one)', id_live_preview: 'abc' });
  assert.equal(bad.status, 422);
  assert.deepEqual(bad.body.detail[0].loc, ['body', 'id_live_preview'], 'A1111 validation shape');
});
