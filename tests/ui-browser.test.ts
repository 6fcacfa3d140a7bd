/**
 * The browser UI end to end in real Chromium against a real server on loopback with the engine backend and
 * the bundled demo model, as `npm start` serves it with an empty checkpoint folder — the seed's workflow:
 * make a dataset by upload and edit a caption into metadata.csv, train a short run and watch the loss chart
 * fill until it is done, cancel and resume a second run, then generate with the new LoRAs added from the
 * picker and stacked (tag, slider, image and infotext checked against the API); inpainting, interrupt,
 * png-info, models; sign-in under --api-auth; a phone-sized screen; no console errors.
 * LORA_SCRIPTS_UI_SCREENSHOTS=<dir> keeps a screenshot per tab (docs/images holds the README's).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import type { Page } from 'playwright-core';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { DEMO_MODEL, DEMO_RESOLUTION, DEMO_STRIPES_DIR } from '../engine/demo/demo-model.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { launchChromium, type TestBrowser } from './support/browser.ts';

let t: TestServer;
let b: TestBrowser;
let page: Page;
let files: string;
const problems: string[] = [];
const shots = process.env['LORA_SCRIPTS_UI_SCREENSHOTS'] ? resolve(process.env['LORA_SCRIPTS_UI_SCREENSHOTS']) : null;

function watch(p: Page): Page {
  p.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()}`));
  p.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  return p;
}

async function shot(name: string): Promise<void> {
  if (!shots) return;
  await mkdir(shots, { recursive: true });
  await page.screenshot({ path: join(shots, `ui-${name}.png`) });
}

before(async () => {
  // As `serve` does when models/Stable-diffusion is empty: the bundled demo model is the checkpoint.
  t = await startTestServer({ fallbackCheckpoint: DEMO_MODEL });
  assert.equal((await t.post('/sdapi/v1/reload-checkpoint')).status, 200);
  files = await mkdtemp(join(tmpdir(), 'lora-scripts-ui-files-'));
  b = await launchChromium();
  page = watch(await b.browser.newPage());
  await page.goto(`${t.server.url}/`);
  await page.locator('#tab-generate[aria-selected=true]').waitFor();
});
after(
  async () => {
    await b?.close();
    await t?.close();
    if (files) await rm(files, { recursive: true, force: true });
  },
  { timeout: 60_000 },
);

test('the page and its bundle are served at / without credentials, offline (no outside URLs)', async () => {
  const html = await (await fetch(`${t.server.url}/`)).text();
  assert.match(html, /<script src="ui\/app\.js"><\/script>/);
  const js = await fetch(`${t.server.url}/ui/app.js`);
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type') ?? '', /javascript/);
  assert.doesNotMatch(html + (await (await fetch(`${t.server.url}/ui/app.css`)).text()), /https?:\/\/(?!www\.w3\.org)/);
});







test('datasets: upload images, edit a caption in place, see it in metadata.csv; bulk trigger prefix', async () => {
  await page.click('#tab-datasets');
  // Four of the demo's striped scenes with their rows of its metadata.csv.
  const source = await readCaptionTable(join(DEMO_STRIPES_DIR, 'metadata.csv'));
  const rows = source.rows.slice(0, 4);
  const original = new Map(rows.map((r) => [r.fileName, r.caption]));
  const upload: [string, Buffer][] = [];
  for (const r of rows) upload.push([r.fileName, await readFile(join(DEMO_STRIPES_DIR, r.fileName))]);
  const paths = upload.map(([n]) => join(DEMO_STRIPES_DIR, n));
  await writeFile(join(files, 'metadata.csv'), `file_name,text\n${rows.map((r) => `${r.fileName},"${r.caption}"`).join('\n')}\n`);
  paths.push(join(files, 'metadata.csv'));
  await page.fill('#dataset-name', 'disks');
  await page.locator('#dataset-files').setInputFiles(paths);
  await page.locator('.caption-cell').nth(upload.length - 1).waitFor({ timeout: 30_000 });
  const keys = await page.locator('.caption-cell').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset['key']));
  assert.equal(keys.length, upload.length, 'every image is in the grid');
  const first = keys[0]!;
  await page.locator(`textarea.caption[data-key="${first}"]`).fill('a red disk, dark background');
  assert.match(await page.textContent('#dirty-count') ?? '', /^1 /);
  await page.click('#save-captions');
  await page.locator('#dataset-status', { hasText: 'metadata.csv' }).waitFor();
  const table = await readCaptionTable(join(t.dataDir, 'datasets/disks/metadata.csv'));
  const byFile = new Map(table.rows.map((r) => [r.fileName, r.caption]));
  assert.equal(byFile.get(first), 'a red disk, dark background');
  for (const k of keys.slice(1)) assert.equal(byFile.get(k!), original.get(k!), 'the other captions are kept');
  assert.deepEqual(table.columns, ['file_name', 'text'], 'the table keeps its columns');

  await page.fill('#trigger', 'sks');
  await page.click('#prefix-all');
  await page.click('#save-captions');
  await page.locator('#save-captions:disabled').waitFor();
  const after = await readCaptionTable(join(t.dataDir, 'datasets/disks/metadata.csv'));
  assert.deepEqual(after.rows.map((r) => r.caption.split(', ')[0]), keys.map(() => 'sks'));
  assert.equal(after.rows.find((r) => r.fileName === first)?.caption, 'sks, a red disk, dark background');
  assert.match(await page.textContent('#tag-counts') ?? '', new RegExp(`sks\\s*${keys.length}`));

  // No captioning model in this data dir: auto-labelling says so instead of failing.
  await page.click('#auto-label');
  await page.locator('#label-status[data-state=no-model]').waitFor();

  // The trainer's bucket and crop for each image.
  await page.check('#show-buckets');
  await page.locator('.bucket-label').first().waitFor();
  await shot('datasets');

  // A kohya folder (`N_name` sub-folder, .txt sidecars) chosen as a folder: zipped in the page, structure kept.
  const folder = join(files, 'kohya_set', '3_disk');
  await mkdir(folder, { recursive: true });
  for (const [n, data] of upload.slice(0, 2)) {
    await writeFile(join(folder, n), data);
    await writeFile(join(folder, n.replace(/\.png$/, '.txt')), `stripes ${n}\n`);
  }
  await page.fill('#dataset-name', '');
  await page.locator('#dataset-folder').setInputFiles(join(files, 'kohya_set'));
  await page.locator('.caption-cell[data-key^="3_disk/"]').nth(1).waitFor({ timeout: 30_000 });
  const kohya = (await t.get('/sdapi/v1/train/datasets/kohya_set/items')).body.items as { key: string; repeats: number; caption_source: string; caption: string }[];
  assert.deepEqual(kohya.map((i) => [i.key, i.repeats, i.caption_source, i.caption]), upload.slice(0, 2).map(([n]) => [`3_disk/${n}`, 3, 'sidecar', `stripes ${n}`]));

  // Deleting asks first.
  page.once('dialog', (d) => void d.accept());
  await page.click('[aria-label="Delete kohya_set"]');
  await page.locator('.dataset-list li[data-name="kohya_set"]').waitFor({ state: 'detached' });
  assert.deepEqual(((await t.get('/sdapi/v1/train/datasets')).body as { name: string }[]).map((d) => d.name), ['disks']);
});

test('train: the form checks the config as it is typed, the run fills the loss chart and finishes; its LoRA goes to Generate', async () => {
  await page.click('#tab-train');
  await page.locator('#cfg-lora_rank').waitFor();
  await page.selectOption('#cfg-train_data_dir', 'datasets/disks');
  await page.fill('#cfg-lora_rank', '0');
  await page.locator('#err-lora_rank', { hasText: 'lora_rank' }).waitFor({ timeout: 30_000 });
  const settings: [string, string][] = [['lora_rank', '4'], ['lora_alpha', '4'], ['resolution', String(DEMO_RESOLUTION)], ['epochs', '2'], ['batch_size', '2'], ['learning_rate', '0.002'], ['output_name', 'stripes_ui']];
  for (const [k, v] of settings) await page.fill(`#cfg-${k}`, v);
  await page.click('#expand-all');
  await page.locator('#cfg-train_text_encoder').uncheck();
  await page.locator('#cfg-enable_bucket').uncheck();
  await page.locator('#config-check .ok').waitFor({ timeout: 30_000 });
  assert.equal(await page.textContent('#err-lora_rank'), '');
  const plan = Number(/· (\d+) /.exec((await page.textContent('#config-check .ok'))!)![1]);
  assert.ok(plan > 0);

  // YAML out and back in: the same keys as `lora-scripts train --config`.
  const dl = page.waitForEvent('download');
  await page.click('#save-yaml');
  const saved = parseYaml(await readFile((await (await dl).path())!, 'utf8')) as Record<string, unknown>;
  assert.equal(saved['output_name'], 'stripes_ui');
  assert.equal(saved['lora_rank'], 4);
  assert.equal(saved['train_data_dir'], 'datasets/disks');
  const yamlFile = join(files, 'in.yaml');
  await writeFile(yamlFile, stringifyYaml({ ...saved, sample_prompts: [{ prompt: 'a red star on a blue background', steps: 3 }] }));
  await page.locator('#yaml-file').setInputFiles(yamlFile);
  await page.locator('#cfg-sample_prompts').waitFor();
  assert.match(await page.inputValue('#cfg-sample_prompts'), /prompt: a red star/);
  assert.equal(await page.inputValue('#cfg-lora_rank'), '4');
  await page.locator('#config-check .ok').waitFor({ timeout: 30_000 });

  await page.click('#start-training');
  await page.locator('#run-info .status[data-status=done]').waitFor({ timeout: 120_000 });
  const points = Number(await page.locator('.loss-chart').getAttribute('data-points'));
  const jobs = (await t.get('/sdapi/v1/train/jobs')).body as { id: string; output_name: string; status: string; total_steps: number }[];
  const job = jobs.find((j) => j.output_name === 'stripes_ui')!;
  assert.equal(job.status, 'done');
  assert.equal(job.total_steps, plan, 'the run did the steps the form announced');
  assert.equal(points, plan, 'one chart point per optimizer step');
  await page.locator('#run-files li').first().waitFor({ state: 'attached' });
  await page.locator('#samples img').first().waitFor({ timeout: 30_000 });
  const listed = (await t.get(`/sdapi/v1/train/jobs/${job.id}/files`)).body as { path: string; size: number }[];
  const lora = listed.find((f) => f.path.endsWith('.safetensors'))!;
  const got = await fetch(`${t.server.url}/sdapi/v1/train/jobs/${job.id}/file?path=${encodeURIComponent(lora.path)}`);
  assert.equal(got.status, 200);
  assert.equal((await got.arrayBuffer()).byteLength, lora.size);
  assert.equal((await t.get(`/sdapi/v1/train/jobs/${job.id}/file?path=${encodeURIComponent('../../config.json')}`)).status, 422);
  await shot('train');
  await page.click('#use-lora');
  await page.locator('#tab-generate[aria-selected=true]').waitFor();
  assert.match(await page.inputValue('#prompt'), /<lora:stripes_ui:1>/);

});

test('train: cancel a run, then resume it from its saved state to the end', async () => {
  await page.click('#tab-train');
  await page.fill('#cfg-epochs', '3');
  await page.fill('#cfg-batch_size', '1');
  await page.fill('#cfg-output_name', 'stripes_resume');
  await page.fill('#cfg-sample_prompts', '');
  await page.locator('#config-check .ok').waitFor({ timeout: 30_000 });
  await page.click('#start-training');
  await page.waitForFunction(
    () => document.querySelector('#run-info strong')?.textContent?.trim() === 'stripes_resume' && Number(document.querySelector('.loss-chart')?.getAttribute('data-points')) >= 2,
    undefined,
    { timeout: 60_000 },
  );
  await page.click('#cancel-run');
  await page.locator('#run-info .status[data-status=cancelled]').waitFor({ timeout: 60_000 });
  const cancelled = ((await t.get('/sdapi/v1/train/jobs')).body as any[]).find((j) => j.output_name === 'stripes_resume' && j.status === 'cancelled');
  const detail = (await t.get(`/sdapi/v1/train/jobs/${cancelled.id}`)).body;
  assert.ok(detail.outputs.last_state, 'the cancelled run saved a state');
  await page.click('#resume-run');
  // The new run starts where the state left off: its first step is past the cancelled run's.
  await page.waitForFunction(
    (id) => {
      const job = (document.querySelector('#run-info') as HTMLElement | null)?.dataset['job'];
      return !!job && job !== id && Number(document.querySelector('.loss-chart')?.getAttribute('data-points')) >= 1;
    },
    cancelled.id,
    { timeout: 60_000 },
  );
  const resumed = ((await t.get('/sdapi/v1/train/jobs')).body as any[]).find((j) => j.output_name === 'stripes_resume' && j.id !== cancelled.id);
  const rd = (await t.get(`/sdapi/v1/train/jobs/${resumed.id}`)).body;
  assert.equal(rd.config.resume_from, detail.outputs.last_state);
  assert.ok(rd.loss_history[0].step > detail.loss_history[0].step, 'the resumed run continues the step count');
  await page.locator('#run-info .status[data-status=done]').waitFor({ timeout: 120_000 });
  assert.equal(((await t.get(`/sdapi/v1/train/jobs/${resumed.id}`)).body as any).step, detail.total_steps, 'the resumed run went to the planned end');
});

test('generate: the new LoRAs added from the picker and stacked; tag, slider and completion; the image matches the API', async () => {
  await page.click('#tab-generate');
  // Width and height start at the active checkpoint's trained size, which sd-models reports from its config.
  const listed = (await t.get('/sdapi/v1/sd-models')).body as { resolution: number | null }[];
  assert.deepEqual(listed.map((m) => m.resolution), [DEMO_RESOLUTION]);
  await page.waitForFunction((size) => (document.querySelector('#width') as HTMLInputElement | null)?.value === String(size), DEMO_RESOLUTION);
  assert.equal(await page.inputValue('#height'), String(DEMO_RESOLUTION));
  const name = 'stripes_ui';
  const second = 'stripes_resume';
  await page.locator(`.lora-card[data-lora="${second}"]`).waitFor();
  await page.fill('#prompt', 'a cat');
  await page.locator(`.lora-card[data-lora="${name}"] .add-lora`).click();
  assert.equal(await page.inputValue('#prompt'), `a cat, <lora:${name}:1>`);
  await page.locator(`input[data-lora-weight="${name}"]`).fill('0.8');
  assert.equal(await page.inputValue('#prompt'), `a cat, <lora:${name}:0.8>`);
  // Typing a weight in the text moves the slider.
  await page.fill('#prompt', `a cat, <lora:${name}:0.6>`);
  assert.equal(await page.inputValue(`input[data-lora-weight="${name}"]`), '0.6');
  // `<lora:` completion offers the LoRA names.
  await page.fill('#prompt', 'a cat, <lora:');
  await page.locator('#prompt').press('End');
  await page.locator('#prompt').pressSequentially(name.slice(0, 2));
  await page.locator('#prompt-completions li', { hasText: name }).first().waitFor();
  await page.locator('#prompt').press('Escape');
  await page.fill('#prompt', `a red star on a blue background, <lora:${name}:0.8>`);
  assert.equal(await page.locator('#prompt').evaluate((el) => el.parentElement!.querySelector('.hl-lora')?.textContent), `<lora:${name}:0.8>`);
  // The second LoRA stacked on the first.
  await page.locator(`.lora-card[data-lora="${second}"] .add-lora`).click();
  const prompt = `a red star on a blue background, <lora:${name}:0.8>, <lora:${second}:1>`;
  assert.equal(await page.inputValue('#prompt'), prompt);

  const params = { steps: 8, width: DEMO_RESOLUTION, height: DEMO_RESOLUTION, seed: 11, cfg_scale: 7 };
  await page.fill('#steps', String(params.steps));
  await page.fill('#width', String(params.width));
  await page.fill('#height', String(params.height));
  await page.fill('#seed', String(params.seed));
  await page.selectOption('#sampler', 'Euler');
  await page.click('#generate');
  const img = page.locator('#gallery img').first();
  await img.waitFor({ timeout: 60_000 });
  const src = (await img.getAttribute('src'))!;
  const png = Buffer.from(src.replace(/^data:image\/png;base64,/, ''), 'base64');
  const meta = await sharp(png).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', params.width, params.height]);
  const info = await page.textContent('#infotext');
  assert.ok(info!.startsWith(prompt), info!);
  assert.match(info!, new RegExp(`Lora hashes: "${name}: [0-9a-f]{12}, ${second}: [0-9a-f]{12}"`));
  assert.match(info!, /Seed: 11,/);
  // The same request through the API gives the same pixels: the page sent what it showed.
  const api = await t.post('/sdapi/v1/txt2img', { prompt, negative_prompt: '', sampler_name: 'Euler', scheduler: 'Automatic', ...params });
  assert.equal(api.status, 200, JSON.stringify(api.body));
  const [a, c] = await Promise.all([sharp(png).raw().toBuffer(), sharp(Buffer.from(api.body.images[0], 'base64')).raw().toBuffer()]);
  assert.ok(a.equals(c), 'the UI image equals the API image for the same parameters');
  const stats = await sharp(png).stats();
  assert.ok(stats.channels.some((ch) => ch.stdev > 1), 'the image is not flat');
  await shot('generate');

  // Send to inpaint, paint a mask in the middle: outside it the image keeps its pixels (A1111's overlay).
  await page.click('text=Send to inpaint');
  assert.equal(await page.inputValue('#mode'), 'inpaint');
  const canvas = page.locator('canvas.mask-canvas');
  await page.waitForFunction(() => (document.querySelector('canvas.mask-canvas') as HTMLCanvasElement).width > 0);
  const box = (await canvas.boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.4, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.6, box.y + box.height * 0.5, { steps: 5 });
  await page.mouse.up();
  await page.fill('#denoise', '0.6');
  await page.click('#generate');
  await page.locator('#gallery img').nth(1).waitFor({ timeout: 60_000 });
  assert.match((await page.textContent('#infotext'))!, /Denoising strength: 0\.6/);
  const out = Buffer.from((await page.locator('#gallery img').first().getAttribute('src'))!.split(',')[1]!, 'base64');
  const [orig, inpainted] = await Promise.all([sharp(png).raw().toBuffer(), sharp(out).raw().toBuffer()]);
  assert.deepEqual([...inpainted.subarray(0, 3)], [...orig.subarray(0, 3)], 'a corner outside the mask is unchanged');
  assert.ok(!orig.equals(inpainted), 'the masked part changed');
  await page.selectOption('#mode', 'txt2img');

  // A long run shows the server's progress and live previews, and Interrupt ends it early with an image.
  const long = 400;
  await page.fill('#steps', String(long));
  await page.click('#generate');
  await page.locator('.live-preview:not([hidden])').waitFor({ timeout: 60_000 });
  assert.match((await page.textContent('#gen-progress-text'))!, new RegExp(`/${long}`));
  const stoppedAt = Date.now();
  await page.click('#interrupt');
  await page.locator('#gallery img').nth(2).waitFor({ timeout: 60_000 });
  const note = await page.locator('.toast', { hasText: 'Interrupted' }).textContent({ timeout: 10_000 });
  const [done, total] = /(\d+)\/(\d+)/.exec(note!)!.slice(1).map(Number);
  assert.equal(total, long);
  assert.ok(done! < long, `stopped at step ${done} of ${long}`);
  assert.ok(Date.now() - stoppedAt < 20_000);
  await page.fill('#steps', String(params.steps));
});

test('png info: a dropped PNG shows its infotext and fills the form', async () => {
  const src = (await page.locator('#gallery img').first().getAttribute('src'))!;
  const file = join(files, 'drop.png');
  await writeFile(file, Buffer.from(src.split(',')[1]!, 'base64'));
  await page.fill('#seed', '-1');
  await page.locator('#png-drop input[type=file]').setInputFiles(file);
  await page.locator('.png-info-out pre').waitFor();
  await page.locator('.png-info-out button').click();
  assert.equal(await page.inputValue('#seed'), '11');
});

test('models: checkpoints with the active one, LoRAs with metadata (the trained one included)', async () => {
  await page.click('#tab-models');
  await page.locator('#checkpoint-list .badge').waitFor();
  await page.locator('#lora-list [data-lora="stripes_ui"]').waitFor();
  await page.locator('#lora-list [data-lora="stripes_ui"] summary').click();
  await page.locator('#lora-list [data-lora="stripes_ui"] .lora-details div').waitFor();
  assert.match(await page.textContent('#lora-list [data-lora="stripes_ui"] .lora-details') ?? '', /rank 4/);
  await shot('models');
  // Upload a LoRA from the page: it joins the list.
  const copy = join(files, 'uploaded_ui.safetensors');
  await writeFile(copy, await readFile(join(t.dataDir, 'models/Lora/stripes_ui.safetensors')));
  await page.locator('#lora-upload').setInputFiles(copy);
  await page.locator('#lora-list [data-lora="uploaded_ui"]').waitFor();
  // A second checkpoint: switching makes it the active one.
  await symlink(DEMO_MODEL, join(t.dataDir, 'models/Stable-diffusion/other.safetensors'));
  await page.click('#refresh-checkpoints');
  await page.locator('#checkpoint-list [data-model="other"] button').click();
  await page.locator('#checkpoint-list [data-model="other"] .badge').waitFor({ timeout: 60_000 });
  assert.deepEqual(problems, [], 'no console errors');
});

test('a phone-sized screen shows every tab without sideways scrolling; 中文 by browser language', async () => {
  const phone = await launchChromium({ locale: 'zh-CN', viewport: { width: 390, height: 844 } });
  try {
    const p = watch(await phone.browser.newPage());
    await p.goto(`${t.server.url}/`);
    await p.locator('#tab-generate[aria-selected=true]').waitFor();
    assert.equal(await p.textContent('#tab-datasets'), '数据集');
    // Tabs are reachable by keyboard: arrows move between them.
    await p.focus('#tab-generate');
    await p.keyboard.press('ArrowRight');
    await p.locator('#tab-datasets[aria-selected=true]').waitFor();
    assert.equal(await p.evaluate(() => document.activeElement?.id), 'tab-datasets');
    for (const tab of ['generate', 'datasets', 'train', 'models']) {
      await p.click(`#tab-${tab}`);
      await p.waitForTimeout(150);
      const over = await p.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(over <= 0, `${tab}: ${over}px wider than the screen`);
    }
    await p.selectOption('#lang', 'en');
    await p.locator('#tab-datasets', { hasText: 'Datasets' }).waitFor();
    // ?theme= overrides the system theme (for pages that embed this one).
    await p.goto(`${t.server.url}/?theme=dark`);
    await p.locator('#tab-generate[aria-selected=true]').waitFor();
    const [light, dark] = await p.evaluate(() => {
      const bg = getComputedStyle(document.body).backgroundColor;
      document.documentElement.dataset['theme'] = 'light';
      return [getComputedStyle(document.body).backgroundColor, bg];
    });
    assert.notEqual(dark, light);
    assert.ok(dark.match(/\d+/g)!.slice(0, 3).every((c) => Number(c) < 60), `dark background: ${dark}`);
  } finally {
    await phone.close();
  }
  assert.deepEqual(problems, [], 'no console errors');
});

test('with --api-auth the page asks for credentials and then works', async () => {
  const s = await startTestServer({ apiAuth: 'alice:s3cret', loadOnStart: false });
  const p = watch(await b.browser.newPage());
  try {
    await p.goto(`${s.server.url}/`);
    await p.locator('#login').waitFor();
    await p.fill('#login-user', 'alice');
    await p.fill('#login-pass', 'wrong');
    await p.locator('#login button[type=submit]').click();
    await p.locator('#login .error', { hasText: /wrong/i }).waitFor();
    await p.fill('#login-pass', 's3cret');
    await p.locator('#login button[type=submit]').click();
    await p.locator('#tab-generate[aria-selected=true]').waitFor();
    await p.locator('#sampler option').first().waitFor({ state: 'attached' });
  } finally {
    await p.close();
    await s.close();
  }
  // The wrong password's 401 is the only console message allowed here.
  assert.deepEqual(problems.filter((m) => !/401/.test(m)), []);
});
