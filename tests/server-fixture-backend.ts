/**
 * Test support for the server tests (not a test file itself).
 *
 * `FixtureBackend` is a GenerationBackend for exercising the server before the SD pipeline lands: it opens
 * the checkpoint's real safetensors header on load, and per sampling step it does real work on a pixel
 * buffer derived from the seed and the prompt, polls interrupt/skip and reports progress with a preview,
 * exactly as the interface contract asks. It records every call so tests can check what the server passed.
 */
import { mkdtemp, mkdir, symlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import type { CheckpointRef, GenerationBackend, GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, RawImage, VaeRef } from '../server/backend.ts';
import { createServer, type LoraScriptsServer, type ServerOptions } from '../server/app.ts';
import { fixturesDir } from './support/paths.ts';

export interface RecordedCall {
  kind: 'txt2img' | 'img2img';
  params: GenerationParams | Img2ImgParams;
  startedAt: number;
  endedAt: number;
  stepsDone: number;
  stoppedBy: 'interrupt' | 'skip' | null;
}

export class FixtureBackend implements GenerationBackend {
  readonly description = 'server test fixture backend';
  readonly calls: RecordedCall[] = [];
  readonly loads: { ckpt: CheckpointRef; vae: VaeRef | null; tensorCount: number }[] = [];
  private current: CheckpointRef | null = null;

  constructor(
    /** Time each step takes, so HTTP requests can observe a running job. */
    public stepMs = 0,
    readonly samplers?: readonly string[],
  ) {}

  async loadCheckpoint(ckpt: CheckpointRef, vae: VaeRef | null): Promise<void> {
    const f = await SafetensorsFile.open(ckpt.path);
    this.loads.push({ ckpt, vae, tensorCount: f.tensors.size });
    await f.close();
    this.current = ckpt;
  }

  async unload(): Promise<void> {
    this.current = null;
  }

  currentCheckpoint(): CheckpointRef | null {
    return this.current;
  }

  txt2img(params: GenerationParams, hooks: GenerationHooks): Promise<GenerationOutput> {
    return this.run('txt2img', params, hooks);
  }

  img2img(params: Img2ImgParams, hooks: GenerationHooks): Promise<GenerationOutput> {
    return this.run('img2img', params, hooks);
  }

  private async run(kind: 'txt2img' | 'img2img', params: GenerationParams, hooks: GenerationHooks): Promise<GenerationOutput> {
    if (!this.current) throw new Error('no checkpoint loaded');
    const rec: RecordedCall = { kind, params, startedAt: Date.now(), endedAt: 0, stepsDone: 0, stoppedBy: null };
    this.calls.push(rec);
    const { width, height } = params;
    const latents = params.seeds.map((seed) => {
      const px = new Float32Array(width * height * 3);
      const h = createHash('sha256').update(`${seed}|${params.prompt}`).digest();
      for (let i = 0; i < px.length; i++) px[i] = h[i % h.length]!;
      return px;
    });
    for (let step = 1; step <= params.steps; step++) {
      const stop = hooks.shouldStop();
      if (stop) {
        rec.stoppedBy = stop;
        break;
      }
      for (const px of latents) for (let i = 0; i < px.length; i++) px[i] = (px[i]! * 0.9 + ((i * 7 + step * 13) % 256) * 0.1) % 256;
      if (this.stepMs > 0) await new Promise((r) => setTimeout(r, this.stepMs));
      rec.stepsDone = step;
      const snapshot = latents.map((l) => l.slice());
      hooks.onStep(step, params.steps, async () => toImage(snapshot[0]!, width, height));
    }
    rec.endedAt = Date.now();
    return { images: latents.map((l) => toImage(l, width, height)), notes: [], extraParams: {} };
  }
}

function toImage(px: Float32Array, width: number, height: number): RawImage {
  const data = new Uint8Array(px.length);
  for (let i = 0; i < px.length; i++) data[i] = Math.max(0, Math.min(255, Math.round(px[i]!)));
  return { width, height, channels: 3, data };
}

export const sdTiny = join(fixturesDir, 'sd-tiny');

export interface TestServer {
  server: LoraScriptsServer;
  dataDir: string;
  get(path: string, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  post(path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  close(): Promise<void>;
}

/** The sd-tiny checkpoint, its tokenizer and two kohya LoRAs, linked into a data dir's model folders. */
export async function linkFixtureModels(dataDir: string): Promise<void> {
  await mkdir(join(dataDir, 'models/Stable-diffusion'), { recursive: true });
  await mkdir(join(dataDir, 'models/Lora'), { recursive: true });
  await symlink(join(sdTiny, 'sd-tiny.safetensors'), join(dataDir, 'models/Stable-diffusion/sd-tiny.safetensors')).catch(() => {});
  // Single-file checkpoints ship no tokenizer; the engine looks in models/tokenizer.
  await symlink(join(sdTiny, 'diffusers/tokenizer'), join(dataDir, 'models/tokenizer')).catch(() => {});
  for (const n of ['lora_a', 'lora_b']) {
    await symlink(join(sdTiny, 'lora-kohya', `${n}.safetensors`), join(dataDir, `models/Lora/${n}.safetensors`)).catch(() => {});
  }
}

/**
 * A real server on 127.0.0.1:0 over a fresh data dir. With `withModel`, the fixture checkpoint and both
 * kohya LoRAs are linked into the default folders.
 */
export async function startTestServer(opts: ServerOptions & { withModel?: boolean } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'lora-scripts-server-')));
  if (opts.withModel) await linkFixtureModels(dataDir);
  const server = await createServer({ port: 0, log: () => {}, ...opts, dataDir });
  const call = async (method: string, path: string, body: unknown, headers: Record<string, string> = {}) => {
    const r = await fetch(server.url + path, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await r.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      /* not JSON: keep the text */
    }
    return { status: r.status, body: parsed as any, headers: r.headers };
  };
  return {
    server,
    dataDir,
    get: (p, h) => call('GET', p, undefined, h),
    post: (p, b, h) => call('POST', p, b ?? {}, h),
    close: async () => {
      await server.close();
      if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}
