/**
 * The browser UI's build: one esbuild bundle of plugin/ui/src (TypeScript, uPlot, the socket.io client and
 * the CSS), kept in memory. The server builds it on the first request for the page, so a fresh clone needs
 * nothing beyond `npm ci && npm start`, and an edited source is picked up by restarting the server.
 * `npm run build:ui` writes the same files to plugin/ui/dist for hosts that serve them statically.
 */
import { readFile, mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join, dirname, basename } from 'node:path';
import { build } from 'esbuild';
import { writeBufferAtomic } from '../../engine/util/atomic-write.ts';

export interface UiFile {
  type: string;
  body: Buffer;
}

export const uiRoot = dirname(fileURLToPath(import.meta.url));

/** index.html, app.js and app.css, keyed by their path relative to the page. */
export async function buildUi(): Promise<Map<string, UiFile>> {
  const out = await build({
    entryPoints: { app: join(uiRoot, 'src/main.ts') },
    bundle: true,
    minify: true,
    format: 'iife',
    target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
    outdir: '/ui',
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
  });
  const files = new Map<string, UiFile>();
  for (const f of out.outputFiles) {
    const name = basename(f.path);
    files.set(`ui/${name}`, { type: name.endsWith('.css') ? 'text/css; charset=utf-8' : 'text/javascript; charset=utf-8', body: Buffer.from(f.contents) });
  }
  files.set('index.html', { type: 'text/html; charset=utf-8', body: await readFile(join(uiRoot, 'index.html')) });
  return files;
}

let cached: Promise<Map<string, UiFile>> | null = null;

/** The bundle, built once per process (a failed build is retried on the next request). */
export function uiFiles(): Promise<Map<string, UiFile>> {
  cached ??= buildUi().catch((e: unknown) => {
    cached = null;
    throw e;
  });
  return cached;
}

async function main(): Promise<void> {
  const dist = join(uiRoot, 'dist');
  for (const [name, f] of await buildUi()) {
    await mkdir(dirname(join(dist, name)), { recursive: true });
    await writeBufferAtomic(join(dist, name), f.body);
    console.log(`${join(dist, name)} (${f.body.length} bytes)`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
