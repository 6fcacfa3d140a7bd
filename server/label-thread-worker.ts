/**
 * The labelling thread: CLIP and WD14 models load and caption here (server/labelling.ts sends the work).
 * Their ONNX Runtime runs are synchronous, up to a second per image; on the main thread every image would
 * hold the HTTP loop. Loaded models stay loaded between jobs, as they did on the main thread.
 */
import type { MessagePort } from 'node:worker_threads';
import { ClipModel } from '../engine/clip/model.ts';
import { ClipCaptioner } from '../engine/label/clip-captioner.ts';
import { captionImage, labelFolder, type Captioners, type LabelProgress, type LabelResult } from '../engine/label/label-folder.ts';
import { clipCaptionOptions, type LabelSettings } from '../engine/label/options.ts';
import { Wd14Tagger } from '../engine/label/wd14.ts';
import type { Device } from '../engine/runtime/providers.ts';
import { threadReports } from './thread-report.ts';

/** Which models a call uses (paths from the main thread's listing). */
export interface LabelModelPaths {
  clip: string | null;
  wd14: string | null;
  device: Device;
  tokenizerDir: string;
}

let clip: { path: string; model: Promise<ClipModel> } | null = null;
let captioner: { key: string; c: ClipCaptioner } | null = null;
let tagger: { path: string; t: Promise<Wd14Tagger> } | null = null;

async function captioners(settings: LabelSettings, m: LabelModelPaths): Promise<Captioners> {
  const out: Captioners = {};
  if (m.clip) {
    if (clip?.path !== m.clip) {
      clip = { path: m.clip, model: ClipModel.load(m.clip, { device: m.device, tokenizerDirs: [m.tokenizerDir] }) };
      captioner = null;
      clip.model.catch(() => (clip = null));
    }
    const opts = clipCaptionOptions(settings);
    const key = JSON.stringify(opts);
    if (captioner?.key !== key) captioner = { key, c: new ClipCaptioner(await clip.model, opts) };
    out.clip = captioner.c;
  }
  if (m.wd14) {
    if (tagger?.path !== m.wd14) {
      const old = tagger;
      tagger = { path: m.wd14, t: Wd14Tagger.load(m.wd14, { device: m.device }) };
      tagger.t.catch(() => (tagger = null));
      void old?.t.then((t) => t.release()).catch(() => {});
    }
    out.wd14 = await tagger.t;
  }
  return out;
}

/**
 * Labels a folder. Progress goes out on `port`; the main thread asks to stop by setting `stop[0]` (the thread
 * is inside ONNX Runtime most of the time, so a flag, not a message).
 */
export async function labelInThread(folder: string, settings: LabelSettings, m: LabelModelPaths, port: MessagePort, stop: SharedArrayBuffer): Promise<LabelResult> {
  const flag = new Int32Array(stop);
  const out = threadReports<LabelProgress>(port);
  try {
    const c = await captioners(settings, m);
    return await labelFolder(folder, settings, c, {
      // labelFolder checks `aborted` between images: read the flag there.
      signal: { get aborted() { return Atomics.load(flag, 0) === 1; } } as AbortSignal,
      onProgress: out.report,
    });
  } finally {
    out.end();
  }
}

/** One caption for one picture (A1111's interrogate). */
export async function interrogateInThread(image: Uint8Array, settings: LabelSettings, m: LabelModelPaths): Promise<string> {
  return captionImage(Buffer.from(image.buffer, image.byteOffset, image.byteLength), settings, await captioners(settings, m));
}
