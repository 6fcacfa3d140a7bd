/**
 * The extension's tab in a real Chromium: a page standing in for A1111 (another origin, dark theme, A1111's
 * image button row) holds the tab's HTML from plugin/lora_scripts_ext/tab.py and plugin/javascript/lora_scripts.js.
 * The lora-scripts page loads in the frame from a real server with A1111's theme, the send button lands in the
 * row and drives the extension's hidden Gradio button, and a server that is down is explained, not blank.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { repoRoot } from './support/paths.ts';

const CHROMIUM = '/usr/bin/chromium';
let t: TestServer;
let browser: Browser;

function tabHtml(url: string): string {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import sys; sys.path.insert(0, "plugin"); from lora_scripts_ext.tab import tab_html; print(tab_html(sys.argv[1]))', url], { cwd: repoRoot, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

/** A stand-in for A1111's page on its own origin: the tab, A1111's button row and the extension's hidden button. */
async function a1111Page(tab: string): Promise<{ url: string; close: () => Promise<void> }> {
  const js = await readFile(join(repoRoot, 'plugin/javascript/lora_scripts.js'), 'utf8');
  const page = `<!doctype html><html><body class="dark"><div id="tabs">${tab}</div>
<div id="image_buttons_txt2img" class="image-buttons"><button id="txt2img_send_to_img2img">🖼️</button></div>
<button id="lora_scripts_send_txt2img" style="display:none" onclick="window.sent=(window.sent||0)+1">hidden</button>
<script src="/javascript/lora_scripts.js"></script></body></html>`;
  const server: Server = createServer((req, res) => {
    if (req.url === '/javascript/lora_scripts.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else res.writeHead(200, { 'content-type': 'text/html' }).end(page);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/`, close: () => new Promise((r) => server.close(() => r())) };
}

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  t = await startTestServer({ loadOnStart: false });
  // playwright gives each launch a fresh, temporary profile.
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => {
  await browser?.close();
  await t?.close();
});

test("the tab shows the server's page in A1111's theme; the send button drives the hidden Gradio button", async () => {
  const host = await a1111Page(tabHtml(t.server.url));
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    await page.goto(host.url);
    const frameUrl = () => page.frames().find((f) => f.url().startsWith(t.server.url))?.url() ?? '';
    await page.waitForFunction(() => (document.querySelector('#lora_scripts_frame') as HTMLIFrameElement | null)?.src.includes('theme=dark'));
    const deadline = Date.now() + 20_000;
    while (!frameUrl().includes('theme=dark') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.match(frameUrl(), /\?embed=a1111&theme=dark(#.*)?$/);
    const frame = page.frames().find((f) => f.url().startsWith(t.server.url))!;
    await frame.waitForLoadState('load');
    // The frame holds lora-scripts' own page (served by the server at `/`), not an error page.
    const served = await fetch(`${t.server.url}/`);
    assert.equal(served.status, 200);
    const title = /<title>([^<]*)<\/title>/.exec(await served.text())?.[1] ?? '';
    assert.ok(title, 'the server page has a title');
    assert.equal(await frame.title(), title);
    // The page took A1111's theme.
    assert.equal(await frame.evaluate(() => document.documentElement.dataset['theme']), 'dark');
    assert.equal(await page.isVisible('#lora_scripts_frame_note'), false);

    await page.click('#image_buttons_txt2img .lora-scripts-send');
    assert.equal(await page.evaluate(() => (window as unknown as { sent?: number }).sent), 1);
    // Updates must not add a second button.
    assert.equal(await page.locator('#image_buttons_txt2img .lora-scripts-send').count(), 1);
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await host.close();
  }
});

test('a server that is down: the tab says how to start it', async () => {
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as { port: number }).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const host = await a1111Page(tabHtml(`http://127.0.0.1:${port}`));
  const page = await browser.newPage();
  try {
    await page.goto(host.url);
    await page.waitForSelector('#lora_scripts_frame_note', { state: 'visible', timeout: 15_000 });
    assert.match(await page.textContent('#lora_scripts_frame_note') ?? '', new RegExp(`lora-scripts serve --port ${port}`));
    assert.equal(await page.isVisible('#lora_scripts_frame'), false);
  } finally {
    await page.close();
    await host.close();
  }
});
