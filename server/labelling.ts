/**
 * Auto-labelling on the server: the captioning models it finds, labelling jobs over the uploaded datasets,
 * and one-image captions for `/sdapi/v1/interrogate`. The work is the engine's (engine/label); this module
 * finds models, keeps the loaded ones, and runs jobs through the shared queue so they wait their turn with
 * generations and trainings.
 *
 * Models are never downloaded: `<data-dir>/models/CLIP` holds Hugging Face CLIP folders (config.json +
 * model.safetensors + tokenizer files) or OpenCLIP .safetensors files; `<data-dir>/models/WD14` holds tagger
 * folders (model.onnx + selected_tags.csv). OpenCLIP files find their tokenizer in `<data-dir>/models/tokenizer`.
 *
 * Events (socket.io, see attachLabelSocket): `label-progress` {id, done, total, file, caption,
 * images_per_second, eta_seconds} after every image.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { LabelProgress, LabelResult } from '../engine/label/label-folder.ts';
import type { LabelSettings } from '../engine/label/options.ts';
import { WD14_MODEL_FILE, WD14_TAGS_FILE } from '../engine/label/wd14.ts';
import type { Device } from '../engine/runtime/providers.ts';
import type { CaptionChange } from '../engine/train/caption-table.ts';
import type { ServerContext } from './context.ts';
import { HttpError } from './errors.ts';
import type { LabelModelPaths } from './label-thread-worker.ts';
import { ThreadJobs } from './thread-jobs.ts';
import { CancelledError } from './queue.ts';

export interface LabelModelInfo {
  name: string;
  path: string;
  /** What the folder or file is; null when it is not usable (see error). */
  kind: 'hf' | 'openclip' | 'wd14' | null;
  error: string | null;
}

export interface LabelModels {
  clip: LabelModelInfo[];
  wd14: LabelModelInfo[];
  folders: { clip: string; wd14: string; tokenizer: string };
}

export type LabelJobStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface LabelProgressEvent {
  id: string;
  done: number;
  total: number;
  file: string;
  caption: string;
  images_per_second: number;
  eta_seconds: number;
}

export interface LabelJob {
  id: string;
  status: LabelJobStatus;
  dataset: string;
  folder: string;
  clip_model: string | null;
  wd14_model: string | null;
  settings: LabelSettings;
  created_at: string;
  started_at: string | null;
  ended_at: string | null;
  progress: LabelProgressEvent | null;
  /** Per captioned image: `file` (relative to the dataset), caption before and after, and what happened. */
  changes: { file: string; before: string; after: string; action: CaptionChange['action'] }[];
  result: Omit<LabelResult, 'changes' | 'folder'> | null;
  error: string | null;
}

export interface LabelRequest {
  dataset: string;
  folder: string;
  settings: LabelSettings;
  clipModel: string | null;
  wd14Model: string | null;
}

export function labelFolders(ctx: ServerContext) {
  const models = join(ctx.layout.dataDir, 'models');
  return { clip: join(models, 'CLIP'), wd14: join(models, 'WD14'), tokenizer: join(models, 'tokenizer') };
}

const isFile = async (p: string) => (await stat(p).catch(() => null))?.isFile() ?? false;

async function describeClip(path: string, name: string, isDir: boolean): Promise<LabelModelInfo> {
  if (!isDir) return { name, path, kind: name.toLowerCase().endsWith('.safetensors') ? 'openclip' : null, error: name.toLowerCase().endsWith('.safetensors') ? null : 'not a .safetensors file' };
  if (await isFile(join(path, 'config.json'))) {
    return (await isFile(join(path, 'model.safetensors')))
      ? { name, path, kind: 'hf', error: null }
      : { name, path, kind: null, error: `${join(path, 'model.safetensors')} is missing (only .safetensors weights are read)` };
  }
  const st = (await readdir(path)).filter((n) => n.toLowerCase().endsWith('.safetensors'));
  return st.length === 1 ? { name, path, kind: 'openclip', error: null } : { name, path, kind: null, error: `expected config.json + model.safetensors, or one OpenCLIP .safetensors file` };
}

