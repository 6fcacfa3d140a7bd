/**
 * Seeded, time-bounded fuzzing of the live server (real HTTP, real multipart, real image decoding, the
 * fixture backend for the math): random JSON fields for txt2img/img2img, prompts built from the prompt
 * syntax's own characters, broken and hostile images, random training configs as JSON and YAML, multipart
 * dataset uploads with hostile names, zips and truncated bodies; options writes, LoRA uploads (broken,
 * hostile and real safetensors), labelling and interrogate requests, dataset caption edits, listings and
 * thumbnails, training-job files, and the OpenAI-shaped LLM routes on a tiny real model. Every answer must be
 * below 500 and well formed, the process must not crash, and a known request must still give the known
 * answer after every batch of cases (options the cases changed are set back first). `LORA_SCRIPTS_FUZZ_SEED` / `LORA_SCRIPTS_FUZZ_CASES` override the seed and case count.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import sharp from 'sharp';
import { FixtureBackend, startTestServer, type TestServer } from './server-fixture-backend.ts';
import { patternFiles, upload } from './server-train-support.ts';
import { rng } from './support/random.ts';
import { tinyModelFolder } from './support/llm-folder.ts';
import { fixturesDir } from './support/paths.ts';

const SEED = Number(process.env['LORA_SCRIPTS_FUZZ_SEED'] ?? 14);
const CASES = Number(process.env['LORA_SCRIPTS_FUZZ_CASES'] ?? 2016);
// A safety net for a very loaded machine; 2016 cases take 30–65 s on the development machine.
const TIME_LIMIT_MS = 240_000;

let t: TestServer;
let images: Record<string, Buffer>;
/** Safetensors files for LoRA uploads: real LoRAs, a checkpoint (not a LoRA), and broken ones. */
let tensorFiles: Record<string, Buffer>;
/** Option values before the cases, restored before every canary. */
let optionsBefore: Record<string, unknown>;
/** Training jobs the cases created (for the job-file routes). */
const trainIds: string[] = [];

