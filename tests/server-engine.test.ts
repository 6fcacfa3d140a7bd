/**
 * The server with the real engine backend (`serve`'s default) on the fixture checkpoint: generation end to end
 * through ONNX Runtime, LoRA tags merged, infotext in the PNG, interrupt inside the real sampler loop.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';
import { writeSmallVocabCheckpoint } from './support/small-vocab.ts';

let t: TestServer;
const base = { steps: 4, width: 64, height: 64, sampler_name: 'Euler', cfg_scale: 7 };

async function addnetHash(path: string): Promise<string> {
  const buf = await readFile(path);
  const n = Number(buf.readBigUInt64LE(0));
  return createHash('sha256').update(buf.subarray(8 + n)).digest('hex').slice(0, 12);
}

async function gen(body: object): Promise<{ images: string[]; info: any }> {
  const r = await t.post('/sdapi/v1/txt2img', { ...base, ...body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { images: r.body.images, info: JSON.parse(r.body.info) };
}

async function maxDiff(a: string, b: string): Promise<number> {
  const pa = await sharp(Buffer.from(a, 'base64')).raw().toBuffer();
  const pb = await sharp(Buffer.from(b, 'base64')).raw().toBuffer();
  let m = 0;
  for (let i = 0; i < pa.length; i++) m = Math.max(m, Math.abs(pa[i]! - pb[i]!));
  return m;
}

before(async () => {
  t = await startTestServer({ withModel: true });
  await t.post('/sdapi/v1/reload-checkpoint');
});
after(() => t.close());

test('txt2img on the fixture model returns a PNG with infotext, LoRA hashes included', async () => {
  const { images, info } = await gen({ prompt: 'a cat <lora:lora_a:0.8>', seed: 1 });
  const png = Buffer.from(images[0]!, 'base64');
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 64, 64, 3]);
  const stats = await sharp(png).stats();
  assert.ok(stats.channels.some((c) => c.stdev > 1), 'the image is not flat');
  const back = (await t.post('/sdapi/v1/png-info', { image: images[0] })).body;
  assert.equal(back.info, info.infotexts[0]);
  assert.equal(back.parameters['Seed'], '1');
  assert.equal(back.parameters['Sampler'], 'Euler');
  assert.equal(back.parameters['Lora hashes'], `lora_a: ${await addnetHash(join(sdTiny, 'lora-kohya/lora_a.safetensors'))}`);
  assert.equal(back.parameters['Model'], 'sd-tiny');
});

test('seeds are deterministic per image, and LoRA tags and clip skip change the result', async () => {
  const a = await gen({ prompt: 'a cat', seed: 5 });
  const again = await gen({ prompt: 'a cat', seed: 5 });
  assert.equal(a.images[0], again.images[0], 'same seed, same image');
  const batch = await gen({ prompt: 'a cat', seed: 5, batch_size: 2 });
  assert.deepEqual(batch.info.all_seeds, [5, 6]);
  const six = await gen({ prompt: 'a cat', seed: 6 });
  assert.equal(batch.images[1], six.images[0], 'image i of a batch is the image of seed+i');
  assert.notEqual(batch.images[0], batch.images[1]);
  const zero = await gen({ prompt: 'a cat <lora:lora_a:0>', seed: 5 });
  // The merged path may order float operations differently from the base path: allow one 8-bit step.
  assert.ok((await maxDiff(zero.images[0]!, a.images[0]!)) <= 1, 'multiplier 0 is the base model');
  const withA = await gen({ prompt: 'a cat <lora:lora_a:1>', seed: 5 });
  const withAB = await gen({ prompt: 'a cat <lora:lora_a:1> <lora:lora_b:0.5>', seed: 5 });
  assert.ok((await maxDiff(withA.images[0]!, a.images[0]!)) > 8);
  assert.ok((await maxDiff(withAB.images[0]!, withA.images[0]!)) > 8, 'a second LoRA stacks on the first');
  const back = await gen({ prompt: 'a cat', seed: 5 });
  assert.ok((await maxDiff(back.images[0]!, a.images[0]!)) <= 1, 'dropping the tags restores the base weights');
  const skip2 = await gen({ prompt: 'a cat', seed: 5, override_settings: { CLIP_stop_at_last_layers: 2 } });
  assert.ok((await maxDiff(skip2.images[0]!, a.images[0]!)) > 8);
  assert.match(skip2.info.infotexts[0], /Clip skip: 2/);
});

test('interrupt stops the real sampler early and returns the partial image', async () => {
  const req = t.post('/sdapi/v1/txt2img', { ...base, prompt: 'long', steps: 500, seed: 2 });
  const t0 = Date.now();
  while ((t.server.ctx.queue.current()?.step ?? 0) < 2) {
    if (Date.now() - t0 > 60000) throw new Error('never reached step 2');
    await new Promise((r) => setTimeout(r, 5));
  }
  const p = (await t.get('/sdapi/v1/progress')).body;
  assert.equal(p.state.sampling_steps, 500);
  assert.ok(p.current_image === null || (await sharp(Buffer.from(p.current_image, 'base64')).metadata()).format === 'png');
  await t.post('/sdapi/v1/interrupt');
  const r = await req;
  assert.equal(r.status, 200);
  assert.equal(r.body.images.length, 1);
  assert.ok(t.server.ctx.queue.current() === null);
});

test('img2img with a mask runs on the fixture model', async () => {
  const init = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer();
  const mask = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#000000' } })
    .composite([{ input: await sharp({ create: { width: 32, height: 32, channels: 3, background: '#ffffff' } }).png().toBuffer(), left: 16, top: 16 }])
    .png()
    .toBuffer();
  const r = await t.post('/sdapi/v1/img2img', { ...base, prompt: 'x', init_images: [init.toString('base64')], mask: mask.toString('base64'), mask_blur: 0, denoising_strength: 0.6, seed: 3 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const { data } = await sharp(Buffer.from(r.body.images[0], 'base64')).raw().toBuffer({ resolveWithObject: true });
  // Outside the mask the original pixels are pasted back (A1111 overlay).
  assert.deepEqual([...data.subarray(0, 3)], [200, 30, 30]);
  assert.match(JSON.parse(r.body.info).infotexts[0], /Denoising strength: 0\.6/);
});

test('a checkpoint that cannot load (no tokenizer beside it for its custom vocabulary) answers 500 RuntimeError naming the cause', async () => {
  const { mkdtemp, mkdir, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-notok-'));
  await mkdir(join(dir, 'models/Stable-diffusion'), { recursive: true });
  await writeSmallVocabCheckpoint(join(dir, 'models/Stable-diffusion/small-vocab.safetensors'));
  const s = await startTestServer({ dataDir: dir, loadOnStart: false });
  try {
    const r = await s.post('/sdapi/v1/txt2img', { ...base, prompt: 'x' });
    assert.equal(r.status, 500);
    assert.equal(r.body.error, 'RuntimeError');
    assert.match(r.body.errors, /could not load checkpoint small-vocab\.safetensors: .*token embeddings.*own tokenizer/);
  } finally {
    await s.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test('hires fix runs both passes on the fixture model', async () => {
  const r = await t.post('/sdapi/v1/txt2img', { ...base, prompt: 'hr', seed: 4, enable_hr: true, hr_scale: 1.5, hr_second_pass_steps: 2, denoising_strength: 0.5 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const meta = await sharp(Buffer.from(r.body.images[0], 'base64')).metadata();
  assert.deepEqual([meta.width, meta.height], [96, 96]);
  assert.match(JSON.parse(r.body.info).infotexts[0], /Size: 64x64, .*Hires upscale: 1\.5/);
});

test('a full client payload with every field set (as A1111 client libraries send it) is accepted', async () => {
  const payload = {
    enable_hr: false, denoising_strength: 0.7, firstphase_width: 0, firstphase_height: 0, hr_scale: 2, hr_upscaler: 'Latent',
    hr_second_pass_steps: 0, hr_resize_x: 0, hr_resize_y: 0, hr_sampler_name: null, hr_prompt: '', hr_negative_prompt: '',
    prompt: 'a cat <lora:lora_a:0.6>', styles: [], seed: 11, subseed: -1, subseed_strength: 0, seed_resize_from_h: 0, seed_resize_from_w: 0,
    sampler_name: 'DPM++ 2M Karras', sampler_index: 'Euler a', scheduler: null, batch_size: 1, n_iter: 1, steps: 4, cfg_scale: 7,
    width: 64, height: 64, restore_faces: false, tiling: false, do_not_save_samples: false, do_not_save_grid: false,
    negative_prompt: 'blurry', eta: 1.0, s_min_uncond: 0, s_churn: 0, s_tmax: 0, s_tmin: 0, s_noise: 1,
    override_settings: {}, override_settings_restore_afterwards: true, script_args: [], script_name: null,
    send_images: true, save_images: false, alwayson_scripts: {}, sampler_index_extra: 'ignored unknown field',
  };
  const r = await t.post('/sdapi/v1/txt2img', payload);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const info = JSON.parse(r.body.info);
  assert.equal(info.sampler_name, 'DPM++ 2M');
  assert.match(info.infotexts[0], /^a cat <lora:lora_a:0\.6>\nNegative prompt: blurry\nSteps: 4, Sampler: DPM\+\+ 2M, Schedule type: Karras, CFG scale: 7\.0, Seed: 11, Size: 64x64, /);
  assert.equal(r.body.parameters.sampler_index_extra, undefined, 'unknown fields are ignored, not echoed');
});
