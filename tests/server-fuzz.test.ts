/**
 * Seeded, time-bounded fuzzing of the live server (real HTTP, real multipart, real image decoding, the
 * fixture backend for the math): random JSON fields for txt2img/img2img, prompts built from the prompt
 * syntax's own characters, broken and hostile images, random training configs as JSON and YAML, multipart
 * dataset uploads with hostile names, zips and truncated bodies. Every answer must be below 500 and well
 * formed, the process must not crash, and a known request must still give the known answer after every
 * batch of cases. `LORA_SCRIPTS_FUZZ_SEED` / `LORA_SCRIPTS_FUZZ_CASES` override the seed and case count.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { zipSync } from 'fflate';
import sharp from 'sharp';
import { FixtureBackend, startTestServer, type TestServer } from './server-fixture-backend.ts';
import { patternFiles, upload } from './server-train-support.ts';
import { rng } from './support/random.ts';

const SEED = Number(process.env['LORA_SCRIPTS_FUZZ_SEED'] ?? 14);
const CASES = Number(process.env['LORA_SCRIPTS_FUZZ_CASES'] ?? 2016);
// A safety net for a very loaded machine; 2016 cases take 30–65 s on the development machine.
const TIME_LIMIT_MS = 240_000;

let t: TestServer;
let images: Record<string, Buffer>;

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

const CANARY = { prompt: 'canary [a:b:0.5]', steps: 2, width: 16, height: 8, seed: 42 };

test('fuzz: no 5xx, no crash, and a known request keeps its known answer', async () => {
  const reference = await json('POST', '/sdapi/v1/txt2img', CANARY);
  assert.equal(reference.status, 200);
  const canaryImage = (reference.body as { images: string[] }).images[0];
  const started = Date.now();
  const failures: string[] = [];
  const byKind: Record<string, number> = {};
  const statuses: Record<number, number> = {};
  let peakRss = process.memoryUsage().rss;

  // Each case draws from its own generator, so a case is the same whatever runs beside it.
  const runCase = async (n: number): Promise<void> => {
    const r = rng(SEED * 1_000_003 + n);
    const kind = pick(r, ['txt2img', 'txt2img', 'img2img', 'img2img', 'png-info', 'train', 'dry-run', 'upload', 'raw-json', 'task-id']);
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
          if (kind === 'train' && res.status === 202) await json('POST', `/sdapi/v1/train/jobs/${(res.body as { id: string }).id}/cancel`, {});
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
          if (![a.status, b.status].includes(200)) failures.push(`${what}: neither request ran (${a.status}, ${b.status})`);
        }
      }
    } catch (e) {
      failures.push(`${what}: ${(e as Error).message}`);
      return;
    }
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
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
    const c = await json('POST', '/sdapi/v1/txt2img', CANARY);
    if (c.status !== 200 || (c.body as { images: string[] }).images[0] !== canaryImage) failures.push(`after case ${cases}: the canary request changed (${c.status})`);
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }
  const seconds = (Date.now() - started) / 1000;
  console.log(`fuzz: seed ${SEED}, ${cases} cases in ${seconds.toFixed(1)} s, ${failures.length} failures, peak RSS ${(peakRss / 2 ** 20).toFixed(0)} MiB; kinds ${JSON.stringify(byKind)}; statuses ${JSON.stringify(statuses)}`);
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} failing cases`);
  assert.ok(cases >= Math.min(CASES, 2000), `only ${cases} cases ran in ${TIME_LIMIT_MS / 1000} s`);
  assert.ok((statuses[200] ?? 0) > cases / 20, 'enough cases got through validation to exercise the generation path');
});