before(async () => {
  // Small caps keep every accepted case cheap; the caps themselves are part of what is fuzzed.
  t = await startTestServer({ withModel: true, backend: new FixtureBackend(), limits: { maxPixels: 128 * 128, maxSteps: 8, maxImages: 4, maxLoraRank: 16, maxPromptChars: 4000 } });
  assert.equal((await upload(t, 'fuzzset', await patternFiles(2))).status, 201);
  const png = await sharp({ create: { width: 32, height: 24, channels: 3, background: '#2a6' } }).png().toBuffer();
  images = {
    png,
    jpeg: await sharp(png).jpeg().toBuffer(),
    webp: await sharp(png).webp().toBuffer(),
    gif: await sharp(png).gif().toBuffer(),
    truncated: png.subarray(0, png.length >> 1),
    svg: Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="8000" height="8000"><rect width="8000" height="8000"/></svg>'),
    header: png.subarray(0, 33),
    noise: Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 73 + 11) & 255)),
    empty: Buffer.alloc(0),
  };
  const lora = await readFile(join(fixturesDir, 'sd-tiny/lora-kohya/lora_a.safetensors'));
  const headerLength = Number(lora.readBigUInt64LE(0));
  const bigHeader = Buffer.alloc(8);
  bigHeader.writeBigUInt64LE(2n ** 40n);
  tensorFiles = {
    lora,
    lycoris: await readFile(join(fixturesDir, 'sd-tiny/lora-kohya/lora_b.safetensors')),
    truncated: lora.subarray(0, Math.floor(lora.length * 0.6)),
    headerOnly: lora.subarray(0, 8 + headerLength),
    bigHeader: Buffer.concat([bigHeader, Buffer.from('{}')]),
    badJson: Buffer.concat([Buffer.from([16, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a": [1, 2, 3}}')]),
    notLora: Buffer.concat([Buffer.from([2, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{}')]),
    png: images['png']!,
  };
  // The LLM routes run on the tiny fixture model.
  await cp(await tinyModelFolder(), join(t.dataDir, 'models/LLM/tiny'), { recursive: true });
  optionsBefore = (await t.get('/sdapi/v1/options')).body as Record<string, unknown>;
});
after(() => t?.close());

type R = () => number;
const pick = <T,>(r: R, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const int = (r: R, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

function weirdString(r: R): string {
  return pick(r, [
    '',
    ' ',
    'a cat',
    '\u0000',
    'a\nb',
    '../../etc/passwd',
    '%s%n',
    '\ud83d',
    '😀'.repeat(int(r, 1, 50)),
    'x'.repeat(int(r, 0, 5000)),
    '<script>',
    'Euler a',
    'DPM++ 2M Karras',
    'NaN',
    '-1',
    '1e309',
    'inf',
  ]);
}

function weirdValue(r: R, depth = 0): unknown {
  const k = int(r, 0, depth > 1 ? 9 : 12);
  switch (k) {
    case 0: return null;
    case 1: return r() < 0.5;
    case 2: return int(r, -3, 70);
    case 3: return pick(r, [0, -1, 1e6, -1e9, 2 ** 53, 1e308, 0.5, -0.0, 4096, 100000, 8, 64]);
    case 4: return r() * 20 - 5;
    case 5:
    case 6: return weirdString(r);
    case 7: return String(int(r, -5, 100));
    case 8: return pick(r, ['true', 'false', 'yes', '1.5', '']);
    case 9: return [];
    case 10: return Array.from({ length: int(r, 0, 3) }, () => weirdValue(r, depth + 1));
    case 11: return { [weirdString(r)]: weirdValue(r, depth + 1) };
    default: return { sd_model_checkpoint: weirdString(r), samples_format: pick(r, ['png', 'bmp', 'jpg', 7]), CLIP_stop_at_last_layers: weirdValue(r, depth + 1) };
  }
}

/** Prompts from the syntax's own pieces: brackets, edits, alternations, emphasis, escapes, LoRA tags, BREAK, AND. */
function prompt(r: R): string {
  const pieces = ['[', ']', '(', ')', ':', '|', '\\', ' ', 'cat', ', ', '0.5', '1', '[a:b:0.3]', '[x|y|z]', '(red:1.3)', '((big))', ' BREAK ', ' AND ', '<lora:lora_a:0.8>', '<lora:lora_a:inf>', '<lora:nope:1>', '<lora:lora_b:nan>', '<hypernet:x:1>', '[d::2]', '\\(', '[' .repeat(40)];
  let s = '';
  const n = int(r, 0, r() < 0.05 ? 400 : 30);
  for (let i = 0; i < n; i++) s += pick(r, pieces);
  return s;
}

function imageField(r: R): unknown {
  const name = pick(r, Object.keys(images));
  const b64 = images[name]!.toString('base64');
  return pick(r, [b64, `data:image/png;base64,${b64}`, b64.slice(0, int(r, 0, b64.length)), 'http://127.0.0.1/a.png', 'https://[::7f00:1]/x.png', '!!!notbase64', weirdValue(r)]);
}

const TXT2IMG_FIELDS = ['prompt', 'negative_prompt', 'styles', 'seed', 'subseed', 'subseed_strength', 'seed_resize_from_h', 'seed_resize_from_w', 'sampler_name', 'scheduler', 'batch_size', 'n_iter', 'steps', 'cfg_scale', 'width', 'height', 'tiling', 'eta', 'denoising_strength', 's_churn', 'override_settings', 'override_settings_restore_afterwards', 'disable_extra_networks', 'sampler_index', 'script_name', 'send_images', 'save_images', 'alwayson_scripts', 'force_task_id', 'infotext', 'enable_hr', 'hr_scale', 'hr_upscaler', 'hr_second_pass_steps', 'hr_resize_x', 'hr_resize_y', 'hr_sampler_name', 'hr_prompt', 'hr_negative_prompt'];
const IMG2IMG_FIELDS = ['init_images', 'resize_mode', 'denoising_strength', 'image_cfg_scale', 'mask', 'mask_blur_x', 'mask_blur_y', 'mask_blur', 'inpainting_fill', 'inpaint_full_res', 'inpaint_full_res_padding', 'inpainting_mask_invert', 'initial_noise_multiplier', 'include_init_images'];

function generationBody(r: R, img2img: boolean): Record<string, unknown> {
  // A sane base most of the time, so cases get past validation and reach the queue, the backend and the encoder.
  const body: Record<string, unknown> = r() < 0.7 ? { steps: int(r, 1, 3), width: pick(r, [8, 16, 24]), height: pick(r, [8, 16]), prompt: prompt(r) } : {};
  if (img2img && r() < 0.8) body['init_images'] = [imageField(r)];
  const fields = img2img ? [...TXT2IMG_FIELDS.slice(0, 30), ...IMG2IMG_FIELDS] : TXT2IMG_FIELDS;
  for (let i = int(r, 0, 6); i > 0; i--) {
    const f = pick(r, fields);
    body[f] = f.includes('prompt') ? prompt(r) : f === 'init_images' || f === 'mask' ? (f === 'mask' ? imageField(r) : [imageField(r)]) : weirdValue(r);
  }
  return body;
}

function trainConfig(r: R): unknown {
  const base: Record<string, unknown> = { train_data_dir: 'datasets/fuzzset', lora_rank: 4, resolution: 64, enable_bucket: false, epochs: 1, output_name: 'fuzz' };
  const keys = ['train_data_dir', 'lora_rank', 'lora_alpha', 'resolution', 'batch_size', 'epochs', 'learning_rate', 'output_name', 'base_model', 'resume_from', 'output_dir', 'metadata_path', 'sample_prompts', 'max_bucket_reso', 'optimizer', 'unknown_key', 'init_lora', 'tokenizer'];
  for (let i = int(r, 0, 4); i > 0; i--) {
    const k = pick(r, keys);
    base[k] = k.endsWith('dir') || k === 'base_model' || k === 'resume_from' || k === 'init_lora' ? pick(r, ['/etc', '../..', '~/x', 'datasets/fuzzset', 'training/x', weirdString(r)]) : weirdValue(r);
  }
  const yamls = [
    'lora_rank: [',
    'a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
    'train_data_dir: datasets/fuzzset\nlora_rank: 1000000\n',
    'train_data_dir: datasets/fuzzset\nlora_rank: 4\nlora_rank: 8\n',
    '\t- bad',
    '!!python/object:os.system ls',
    'train_data_dir: datasets/fuzzset\noutput_name: "a\\u0000b"\n',
    '- 1\n- 2\n',
    `x: ${'['.repeat(200)}`,
  ];
  return r() < 0.35 ? { yaml: pick(r, yamls) } : r() < 0.1 ? weirdValue(r) : base;
}

async function multipartCase(r: R): Promise<{ status: number; body: unknown }> {
  const url = `${t.server.url}/sdapi/v1/train/datasets/fz${int(r, 0, 3)}?replace=true`;
  const kind = int(r, 0, 4);
  if (kind <= 1) {
    const form = new FormData();
    for (let i = int(r, 0, 3); i > 0; i--) {
      const name = pick(r, ['a.png', 'b.txt', 'metadata.csv', '../x.png', '.hidden.png', 'a\u0000b.png', 'c.svg', 'd.zip', 'e.png', '😀.png', 'con:x.png', 'x'.repeat(300) + '.png']);
      const data = name.endsWith('.zip') ? zipSync({ [pick(r, ['a.png', 'a.png/b.png', '../up.png', 'sub/c.png'])]: images['png']!, [pick(r, ['a.png', 'd/e.png', '__MACOSX/x'])]: images[pick(r, Object.keys(images))]! }) : name.endsWith('.csv') ? Buffer.from(pick(r, ['file_name,caption\na.png,cat\n', 'file_name,caption\n../../x.png,up\n', '"'])) : images[pick(r, Object.keys(images))]!;
      form.append(pick(r, ['files', 'f', '']), new Blob([new Uint8Array(data)]), name);
    }
    const res = await fetch(url, { method: 'POST', body: form });
    return { status: res.status, body: await res.text() };
  }
  const bodies = [
    'no boundary at all',
    '--XX\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\n\r\nabc',
    '--XX\r\nContent-Disposition: form-data; name="f"; filename="a\u0000.png"\r\n\r\nabc\r\n--XX--\r\n',
    '--XX\r\nbroken header\r\n\r\n--XX--',
    '',
  ];
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': pick(r, ['multipart/form-data', 'multipart/form-data; boundary=XX', 'application/json', 'text/plain']) }, body: pick(r, bodies) });
  return { status: res.status, body: await res.text() };
}

async function json(method: string, path: string, body: unknown, raw = false): Promise<{ status: number; body: unknown }> {
  const res = await fetch(t.server.url + path, { method, headers: { 'content-type': 'application/json' }, body: raw ? (body as string) : JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new Error(`${method} ${path}: answer is not JSON: ${text.slice(0, 200)}`);
  }
  return { status: res.status, body: parsed };
}

/** Options a client may set; folder options are left out (they are the operator's, and would write outside the test folder). */
const OPTION_KEYS = ['sd_model_checkpoint', 'samples_format', 'grid_format', 'CLIP_stop_at_last_layers', 'eta_noise_seed_delta', 'jpeg_quality', 'webp_lossless', 'sd_lora', 'extra_networks_default_multiplier', 'randn_source', 'use_old_scheduling', 'enable_pnginfo', 'sdxl_crop_top', 'sdxl_clip_l_skip', 'sd_vae', 'live_previews_enable', 'show_progress_every_n_steps', 'live_previews_image_format', 'samples_save', 'api_enable_requests', 'api_forbid_local_requests', 'no_such_option', 'eta_ancestral', 's_churn', 'token_merging_ratio'];

function optionsBody(r: R): unknown {
  if (r() < 0.1) return weirdValue(r);
  const body: Record<string, unknown> = {};
  for (let i = int(r, 1, 3); i > 0; i--) {
    const k = pick(r, OPTION_KEYS);
    body[k] = k === 'sd_model_checkpoint' ? pick(r, ['sd-tiny', 'sd-tiny.safetensors', 'missing', '../x', weirdString(r)]) : weirdValue(r);
  }
  return body;
}

async function loraUploadCase(r: R): Promise<{ status: number; body: unknown }> {
  const form = new FormData();
  for (let i = r() < 0.9 ? 1 : int(r, 0, 2); i > 0; i--) {
    const name = pick(r, ['fuzz.safetensors', 'lora_a.safetensors', '../up.safetensors', '.hidden.safetensors', 'a\u0000b.safetensors', 'x.ckpt', 'x'.repeat(200) + '.safetensors', '😀.safetensors', 'sub/dir.safetensors', 'con.safetensors', '']);
    form.append(pick(r, ['file', 'file', 'f']), new Blob([new Uint8Array(tensorFiles[pick(r, Object.keys(tensorFiles))]!)]), name);
  }
  if (r() < 0.2) form.append('extra', weirdString(r));
  const res = await fetch(`${t.server.url}/sdapi/v1/loras/upload${pick(r, ['', '?replace=true', '?replace=maybe'])}`, { method: 'POST', body: form });
  return { status: res.status, body: await res.text() };
}

function labelBody(r: R): unknown {
  if (r() < 0.1) return weirdValue(r);
  const body: Record<string, unknown> = { dataset: pick(r, ['fuzzset', 'missing', '../x', '', weirdString(r)]) };
  const keys = ['model', 'mode', 'target', 'trigger', 'dry_run', 'clip_model', 'wd14_model', 'threshold', 'character_threshold', 'batch_size', 'max_tags', 'exclude_tags', 'unknown_key'];
  for (let i = int(r, 0, 4); i > 0; i--) {
    const k = pick(r, keys);
    body[k] = k === 'model' ? pick(r, ['clip', 'wd14', 'both', 'blip', weirdString(r)]) : k === 'mode' ? pick(r, ['missing', 'overwrite', 'append', 'x']) : weirdValue(r);
  }
  return body;
}

function captionEdits(r: R): unknown {
  if (r() < 0.15) return pick(r, [weirdValue(r), { edits: weirdValue(r) }]);
  return {
    edits: Array.from({ length: int(r, 0, 3) }, () => ({
      key: pick(r, ['img0.png', 'img1.png', 'missing.png', '../x.png', '.hidden.png', '', weirdString(r)]),
      caption: pick(r, ['a cat', 'line\nbreak', '', weirdString(r), 7]),
      ...(r() < 0.3 ? { before: pick(r, ['', 'a cat', weirdString(r), 3]) } : {}),
    })),
  };
}

function llmBody(r: R, chat: boolean): unknown {
  if (r() < 0.1) return weirdValue(r);
  const body: Record<string, unknown> = { model: pick(r, ['tiny', 'tiny', 'missing', '../tiny', weirdString(r)]), max_tokens: pick(r, [1, 2, 3, 0, -1, 1e9, 'x']) };
  if (chat) body['messages'] = r() < 0.8 ? Array.from({ length: int(r, 0, 3) }, () => ({ role: pick(r, ['user', 'system', 'assistant', 'tool', 7]), content: pick(r, ['hi', '', weirdString(r), null, [{ type: 'text', text: 'x' }]]) })) : weirdValue(r);
  else body['prompt'] = r() < 0.8 ? pick(r, ['hello', '', weirdString(r), ['a', 'b']]) : weirdValue(r);
  const keys = ['temperature', 'top_p', 'top_k', 'seed', 'stop', 'stream', 'n', 'adapters', 'presence_penalty', 'logprobs', 'echo', 'repetition_penalty'];
  for (let i = int(r, 0, 3); i > 0; i--) {
    const k = pick(r, keys);
    body[k] = k === 'max_tokens' ? 2 : k === 'adapters' ? pick(r, [[{ name: 'missing', weight: 1 }], ['x:inf'], weirdValue(r)]) : weirdValue(r);
  }
  // Keep accepted cases cheap: a few tokens at most.
  if (typeof body['max_tokens'] === 'number' && (body['max_tokens'] as number) > 4) body['max_tokens'] = 4;
  return body;
}

/** A path segment or query value from any string (a lone surrogate cannot be percent-encoded: it becomes U+FFFD, as a browser sends it). */
const enc = (v: unknown): string => encodeURIComponent(String(v).replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd'));

/** Any answer: status and text (binary routes answer files, not JSON). */
async function raw(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
  const res = await fetch(t.server.url + path, { method, ...(body === undefined ? {} : { headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, body: text.slice(0, 300) };
}

const CANARY = { prompt: 'canary [a:b:0.5]', steps: 2, width: 16, height: 8, seed: 42 };

test('fuzz: no 5xx, no crash, and a known request keeps its known answer', async () => {
  const reference = await json('POST', '/sdapi/v1/txt2img', CANARY);
  assert.equal(reference.status, 200);
  const canaryImage = (reference.body as { images: string[] }).images[0];
  const started = Date.now();
  const failures: string[] = [];
  const byKind: Record<string, number> = {};
  const statuses: Record<number, number> = {};
  const accepted: Record<string, number> = {};
  let peakRss = process.memoryUsage().rss;

  // Each case draws from its own generator, so a case is the same whatever runs beside it.
  const runCase = async (n: number): Promise<void> => {
    const r = rng(SEED * 1_000_003 + n);
    const kind = pick(r, ['txt2img', 'txt2img', 'img2img', 'img2img', 'png-info', 'train', 'dry-run', 'upload', 'raw-json', 'task-id', 'options', 'lora-upload', 'label', 'captions', 'train-files', 'llm']);
    byKind[kind] = (byKind[kind] ?? 0) + 1;
    let res: { status: number; body: unknown };
    let what = `case ${n} ${kind}`;
    try {
      switch (kind) {
        case 'txt2img':
        case 'img2img': {
          const b = generationBody(r, kind === 'img2img');
          what += ` ${JSON.stringify(b).slice(0, 300)}`;
          res = await json('POST', `/sdapi/v1/${kind}`, b);
          break;
        }
        case 'png-info':
          res = await json('POST', '/sdapi/v1/png-info', { image: imageField(r) });
          break;
        case 'train':
        case 'dry-run': {
          const c = trainConfig(r);
          what += ` ${JSON.stringify(c).slice(0, 300)}`;
          res = await json('POST', kind === 'train' ? '/sdapi/v1/train/jobs' : '/sdapi/v1/train/dry-run', c);
          if (kind === 'train' && res.status === 202) {
            trainIds.push((res.body as { id: string }).id);
            await json('POST', `/sdapi/v1/train/jobs/${(res.body as { id: string }).id}/cancel`, {});
          }
          break;
        }
        case 'options': {
          const b = optionsBody(r);
          what += ` ${JSON.stringify(b).slice(0, 300)}`;
          res = await json('POST', '/sdapi/v1/options', b);
          // Set back at once, so the cases beside this one mostly see sane options.
          const keys = b && typeof b === 'object' ? Object.keys(b).filter((k) => k in optionsBefore && k !== 'sd_model_checkpoint') : [];
          if (keys.length) await json('POST', '/sdapi/v1/options', Object.fromEntries(keys.map((k) => [k, optionsBefore[k]])));
          break;
        }
        case 'lora-upload':
          res = await loraUploadCase(r);
          break;
        case 'label': {
          const which = int(r, 0, 3);
          const b = which === 0 ? labelBody(r) : which === 1 ? { image: imageField(r), model: pick(r, ['clip', 'deepdanbooru', 'x', weirdValue(r)]) } : null;
          what += ` ${JSON.stringify(b).slice(0, 300)}`;
          res = which === 0 ? await json('POST', '/sdapi/v1/label', b) : which === 1 ? await json('POST', '/sdapi/v1/interrogate', b) : await raw(pick(r, ['GET', 'POST']), `/sdapi/v1/label/jobs/${enc(weirdString(r))}${which === 3 ? '/cancel' : ''}`);
          break;
        }
        case 'captions': {
          const name = enc(pick(r, ['fuzzset', 'fuzzset', 'missing', '..', weirdString(r) || 'x']));
          const which = int(r, 0, 2);
          if (which === 0) {
            const b = captionEdits(r);
            what += ` ${JSON.stringify(b).slice(0, 300)}`;
            res = await json('POST', `/sdapi/v1/train/datasets/${name}/captions`, b);
          } else if (which === 1) res = await raw('GET', `/sdapi/v1/train/datasets/${name}/items${r() < 0.5 ? `?resolution=${enc(weirdValue(r))}` : ''}`);
          else res = await raw('GET', `/sdapi/v1/train/datasets/${name}/image?key=${enc(pick(r, ['img0.png', '../x.png', 'missing.png', '', weirdString(r)]))}&size=${enc(weirdValue(r))}`);
          what += ` ${name}`;
          break;
        }
        case 'train-files': {
          const id = enc(trainIds.length && r() < 0.7 ? pick(r, trainIds) : weirdString(r) || 'x');
          const path = pick(r, ['job.json', '../job.json', '.hidden', '', 'logs', '/etc/passwd', weirdString(r)]);
          what += ` ${id} ${path}`;
          res = r() < 0.4 ? await raw('GET', `/sdapi/v1/train/jobs/${id}/files`) : await raw('GET', `/sdapi/v1/train/jobs/${id}/file?path=${enc(path)}`);
          break;
        }
        case 'llm': {
          const chat = r() < 0.5;
          const b = llmBody(r, chat);
          what += ` ${JSON.stringify(b).slice(0, 300)}`;
          res = await raw('POST', chat ? '/v1/chat/completions' : '/v1/completions', b);
          break;
        }
        case 'upload':
          res = await multipartCase(r);
          break;
        case 'raw-json':
          res = await json('POST', pick(r, ['/sdapi/v1/txt2img', '/sdapi/v1/img2img', '/sdapi/v1/train/dry-run', '/sdapi/v1/png-info']), pick(r, ['{', '[]', 'null', '"x"', '{"prompt": "\\ud800"}', '{"a":'.repeat(200), '1e999', '{"steps": 1e999}']), true);
          break;
        default: {
          // Two clients racing for one task id: the second is refused, never aliased.
          const id = `task(fuzz-${n})`;
          const [a, b] = await Promise.all([json('POST', '/sdapi/v1/txt2img', { ...CANARY, force_task_id: id }), json('POST', '/sdapi/v1/txt2img', { ...CANARY, force_task_id: id })]);
          res = a.status >= b.status ? a : b;
          // Both may be refused alike while an options case beside them has set an invalid value (set back before the canary).
          const refusedAlike = a.status === 422 && JSON.stringify(a.body) === JSON.stringify(b.body);
          if (![a.status, b.status].includes(200) && !refusedAlike) failures.push(`${what}: neither request ran (${a.status}, ${b.status})`);
        }
      }
    } catch (e) {
      failures.push(`${what}: ${(e as Error).message}`);
      return;
    }
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (res.status < 300) accepted[kind] = (accepted[kind] ?? 0) + 1;
    if (res.status >= 500) failures.push(`${what} → ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
  };

  let cases = 0;
  while (cases < CASES && Date.now() - started < TIME_LIMIT_MS) {
    // A batch of cases four at a time, then the canary: the server must still give the known image.
    const batch = Array.from({ length: Math.min(48, CASES - cases) }, (_, i) => cases + i);
    cases += batch.length;
    const lanes = [0, 1, 2, 3].map(async (lane) => {
      for (let i = lane; i < batch.length; i += 4) await runCase(batch[i]!);
    });
    await Promise.all(lanes);
    // Options are the server's state: what the cases set is set back before the known request.
    const now = (await t.get('/sdapi/v1/options')).body as Record<string, unknown>;
    const changed = Object.fromEntries(OPTION_KEYS.filter((k) => k in optionsBefore && JSON.stringify(now[k]) !== JSON.stringify(optionsBefore[k])).map((k) => [k, optionsBefore[k]]));
    if (Object.keys(changed).length) {
      const back = await json('POST', '/sdapi/v1/options', changed);
      if (back.status !== 200) failures.push(`after case ${cases}: options could not be set back (${back.status} ${JSON.stringify(back.body).slice(0, 200)})`);
    }
    const c = await json('POST', '/sdapi/v1/txt2img', CANARY);
    if (c.status !== 200 || (c.body as { images: string[] }).images[0] !== canaryImage) failures.push(`after case ${cases}: the canary request changed (${c.status})`);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(`fuzz: seed ${SEED}, ${cases} cases in ${seconds.toFixed(1)} s, ${failures.length} failures, peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB; kinds ${JSON.stringify(byKind)}; accepted (2xx) ${JSON.stringify(accepted)}; statuses ${JSON.stringify(statuses)}`);
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} failing cases`);
  assert.ok(cases >= Math.min(CASES, 2000), `only ${cases} cases ran in ${TIME_LIMIT_MS / 1000} s`);
  assert.ok((statuses[200] ?? 0) > cases / 20, 'enough cases got through validation to exercise the generation path');
});
