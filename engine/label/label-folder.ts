/**
 * Labels a folder of images: finds them and their existing captions the way training does (engine/train/
 * dataset.ts), captions those the mode asks for (CLIP, WD14 or both), and writes through engine/train/
 * caption-table.ts (metadata.csv or sidecars; missing / overwrite / append; dry run).
 *
 * Captions are written every few images, so an interrupted run keeps what it did, and running it again in
 * 'missing' mode (the default) picks up where it stopped.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadDataset } from '../train/dataset.ts';
import { findTable, listingConfig } from '../train/dataset-listing.ts';
import { splitTags, TAG_SEPARATOR } from '../train/captions.ts';
import { writeCaptions, type CaptionChange } from '../train/caption-table.ts';
import { UserError } from '../util/errors.ts';
import type { ClipCaptioner } from './clip-captioner.ts';
import { wd14Options, type LabelSettings } from './options.ts';
import type { Wd14Tagger } from './wd14.ts';

export interface Captioners {
  clip?: ClipCaptioner;
  wd14?: Wd14Tagger;
}

export interface LabelProgress {
  done: number;
  total: number;
  /** The image just captioned, relative to the folder. */
  file: string;
  caption: string;
  imagesPerSecond: number;
  etaSeconds: number;
}

export interface LabelResult {
  folder: string;
  /** Images in the folder. */
  images: number;
  /** Images captioned in this run. */
  captioned: number;
  /** Images left alone because they already had a caption (mode 'missing'). */
  skipped: number;
  /** One entry per captioned image: what the caption was and what it is (or would be, on a dry run). */
  changes: CaptionChange[];
  dryRun: boolean;
  cancelled: boolean;
  seconds: number;
}

/** Captions are flushed to disk after this many images. */
const FLUSH_EVERY = 8;

/** A caption from whichever captioners the settings name; 'both' puts the tags after the CLIP caption, without repeats. */
export async function captionImage(source: string | Buffer, settings: LabelSettings, c: Captioners): Promise<string> {
  const useClip = settings.model !== 'wd14';
  const useTags = settings.model !== 'clip';
  if (useClip && !c.clip) throw new UserError(`model '${settings.model}' needs a CLIP model`);
  if (useTags && !c.wd14) throw new UserError(`model '${settings.model}' needs a WD14 tagger`);
  const parts: string[] = [];
  if (useClip) parts.push(...splitTags((await c.clip!.caption(source)).caption));
  if (useTags) parts.push(...(await c.wd14!.tag(source, wd14Options(settings))).tags.map((t) => t.name));
  return withTrigger(dedupe(parts), settings.trigger);
}

function dedupe(parts: string[]): string[] {
  const seen = new Set<string>();
  return parts.filter((p) => {
    const k = p.toLowerCase();
    return seen.has(k) ? false : (seen.add(k), true);
  });
}

function withTrigger(parts: string[], trigger: string): string {
  const t = trigger.trim();
  const rest = t ? parts.filter((p) => p.toLowerCase() !== t.toLowerCase()) : parts;
  return (t ? [t, ...rest] : rest).join(`${TAG_SEPARATOR} `);
}

export async function labelFolder(
  folder: string,
  settings: LabelSettings,
  captioners: Captioners,
  opts: { signal?: AbortSignal; onProgress?: (p: LabelProgress) => void } = {},
): Promise<LabelResult> {
  const t0 = performance.now();
  if (!(await stat(folder).catch(() => null))?.isDirectory()) throw new UserError(`image folder not found: ${folder}`);
  const table = await findTable(folder);
  const ds = await loadDataset(listingConfig(folder, table, join(folder, '.lora-scripts-label-none'), settings.caption_extension));
  // 'missing' leaves every image that has a caption of its own, wherever it is; a repeat folder's class tokens are not one.
  const todo = settings.mode === 'missing' ? ds.items.filter((i) => i.captionSource === 'none' || i.captionSource === 'folder') : ds.items;
  if (settings.model !== 'wd14') await captioners.clip?.prepare();

  const changes: CaptionChange[] = [];
  let pending = new Map<string, string>();
  const flush = async () => {
    if (!pending.size) return;
    changes.push(...(await writeCaptions(pending, { root: folder, target: settings.target, table, mode: settings.mode, extension: settings.caption_extension, dryRun: settings.dry_run })));
    pending = new Map();
  };
  let done = 0;
  let cancelled = false;
  const tStart = performance.now();
  for (const item of todo) {
    if (opts.signal?.aborted) {
      cancelled = true;
      break;
    }
    const caption = await captionImage(item.path, settings, captioners);
    pending.set(item.key, caption);
    done++;
    const secs = (performance.now() - tStart) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    opts.onProgress?.({ done, total: todo.length, file: item.key, caption, imagesPerSecond: rate, etaSeconds: rate > 0 ? (todo.length - done) / rate : 0 });
    if (pending.size >= FLUSH_EVERY) await flush();
  }
  await flush();
  return {
    folder,
    images: ds.items.length,
    captioned: done,
    skipped: ds.items.length - todo.length,
    changes,
    dryRun: settings.dry_run,
    cancelled,
    seconds: (performance.now() - t0) / 1000,
  };
}
