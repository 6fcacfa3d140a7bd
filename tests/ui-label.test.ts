/**
 * The browser UI's auto-label button in real Chromium, against a real server whose models/CLIP holds the
 * clip-tiny model: open an uploaded dataset, click Auto-label, see the job finish, and find a caption for
 * every image in metadata.csv (hand-written ones kept, as the default mode promises).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { readCaptionTable } from '../engine/train/caption-table.ts';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { upload } from './server-train-support.ts';
import { launchChromium, type TestBrowser } from './support/browser.ts';
import { fixturesDir } from './support/paths.ts';

const clip = join(fixturesDir, 'clip-tiny');
const images = ['photo_rgb.png', 'sticker_rgba.png', 'scan_grey.png'];
let t: TestServer;
let b: TestBrowser;
let page: Page;
const problems: string[] = [];

before(async () => {
  t = await startTestServer();
  const m = join(t.dataDir, 'models/CLIP/clip-tiny');
  await mkdir(m, { recursive: true });
  for (const f of ['config.json', 'model.safetensors', 'preprocessor_config.json']) await symlink(join(clip, 'model', f), join(m, f));
  const files: [string, Uint8Array | string, string][] = [];
  for (const f of images) files.push([f, await readFile(join(clip, 'images', f)), 'image/png']);
  files.push(['metadata.csv', 'file_name,caption\nscan_grey.png,my own words\n', 'text/csv']);
  const up = await upload(t, 'shots', files);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  b = await launchChromium();
  page = await b.browser.newPage();
  page.on('console', (msg) => msg.type() === 'error' && problems.push(`console: ${msg.text()}`));
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(`${t.server.url}/`);
});
after(async () => {
  await b?.close();
  await t?.close();
});

test('Auto-label captions the missing images of a dataset through the labelling job', async () => {
  await page.click('#tab-datasets');
  await page.locator('.dataset-list li[data-name="shots"] button.link').click();
  await page.locator('.caption-cell').nth(images.length - 1).waitFor({ timeout: 30_000 });
  await page.click('#auto-label');
  await page.locator('#label-status', { hasText: /^done/ }).waitFor({ timeout: 60_000 });
  const table = await readCaptionTable(join(t.dataDir, 'datasets/shots/metadata.csv'));
  const byFile = new Map(table.rows.map((r) => [r.fileName, r.caption]));
  assert.equal(byFile.get('scan_grey.png'), 'my own words');
  for (const f of ['photo_rgb.png', 'sticker_rgba.png']) assert.ok((byFile.get(f) ?? '').length > 0, `${f} got a caption`);
  // The grid shows the new captions once the job is done.
  await page.waitForFunction((v) => (document.querySelector('textarea.caption[data-key="photo_rgb.png"]') as HTMLTextAreaElement | null)?.value === v, byFile.get('photo_rgb.png'));
  const jobs = (await t.get('/sdapi/v1/label/jobs')).body as { status: string; changed: number }[];
  assert.deepEqual(jobs.map((j) => [j.status, j.changed]), [['done', 2]]);
  assert.deepEqual(problems, []);
});
