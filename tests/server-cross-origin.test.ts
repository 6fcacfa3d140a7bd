/**
 * A real Chromium page on another origin (http://localhost:<other port>) tries to drive the server at
 * http://127.0.0.1:<port> the way a drive-by page would: simple no-cors POSTs that need no preflight
 * (unload the checkpoint, interrupt), a JSON POST, and a socket.io WebSocket for live progress. Without
 * --cors-allow-origins all of it is refused and nothing changes on the server; with the page's origin
 * allowed, the same page works — so the refusals are the origin check's doing. A page the server serves
 * itself (its own origin) keeps working.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer as createHttp, type Server } from 'node:http';
import { chromium, type Browser } from 'playwright-core';
import { FixtureBackend, startTestServer, type TestServer } from './server-fixture-backend.ts';

const CHROMIUM = '/usr/bin/chromium';
let browser: Browser;
let pages: Server;
let pagesOrigin: string;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (.ci/run does)`);
  // playwright gives each launch a fresh, temporary profile (its own --user-data-dir).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  // The "other site": a blank page on another origin.
  pages = createHttp((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>elsewhere</title>');
  });
  await new Promise<void>((r) => pages.listen(0, '127.0.0.1', () => r()));
  pagesOrigin = `http://localhost:${(pages.address() as { port: number }).port}`;
});
after(async () => {
  await browser?.close();
  await new Promise((r) => pages?.close(r));
});

/** What a page at `pageUrl` manages to do against the server at `api`. */
async function attack(pageUrl: string, api: string) {
  const page = await browser.newPage();
  try {
    await page.goto(pageUrl);
    return await page.evaluate(async (api) => {
      const out: Record<string, unknown> = {};
      // Simple requests: no preflight, the browser sends them and only hides the answer.
      await fetch(`${api}/sdapi/v1/unload-checkpoint`, { method: 'POST', mode: 'no-cors' }).catch(() => {});
      try {
        const r = await fetch(`${api}/sdapi/v1/options`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ samples_format: 'jpg' }) });
        out['options'] = r.status;
      } catch (e) {
        out['options'] = `blocked: ${(e as Error).message}`;
      }
      try {
        const r = await fetch(`${api}/sdapi/v1/samplers`);
        out['samplers'] = r.status;
      } catch (e) {
        out['samplers'] = `blocked: ${(e as Error).message}`;
      }
      out['websocket'] = await new Promise((resolve) => {
        const ws = new WebSocket(`${api.replace('http', 'ws')}/socket.io/?EIO=4&transport=websocket`);
        ws.onmessage = (m) => {
          resolve(`open: ${String(m.data).slice(0, 1)}`);
          ws.close();
        };
        ws.onerror = () => resolve('refused');
        setTimeout(() => resolve('timeout'), 5000);
      });
      return out;
    }, api);
  } finally {
    await page.close();
  }
}

async function server(extra: { corsAllowOrigins?: string[] } = {}): Promise<TestServer> {
  return startTestServer({ withModel: true, backend: new FixtureBackend(), ...extra });
}

test('a page of another origin cannot unload the model, change options, read the API or open socket.io', async () => {
  const t = await server();
  try {
    await t.post('/sdapi/v1/reload-checkpoint');
    assert.ok(t.server.ctx.backend.currentCheckpoint());
    const got = await attack(pagesOrigin + '/', t.server.url);
    assert.match(String(got['options']), /^blocked/);
    assert.match(String(got['samplers']), /^blocked/);
    assert.equal(got['websocket'], 'refused');
    assert.ok(t.server.ctx.backend.currentCheckpoint(), 'the no-cors POST did not unload the checkpoint');
    assert.equal((await t.get('/sdapi/v1/options')).body.samples_format, 'png');

    // The server's own pages (here its /docs page) keep working from their own origin.
    const own = await attack(`${t.server.url}/docs`, t.server.url);
    assert.equal(own['samplers'], 200);
    assert.equal(own['options'], 200);
    assert.equal(own['websocket'], 'open: 0', 'socket.io answers its open packet');
    assert.equal(t.server.ctx.backend.currentCheckpoint(), null, 'from its own origin the same POST does unload');
  } finally {
    await t.close();
  }
});

test('with --cors-allow-origins naming the page, the same page may drive the server', async () => {
  const t = await server({ corsAllowOrigins: [pagesOrigin] });
  try {
    await t.post('/sdapi/v1/reload-checkpoint');
    const got = await attack(pagesOrigin + '/', t.server.url);
    assert.equal(got['samplers'], 200);
    assert.equal(got['options'], 200);
    assert.equal(got['websocket'], 'open: 0');
    assert.equal(t.server.ctx.backend.currentCheckpoint(), null);
    assert.equal((await t.get('/sdapi/v1/options')).body.samples_format, 'jpg');
  } finally {
    await t.close();
  }
});
