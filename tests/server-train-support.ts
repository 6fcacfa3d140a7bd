// Helpers for the server training tests (not a test file itself): dataset images, multipart uploads with
// fetch + FormData, socket.io event recording.
import sharp from 'sharp';
import { io as ioClient, type Socket } from 'socket.io-client';
import { patternImage } from './support/train-fixture.ts';
import type { TestServer } from './server-fixture-backend.ts';

/** A 64×64 PNG of the trainer tests' disk pattern. */
export function patternPng(k: number): Promise<Buffer> {
  return sharp(patternImage(k), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
}

export type UploadFile = [name: string, data: Uint8Array | string, type?: string];

export async function upload(
  t: TestServer,
  name: string,
  files: UploadFile[],
  opts: { query?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: any }> {
  const form = new FormData();
  for (const [fileName, data, type] of files) form.append('files', new Blob([typeof data === 'string' ? data : new Uint8Array(data)], { type: type ?? 'application/octet-stream' }), fileName);
  const r = await fetch(`${t.server.url}/sdapi/v1/train/datasets/${name}${opts.query ? `?${opts.query}` : ''}`, { method: 'POST', body: form, headers: opts.headers });
  const text = await r.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    /* keep the text */
  }
  return { status: r.status, body };
}

/** `count` pattern PNGs with a metadata.csv captioning all of them. */
export async function patternFiles(count: number, caption = 'a yellow disk, dark background'): Promise<UploadFile[]> {
  const files: UploadFile[] = [];
  const names: string[] = [];
  for (let k = 0; k < count; k++) {
    const n = `img${String(k).padStart(2, '0')}.png`;
    names.push(n);
    files.push([n, await patternPng(k), 'image/png']);
  }
  files.push(['metadata.csv', `file_name,caption\n${names.map((n) => `${n},"${caption}"`).join('\n')}\n`, 'text/csv']);
  return files;
}

export interface Recorded {
  event: string;
  data: any;
  at: number;
}

/** A connected socket.io client that records every event it receives, in order. */
export async function recordEvents(url: string, opts: Parameters<typeof ioClient>[1] = {}): Promise<{ socket: Socket; events: Recorded[]; waitFor: (pred: (e: Recorded) => boolean, ms?: number) => Promise<Recorded> }> {
  const socket = ioClient(url, { transports: ['websocket'], reconnection: false, ...opts });
  const events: Recorded[] = [];
  const waiters: { pred: (e: Recorded) => boolean; resolve: (e: Recorded) => void }[] = [];
  socket.onAny((event: string, data: unknown) => {
    const e = { event, data, at: Date.now() };
    events.push(e);
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('connect_error', (e) => reject(e));
  });
  const waitFor = (pred: (e: Recorded) => boolean, ms = 60_000) => {
    const seen = events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise<Recorded>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a socket.io event')), ms);
      waiters.push({
        pred,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
    });
  };
  return { socket, events, waitFor };
}