/** What the model folders hold, sorted by name; unusable entries are listed with the reason. */
export async function listLabelModels(ctx: ServerContext): Promise<LabelModels> {
  const folders = labelFolders(ctx);
  const entries = async (dir: string) => (await readdir(dir, { withFileTypes: true }).catch(() => [])).filter((e) => !e.name.startsWith('.')).sort((a, b) => a.name.localeCompare(b.name));
  const clip: LabelModelInfo[] = [];
  for (const e of await entries(folders.clip)) {
    if (!e.isDirectory() && !e.name.toLowerCase().endsWith('.safetensors')) continue;
    clip.push(await describeClip(join(folders.clip, e.name), e.name, e.isDirectory()));
  }
  const wd14: LabelModelInfo[] = [];
  for (const e of await entries(folders.wd14)) {
    if (!e.isDirectory()) continue;
    const p = join(folders.wd14, e.name);
    const missing = [];
    for (const f of [WD14_MODEL_FILE, WD14_TAGS_FILE]) if (!(await isFile(join(p, f)))) missing.push(f);
    wd14.push({ name: e.name, path: p, kind: missing.length ? null : 'wd14', error: missing.length ? `${missing.join(' and ')} missing in ${p}` : null });
  }
  return { clip, wd14, folders };
}

function pick(list: LabelModelInfo[], wanted: string | null, what: string, folder: string, holds: string): LabelModelInfo {
  if (wanted) {
    const m = list.find((x) => x.name === wanted || x.name.replace(/\.safetensors$/i, '') === wanted);
    if (!m) throw new HttpError(404, `${what} '${wanted}' not found in ${folder} (found: ${list.map((x) => x.name).join(', ') || 'none'})`);
    if (m.error) throw new HttpError(422, `${what} '${m.name}' cannot be used: ${m.error}`);
    return m;
  }
  const ok = list.find((x) => !x.error);
  if (!ok) throw new HttpError(422, `no ${what} in ${folder}: put ${holds} there (nothing is downloaded)`);
  return ok;
}

const CLIP_HOLDS = 'a Hugging Face CLIP folder (config.json, model.safetensors, preprocessor_config.json, vocab.json, merges.txt) or an OpenCLIP .safetensors file';
const WD14_HOLDS = `a WD14 tagger folder (${WD14_MODEL_FILE} + ${WD14_TAGS_FILE})`;

/** Loaded models, the registry of jobs and their events; one per server. */
export class LabelService extends EventEmitter {
  private readonly jobs = new Map<string, LabelJob>();
  /** The labelling thread (server/label-thread-worker.ts): models load and caption there, off the HTTP loop. */
  private readonly thread = new ThreadJobs(new URL('./label-thread-worker.ts', import.meta.url).href, 'labelling', 'the next job starts a new thread');

  constructor(private readonly ctx: ServerContext) {
    super();
  }

  private get device(): Device {
    return (String(this.ctx.cmdFlags['device'] ?? 'cpu') as Device) || 'cpu';
  }

  /** Chooses the models a request names (or the first usable ones) and says which `model` kind applies. */
  async resolve(settings: LabelSettings, names: { clip: string | null; wd14: string | null }, modelGiven: boolean): Promise<{ settings: LabelSettings; clip: LabelModelInfo | null; wd14: LabelModelInfo | null }> {
    const found = await listLabelModels(this.ctx);
    let s = settings;
    // Without an explicit kind: CLIP when a CLIP model is there, else the tagger.
    if (!modelGiven && !names.clip && !found.clip.some((m) => !m.error) && found.wd14.some((m) => !m.error)) s = { ...s, model: 'wd14' };
    const clip = s.model !== 'wd14' ? pick(found.clip, names.clip, 'CLIP model', found.folders.clip, CLIP_HOLDS) : null;
    const wd14 = s.model !== 'clip' ? pick(found.wd14, names.wd14, 'WD14 tagger', found.folders.wd14, WD14_HOLDS) : null;
    return { settings: s, clip, wd14 };
  }

  private paths(clip: LabelModelInfo | null, wd14: LabelModelInfo | null): LabelModelPaths {
    return { clip: clip?.path ?? null, wd14: wd14?.path ?? null, device: this.device, tokenizerDir: labelFolders(this.ctx).tokenizer };
  }

