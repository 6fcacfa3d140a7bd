/**
 * The A1111 API surface on a real server (127.0.0.1, port 0) with the fixture checkpoint and LoRAs and the
 * backend `serve` really uses: listings, options, errors, security rules, OpenAPI, png-info.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer as createHttp } from 'node:http';
import { readFile, writeFile, mkdir, symlink, stat, mkdtemp, rm } from 'node:fs/promises';
import { totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import sharp from 'sharp';
import { crc32, deflateSync } from 'node:zlib';
import { readHeaderOnly, writeSafetensors } from '../engine/safetensors/index.ts';
import { writePngText } from '../engine/image/png-info.ts';
import { SAMPLERS as ENGINE_SAMPLERS, A1111_SAMPLER_NAMES } from '../engine/sampling/registry.ts';
import { startTestServer, sdTiny, type TestServer } from './server-fixture-backend.ts';
import { repoRoot } from './support/paths.ts';

let t: TestServer;
const errorBodies: unknown[] = [];
const ckptPath = join(sdTiny, 'sd-tiny.safetensors');

before(async () => {
  t = await startTestServer({ withModel: true });
  await writeFile(join(t.dataDir, 'styles.csv'), 'name,prompt,negative_prompt\n"Photo","{prompt}, photo, 35mm","cartoon"\nPlain,plain style,\n');
});
after(async () => {
  for (const b of errorBodies) assert.doesNotMatch(JSON.stringify(b), /\\n\s+at |\.ts:\d+/, 'error bodies never carry stack traces');
  await t.close();
});

const keep = <T>(r: T & { body: unknown }): T => {
  errorBodies.push(r.body);
  return r;
};

test('default folder layout is created under the data dir', async () => {
  for (const d of ['models/Stable-diffusion', 'models/Lora', 'models/VAE', 'outputs']) {
    assert.ok((await stat(join(t.dataDir, d))).isDirectory(), d);
  }
});

test('sd-models lists the fixture checkpoint with A1111 fields and its real sha256 once loaded', async () => {
  assert.deepEqual((await t.post('/sdapi/v1/reload-checkpoint')).body, {});
  const sha = createHash('sha256').update(await readFile(ckptPath)).digest('hex');
  const r = await t.get('/sdapi/v1/sd-models');
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, [
    {
      title: `sd-tiny.safetensors [${sha.slice(0, 10)}]`,
      model_name: 'sd-tiny',
      hash: sha.slice(0, 10),
      sha256: sha,
      filename: join(t.dataDir, 'models/Stable-diffusion/sd-tiny.safetensors'),
      config: null,
      resolution: null,
    },
  ]);
  assert.equal(t.server.ctx.backend.currentCheckpoint()?.sha256, sha);
  const opts = (await t.get('/sdapi/v1/options')).body;
  assert.equal(opts.sd_model_checkpoint, `sd-tiny.safetensors [${sha.slice(0, 10)}]`);
  assert.equal(opts.sd_checkpoint_hash, sha);
  // The hash is cached in cache.json so a restart does not rehash.
  const cache = JSON.parse(await readFile(join(t.dataDir, 'cache.json'), 'utf8'));
  assert.equal(cache.hashes['checkpoint/sd-tiny.safetensors'].sha256, sha);
});

test('loras: A1111 shape with each file’s real metadata; JSON values decoded; key order; refresh finds new files', async () => {
  const r = await t.get('/sdapi/v1/loras');
  assert.equal(r.status, 200);
  const a = r.body.find((x: any) => x.name === 'lora_a');
  assert.deepEqual(a, {
    name: 'lora_a',
    alias: 'lora_a',
    path: join(t.dataDir, 'models/Lora/lora_a.safetensors'),
    // The fixture file's own metadata, values as written (plain strings there).
    metadata: (await readHeaderOnly(join(sdTiny, 'lora-kohya/lora_a.safetensors'))).metadata,
  });
  assert.deepEqual(r.body.map((x: any) => x.name), ['lora_a', 'lora_b']);

  // A trained-looking LoRA in a subfolder, and a pickle (listed, never opened).
  await mkdir(join(t.dataDir, 'models/Lora/style'), { recursive: true });
  const meta = {
    ss_output_name: 'MyStyle',
    ss_network_dim: '8',
    ss_tag_frequency: JSON.stringify({ '10_cat': { cat: 3, 'sitting cat': 1 } }),
    ss_datasets: JSON.stringify([{ subsets: [] }]),
    ss_sd_model_name: 'v1-5.safetensors',
    ss_bad_json: '{not json',
  };
  await writeSafetensors(join(t.dataDir, 'models/Lora/style/my_style_v2.safetensors'), { 'lora_unet_x.alpha': { dtype: 'F32', shape: [], data: new Float32Array([8]) } }, meta);
  await writeFile(join(t.dataDir, 'models/Lora/old.pt'), 'not read');
  assert.equal((await t.get('/sdapi/v1/loras')).body.length, 2, 'not visible before refresh');
  const rr = await t.post('/sdapi/v1/refresh-loras');
  assert.equal(rr.status, 200);
  assert.equal(rr.body, null);
  const list = (await t.get('/sdapi/v1/loras')).body;
  const mine = list.find((x: any) => x.name === 'my_style_v2');
  assert.equal(mine.alias, 'MyStyle');
  assert.equal(mine.path, join(t.dataDir, 'models/Lora/style/my_style_v2.safetensors'));
  assert.deepEqual(mine.metadata.ss_tag_frequency, { '10_cat': { cat: 3, 'sitting cat': 1 } });
  assert.equal(mine.metadata.ss_datasets, '[{"subsets":[]}]', 'values starting with [ stay strings');
  assert.equal(mine.metadata.ss_bad_json, '{not json');
  assert.deepEqual(Object.keys(mine.metadata).slice(0, 2), ['ss_sd_model_name', 'ss_tag_frequency']);
  assert.deepEqual(list.find((x: any) => x.name === 'old'), { name: 'old', alias: 'old', path: join(t.dataDir, 'models/Lora/old.pt'), metadata: {} });
});

test('lists: samplers, schedulers, upscalers, latent modes, VAEs, styles and empty feature lists in A1111 shapes', async () => {
  const s = (await t.get('/sdapi/v1/samplers')).body;
  assert.deepEqual(s[0], { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], options: { scheduler: 'karras' } });
  assert.ok(s.some((x: any) => x.name === 'Euler a' && x.aliases.includes('k_euler_a')));
  // The engine backend lists the A1111 samplers it implements, in A1111's order.
  const implemented = new Set(ENGINE_SAMPLERS.map((x) => x.name));
  assert.deepEqual(s.map((x: any) => x.name), A1111_SAMPLER_NAMES.filter((n) => implemented.has(n)));
  assert.ok(s.length >= 15, `only ${s.length} samplers`);
  const sch = (await t.get('/sdapi/v1/schedulers')).body;
  assert.deepEqual(sch.find((x: any) => x.name === 'karras'), { name: 'karras', label: 'Karras', aliases: null, default_rho: 7, need_inner_model: false });
  assert.deepEqual(sch[0].name, 'automatic');
  assert.deepEqual((await t.get('/sdapi/v1/upscalers')).body[0], { name: 'None', model_name: null, model_path: null, model_url: null, scale: 4 });
  assert.deepEqual((await t.get('/sdapi/v1/latent-upscale-modes')).body[0], { name: 'Latent' });
  for (const p of ['hypernetworks', 'face-restorers', 'realesrgan-models']) assert.deepEqual((await t.get(`/sdapi/v1/${p}`)).body, [], p);
  assert.deepEqual((await t.get('/sdapi/v1/embeddings')).body, { loaded: {}, skipped: {} });
  assert.deepEqual((await t.get('/sdapi/v1/prompt-styles')).body, [
    { name: 'Photo', prompt: '{prompt}, photo, 35mm', negative_prompt: 'cartoon' },
    { name: 'Plain', prompt: 'plain style', negative_prompt: '' },
  ]);
  await symlink(ckptPath, join(t.dataDir, 'models/VAE/my.vae.safetensors'));
  assert.deepEqual((await t.get('/sdapi/v1/sd-vae')).body, []);
  assert.equal((await t.post('/sdapi/v1/refresh-vae')).body, null);
  assert.deepEqual((await t.get('/sdapi/v1/sd-vae')).body, [{ model_name: 'my.vae.safetensors', filename: join(t.dataDir, 'models/VAE/my.vae.safetensors') }]);
});

test('refresh-checkpoints finds checkpoints in subfolders', async () => {
  await mkdir(join(t.dataDir, 'models/Stable-diffusion/sub'), { recursive: true });
  await symlink(ckptPath, join(t.dataDir, 'models/Stable-diffusion/sub/other.safetensors'));
  assert.equal((await t.post('/sdapi/v1/refresh-checkpoints')).body, null);
  const names = (await t.get('/sdapi/v1/sd-models')).body.map((m: any) => [m.model_name, m.filename]);
  assert.deepEqual(names, [
    ['sd-tiny', join(t.dataDir, 'models/Stable-diffusion/sd-tiny.safetensors')],
    ['sub_other', join(t.dataDir, 'models/Stable-diffusion/sub/other.safetensors')],
  ]);
});

test('options: round-trip, persisted atomically to config.json, checkpoint switching, A1111 errors', async () => {
  const before = (await t.get('/sdapi/v1/options')).body;
  assert.equal(before.CLIP_stop_at_last_layers, 1);
  assert.equal(before.randn_source, 'GPU');
  assert.equal(before.samples_format, 'png');
  const r = await t.post('/sdapi/v1/options', { CLIP_stop_at_last_layers: 2, randn_source: 'CPU', api_enable_requests: true });
  assert.equal(r.status, 200);
  assert.equal(r.body, null);
  const now = (await t.get('/sdapi/v1/options')).body;
  assert.equal(now.CLIP_stop_at_last_layers, 2);
  assert.equal(now.randn_source, 'CPU');
  assert.equal(now.api_enable_requests, false, 'restricted options are silently ignored');
  const saved = JSON.parse(await readFile(join(t.dataDir, 'config.json'), 'utf8'));
  assert.equal(saved.CLIP_stop_at_last_layers, 2);

  // Switch checkpoints by stem, as A1111 accepts; the backend loads it through the queue.
  assert.equal((await t.post('/sdapi/v1/options', { sd_model_checkpoint: 'sub/other.safetensors' })).status, 200);
  assert.equal(t.server.ctx.backend.currentCheckpoint()?.name, 'sub/other.safetensors');
  assert.match((await t.get('/sdapi/v1/options')).body.sd_model_checkpoint, /^sub\/other\.safetensors \[[0-9a-f]{10}\]$/);
  assert.equal((await t.post('/sdapi/v1/options', { sd_model_checkpoint: 'sd-tiny' })).status, 200);
  assert.equal(t.server.ctx.backend.currentCheckpoint()?.name, 'sd-tiny.safetensors');

  const unknown = keep(await t.post('/sdapi/v1/options', { no_such_option: 1 }));
  assert.equal(unknown.status, 422, 'the client named an option that does not exist');
  assert.deepEqual(unknown.body, { error: 'KeyError', detail: '', body: '', errors: 'no_such_option' });
  for (const bad of ['nope', '../../../../etc/passwd', join(t.dataDir, 'models/Stable-diffusion/../Lora/lora_a.safetensors')]) {
    const e = keep(await t.post('/sdapi/v1/options', { sd_model_checkpoint: bad }));
    assert.equal(e.status, 404);
    assert.deepEqual(e.body, { error: 'RuntimeError', detail: '', body: '', errors: `model '${bad}' not found` });
  }
  assert.equal(t.server.ctx.backend.currentCheckpoint()?.name, 'sd-tiny.safetensors', 'a failed switch keeps the model');
  const typed = keep(await t.post('/sdapi/v1/options', { CLIP_stop_at_last_layers: 'two' }));
  assert.equal(typed.status, 422);
  // A known option is typed by its default's type: a refusal is FastAPI's, naming the key.
  assert.deepEqual(typed.body, { detail: [{ loc: ['body', 'CLIP_stop_at_last_layers'], msg: 'value is not a valid float', type: 'type_error.float' }] });
  await t.post('/sdapi/v1/options', { CLIP_stop_at_last_layers: 1, randn_source: 'GPU' });
});

test('options survive a restart (config.json is read at start)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-opts-'));
  try {
    const a = await startTestServer({ dataDir: dir });
    await a.post('/sdapi/v1/options', { show_progress_every_n_steps: 3 });
    await a.close();
    const b = await startTestServer({ dataDir: dir });
    assert.equal((await b.get('/sdapi/v1/options')).body.show_progress_every_n_steps, 3);
    await b.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('cmd-flags, memory, X-Process-Time', async () => {
  const f = await t.get('/sdapi/v1/cmd-flags');
  assert.equal(f.body.lora_dir, join(t.dataDir, 'models/Lora'));
  assert.equal(f.body.ckpt_dir, join(t.dataDir, 'models/Stable-diffusion'));
  assert.equal(f.body.api_auth, null);
  assert.match(f.headers.get('x-process-time') ?? '', /^\d+(\.\d+)?(e-\d+)?$/);
  assert.deepEqual((await t.get('/internal/ping')).body, {});
  const m = (await t.get('/sdapi/v1/memory')).body;
  assert.equal(m.ram.total, totalmem());
  assert.ok(m.ram.used > 10e6 && m.ram.free > 0);
  assert.equal(typeof m.cuda.error, 'string');
});

test('validation and routing errors use FastAPI/A1111 shapes', async () => {
  const v = keep(await t.post('/sdapi/v1/txt2img', { steps: 'abc', width: 'wide', restore_faces: 'maybe', styles: 'x' }));
  assert.equal(v.status, 422);
  assert.deepEqual(v.body, {
    detail: [
      { loc: ['body', 'styles'], msg: 'value is not a valid list', type: 'type_error.list' },
      { loc: ['body', 'steps'], msg: 'value is not a valid integer', type: 'type_error.integer' },
      { loc: ['body', 'width'], msg: 'value is not a valid integer', type: 'type_error.integer' },
      { loc: ['body', 'restore_faces'], msg: 'value could not be parsed to a boolean', type: 'type_error.bool' },
    ],
  });
  const arr = keep(await t.post('/sdapi/v1/txt2img', [1, 2]));
  assert.equal(arr.status, 422);
  assert.deepEqual(arr.body.detail[0].loc, ['body']);
  const broken = keep(await t.post('/sdapi/v1/txt2img', '{"prompt": '));
  assert.equal(broken.status, 422);
  assert.equal(broken.body.detail[0].type, 'value_error.jsondecode');
  const nf = keep(await t.get('/sdapi/v1/does-not-exist'));
  assert.equal(nf.status, 404);
  assert.deepEqual(nf.body, { detail: 'Not Found' });
  const na = keep(await t.get('/sdapi/v1/txt2img'));
  assert.equal(na.status, 405);
  assert.deepEqual(na.body, { detail: 'Method Not Allowed' });
  const sc = keep(await t.post('/sdapi/v1/txt2img', { script_name: 'X/Y/Z plot' }));
  assert.equal(sc.status, 422);
  assert.deepEqual(sc.body, { error: 'HTTPException', detail: "Script 'X/Y/Z plot' not found", body: '', errors: '' });
  const ao = keep(await t.post('/sdapi/v1/txt2img', { alwayson_scripts: { controlnet: { args: [] } } }));
  assert.equal(ao.status, 422);
  assert.equal(ao.body.detail, 'always on script controlnet not found');
  const big = keep(await t.post('/sdapi/v1/txt2img', { width: 100000 }));
  assert.equal(big.status, 422);
  assert.deepEqual(big.body.detail[0].loc, ['body', 'width']);
  assert.match(big.body.detail[0].msg, /width must be between/);
});

test('img2img image input: missing, bad base64, URLs refused unless enabled', async () => {
  const none = keep(await t.post('/sdapi/v1/img2img', { prompt: 'x' }));
  assert.equal(none.status, 404);
  assert.deepEqual(none.body, { error: 'HTTPException', detail: 'Init image not found', body: '', errors: '' });
  const bad = keep(await t.post('/sdapi/v1/img2img', { init_images: ['bm90IGFuIGltYWdl'] }));
  assert.equal(bad.status, 422);
  assert.match(bad.body.detail, /^Invalid encoded image/);
  const url = keep(await t.post('/sdapi/v1/img2img', { init_images: ['https://example.com/cat.png'] }));
  assert.equal(url.status, 403);
  assert.equal(url.body.detail, 'Requests not allowed');
  const pi = keep(await t.post('/sdapi/v1/png-info', { image: 'http://example.com/a.png' }));
  assert.equal(pi.body.detail, 'Requests not allowed');
});

test('init images: raster formats only, size checked from the header before decoding, truncated files are 422', async () => {
  // 195 bytes that would render 8000×8000 with a blur: refused without rendering.
  const svg = '<svg xmlns="http://www.w3.org/2000/svg" width="8000" height="8000"><filter id="b"><feGaussianBlur stdDeviation="500"/></filter><rect width="8000" height="8000" filter="url(#b)"/></svg>';
  const t0 = Date.now();
  const s = keep(await t.post('/sdapi/v1/img2img', { init_images: [Buffer.from(svg).toString('base64')], steps: 1, width: 8, height: 8 }));
  assert.equal(s.status, 422);
  assert.match(s.body.detail, /not a PNG, JPEG, WebP/);
  assert.ok(Date.now() - t0 < 2000);
  const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#336699' } }).png({ compressionLevel: 0 }).toBuffer();
  const cut = keep(await t.post('/sdapi/v1/img2img', { init_images: [png.subarray(0, Math.floor(png.length * 0.6)).toString('base64')], steps: 1, width: 8, height: 8 }));
  assert.equal(cut.status, 422, JSON.stringify(cut.body));
  assert.match(cut.body.detail, /Invalid encoded image/);
  // A decompression bomb: a small PNG declaring 20000×20000 pixels is refused from its header (limit 64 Mpx here).
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(20000, 0);
  ihdr.writeUInt32BE(20000, 4);
  ihdr.set([8, 0, 0, 0, 0], 8);
  // 400 Mpx of zeros deflate to about 400 KB; the first rows are enough to look real.
  const bomb = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr), chunk('IDAT', deflateSync(Buffer.alloc(20001 * 64))), chunk('IEND', Buffer.alloc(0))]);
  const rss0 = process.memoryUsage().rss;
  const b = keep(await t.post('/sdapi/v1/img2img', { init_images: [bomb.toString('base64')], steps: 1, width: 8, height: 8 }));
  assert.equal(b.status, 422);
  assert.match(b.body.detail, /larger than/);
  assert.ok(process.memoryUsage().rss - rss0 < 256 * 2 ** 20);
  const mask = keep(await t.post('/sdapi/v1/img2img', { init_images: [png.toString('base64')], mask: png.toString('base64'), mask_blur: 5000, steps: 1, width: 8, height: 8 }));
  assert.equal(mask.status, 422);
  assert.deepEqual(mask.body.detail[0].loc, ['body', 'mask_blur']);
  const seedResize = keep(await t.post('/sdapi/v1/txt2img', { seed_resize_from_w: 1e6, seed_resize_from_h: 1e6, steps: 1, width: 8, height: 8 }));
  assert.equal(seedResize.status, 422);
  assert.deepEqual(seedResize.body.detail[0].loc, ['body', 'seed_resize_from_w']);
});

test('with URLs enabled, loopback/private/link-local targets are refused, public ones are fetched', async () => {
  const png = writePngText(await sharp({ create: { width: 8, height: 8, channels: 3, background: '#123456' } }).png().toBuffer(), { parameters: 'fetched\nSteps: 3, Sampler: Euler, Seed: 9' });
  const files = createHttp((_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    res.end(png);
  });
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', () => r()));
  const port = (files.address() as { port: number }).port;
  const strict = await startTestServer({ apiEnableRequests: true });
  // The same loopback file server, but this server is told (test seam) that 127.0.0.1 is public.
  const lenient = await startTestServer({ apiEnableRequests: true, allowImageAddresses: (ip) => ip === '127.0.0.1' });
  try {
    for (const u of [`http://127.0.0.1:${port}/a.png`, `http://localhost:${port}/a.png`, 'http://[::1]/a.png', 'http://10.1.2.3/a.png', 'http://169.254.169.254/latest', 'http://192.168.1.1/a.png', 'http://[::ffff:127.0.0.1]/a.png', 'http://2130706433/a.png', 'http://0x7f.1/a.png', `http://[::7f00:1]:${port}/a.png`, `http://[::ffff:0:7f00:1]:${port}/a.png`, 'http://[::127.0.0.1]/a.png', 'http://[::ffff:0:a00:1]/a.png']) {
      const r = keep(await strict.post('/sdapi/v1/png-info', { image: u }));
      assert.equal(r.status, 403, u);
      assert.equal(r.body.detail, 'Request to local resource not allowed', u);
    }
    const ok = await lenient.post('/sdapi/v1/png-info', { image: `http://127.0.0.1:${port}/a.png` });
    assert.equal(ok.status, 200);
    assert.equal(ok.body.parameters['Seed'], '9');
    // Names still resolve through the check: localhost → ::1 is not in the allowed set.
    assert.equal((await strict.get('/sdapi/v1/options')).body.api_enable_requests, true);
  } finally {
    await strict.close();
    await lenient.close();
    files.close();
  }
});

test('png-info reads a real PNG’s parameters chunk and other text items', async () => {
  const base = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#808080' } }).png().toBuffer();
  const text = 'a <lora:lora_a:0.8> cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.0, Seed: 123, Size: 512x768, Model hash: abcdef0123, Model: sd-tiny, Lora hashes: "lora_a: 0123456789ab", Version: v1.10.1';
  const png = writePngText(base, { parameters: text, Software: 'test' });
  const r = await t.post('/sdapi/v1/png-info', { image: 'data:image/png;base64,' + png.toString('base64') });
  assert.equal(r.status, 200);
  assert.equal(r.body.info, text);
  assert.deepEqual(r.body.items, { Software: 'test' });
  assert.equal(r.body.parameters['Prompt'], 'a <lora:lora_a:0.8> cat');
  assert.equal(r.body.parameters['Negative prompt'], 'dog');
  assert.equal(r.body.parameters['Size-1'], '512');
  assert.equal(r.body.parameters['Size-2'], '768');
  assert.equal(r.body.parameters['Lora hashes'], 'lora_a: 0123456789ab');
  assert.deepEqual((await t.post('/sdapi/v1/png-info', { image: '' })).body, { info: '', items: {}, parameters: {} });
  const plain = await t.post('/sdapi/v1/png-info', { image: base.toString('base64') });
  assert.deepEqual(plain.body, { info: '', items: {}, parameters: {} });
});

test('request bodies over the limit get 413 in A1111 shape', async () => {
  const small = await startTestServer({ maxBodyBytes: 2000 });
  try {
    const r = keep(await small.post('/sdapi/v1/png-info', { image: 'A'.repeat(5000) }));
    assert.equal(r.status, 413);
    assert.equal(r.body.error, 'PayloadTooLarge');
  } finally {
    await small.close();
  }
});

test('OpenAPI at /openapi.json covers every route with request schemas; /docs renders offline', async () => {
  const doc = (await t.get('/openapi.json')).body;
  assert.equal(doc.openapi, '3.1.0');
  const need = ['txt2img', 'img2img', 'progress', 'interrupt', 'skip', 'options', 'cmd-flags', 'samplers', 'schedulers', 'upscalers', 'latent-upscale-modes', 'sd-models', 'sd-vae', 'hypernetworks', 'face-restorers', 'realesrgan-models', 'prompt-styles', 'embeddings', 'loras', 'refresh-loras', 'refresh-checkpoints', 'refresh-vae', 'png-info', 'memory', 'unload-checkpoint', 'reload-checkpoint'];
  for (const n of need) assert.ok(doc.paths[`/sdapi/v1/${n}`], n);
  assert.ok(doc.paths['/sdapi/v1/options'].get && doc.paths['/sdapi/v1/options'].post);
  const t2i = doc.components.schemas.StableDiffusionTxt2ImgProcessingAPI.properties;
  assert.equal(t2i.steps.default, 50);
  assert.equal(t2i.sampler_index.default, 'Euler');
  assert.equal(t2i.cfg_scale.type, 'number');
  const html = await fetch(t.server.url + '/docs');
  assert.equal(html.headers.get('content-type')?.startsWith('text/html'), true);
  const body = await html.text();
  assert.match(body, /\/sdapi\/v1\/txt2img/);
  assert.doesNotMatch(body, /https?:\/\/(cdn|unpkg)/);
});

test('unload-checkpoint and reload-checkpoint', async () => {
  assert.deepEqual((await t.post('/sdapi/v1/unload-checkpoint')).body, {});
  assert.equal(t.server.ctx.backend.currentCheckpoint(), null);
  assert.deepEqual((await t.post('/sdapi/v1/reload-checkpoint')).body, {});
  assert.equal(t.server.ctx.backend.currentCheckpoint()?.name, 'sd-tiny.safetensors');
});

test('with no checkpoint the server starts, says so, and generation answers a clear error', async () => {
  const logs: string[] = [];
  const empty = await startTestServer({ log: (m) => logs.push(m) });
  try {
    assert.ok(logs.some((l) => /No checkpoint found in .*models\/Stable-diffusion/.test(l)), logs.join('\n'));
    assert.deepEqual((await empty.get('/sdapi/v1/sd-models')).body, []);
    const r = keep(await empty.post('/sdapi/v1/txt2img', { prompt: 'x' }));
    assert.equal(r.status, 500);
    assert.equal(r.body.error, 'RuntimeError');
    assert.match(r.body.errors, /No checkpoint loaded: no \.safetensors checkpoint found in .*POST \/sdapi\/v1\/refresh-checkpoints/);
    assert.equal((await empty.get('/sdapi/v1/progress')).body.progress, 0, 'the failed job left nothing behind');
  } finally {
    await empty.close();
  }
});

test('`lora-scripts serve` starts the server on the given port and data dir', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-serve-'));
  const child = spawn(process.execPath, [join(repoRoot, 'bin/lora-scripts.js'), 'serve', '--port', '0', '--data-dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d) => {
        out += d;
        const m = /on (http:\/\/127\.0\.0\.1:\d+)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('exit', (c) => reject(new Error(`exited ${c}: ${out}`)));
      setTimeout(() => reject(new Error(`no URL in: ${out}`)), 20000);
    });
    const r = await fetch(url + '/sdapi/v1/samplers');
    assert.equal(r.status, 200);
    assert.ok((await stat(join(dir, 'models/Lora'))).isDirectory());
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    await rm(dir, { recursive: true, force: true });
  }
});