  submit(req: LabelRequest, clip: LabelModelInfo | null, wd14: LabelModelInfo | null): LabelJob {
    const id = `label-${randomBytes(6).toString('hex')}`;
    const job: LabelJob = {
      id,
      status: 'queued',
      dataset: req.dataset,
      folder: req.folder,
      clip_model: clip?.name ?? null,
      wd14_model: wd14?.name ?? null,
      settings: req.settings,
      created_at: new Date().toISOString(),
      started_at: null,
      ended_at: null,
      progress: null,
      changes: [],
      result: null,
      error: null,
    };
    this.jobs.set(id, job);
    const handle = this.ctx.queue.submit(
      {
        kind: 'label',
        run: async (q) => {
          job.status = 'running';
          job.started_at = new Date().toISOString();
          q.progress({ step: 0, total: 0, textinfo: `Labelling ${req.dataset}: loading models` });
          // The thread checks the flag between images without waiting for messages.
          const stop = new SharedArrayBuffer(4);
          return this.thread.run<LabelResult, LabelProgress>('labelInThread', {
            args: (port) => [req.folder, req.settings, this.paths(clip, wd14), port, stop],
            onReport: (p) => {
              const ev: LabelProgressEvent = { id, done: p.done, total: p.total, file: p.file, caption: p.caption, images_per_second: p.imagesPerSecond, eta_seconds: p.etaSeconds };
              job.progress = ev;
              q.progress({ step: p.done, total: p.total, textinfo: `Labelling ${req.dataset}: ${p.done}/${p.total} images` });
              this.emit('label-progress', ev);
            },
            signal: q.signal,
            stop: () => Atomics.store(new Int32Array(stop), 0, 1),
          });
        },
      },
      { id },
    );
    handle.promise.then(
      (r) => {
        const { changes, folder: _f, ...rest } = r;
        job.changes = changes.map((c) => ({ file: c.key, before: c.before, after: c.after, action: c.action }));
        job.result = rest;
        job.status = r.cancelled ? 'cancelled' : 'done';
        job.ended_at = new Date().toISOString();
      },
      (e: unknown) => {
        job.status = e instanceof CancelledError ? 'cancelled' : 'failed';
        job.error = (e as Error).message;
        job.ended_at = new Date().toISOString();
      },
    );
    return job;
  }

  get(id: string): LabelJob | undefined {
    return this.jobs.get(id);
  }

  list(): LabelJob[] {
    return [...this.jobs.values()];
  }

  cancel(id: string): boolean {
    return this.ctx.queue.cancel(id);
  }

  /** Ends the labelling thread (a later job starts a new one). */
  close(): Promise<void> {
    return this.thread.close();
  }

  /** One caption for one image (A1111's interrogate), run in the queue like any other job. */
  async interrogate(image: Buffer, settings: LabelSettings, clip: LabelModelInfo | null, wd14: LabelModelInfo | null): Promise<string> {
    return this.ctx.queue.submit({
      kind: 'interrogate',
      run: async () => {
        const bytes = Uint8Array.from(image);
        return this.thread.call<string>('interrogateInThread', [bytes, settings, this.paths(clip, wd14)], [bytes.buffer]);
      },
    }).promise;
  }
}

const perServer = new WeakMap<ServerContext, LabelService>();

/** Ends the server's labelling thread; called after its queue has closed, so no job is running there. */
export async function closeLabelling(ctx: ServerContext): Promise<void> {
  await perServer.get(ctx)?.close();
}

export function labelService(ctx: ServerContext): LabelService {
  let s = perServer.get(ctx);
  if (!s) perServer.set(ctx, (s = new LabelService(ctx)));
  return s;
}

interface Emitter {
  emit(event: string, data: unknown): unknown;
}

const attached = new WeakSet<object>();

/** Forwards `label-progress` to socket.io; createServer calls it once beside the training socket. */
export function attachLabelSocket(ctx: ServerContext, io: Emitter): void {
  if (attached.has(io)) return;
  attached.add(io);
  labelService(ctx).on('label-progress', (p: LabelProgressEvent) => io.emit('label-progress', p));
}
