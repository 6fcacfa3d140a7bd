/**
 * The uploaded datasets under `<data-dir>/datasets`: names, listing with image and caption counts (read the
 * way training reads them, via engine/train/dataset.ts), and deletion.
 */
import { readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadDataset, type CaptionSource } from '../engine/train/dataset.ts';
import { findTable, listingConfig } from '../engine/train/dataset-listing.ts';
import { HttpError } from './errors.ts';
import type { TrainingSettings } from './train-settings.ts';

export { findTable, listingConfig };

export interface DatasetInfo {
  name: string;
  path: string;
  images: number;
  captioned: number;
  caption_sources: Record<CaptionSource, number>;
  /** metadata.csv / metadata.jsonl in the folder, or null. */
  metadata: string | null;
  files: number;
  size_bytes: number;
  modified: string;
  /** Why the folder cannot be read as a dataset (a broken table, no images), or null. */
  error: string | null;
}

const DATASET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Dataset names become folder names: letters, digits, `_ . -`, no leading dot, no `..`. */
export function checkDatasetName(name: string): string {
  if (!DATASET_NAME.test(name) || name.includes('..')) {
    throw new HttpError(422, `dataset name '${name}' is not allowed: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit, without '..'`);
  }
  return name;
}

async function folderSize(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    files++;
    bytes += (await stat(join(e.parentPath, e.name))).size;
  }
  return { files, bytes };
}

export async function describeDataset(dir: string, name: string, settings: TrainingSettings): Promise<DatasetInfo> {
  const metadata = await findTable(dir);
  const st = await stat(dir);
  const size = await folderSize(dir);
  const info: DatasetInfo = {
    name,
    path: dir,
    images: 0,
    captioned: 0,
    caption_sources: { metadata: 0, sidecar: 0, folder: 0, none: 0 },
    metadata,
    files: size.files,
    size_bytes: size.bytes,
    modified: st.mtime.toISOString(),
    error: null,
  };
  try {
    const ds = await loadDataset(listingConfig(dir, metadata, join(settings.trainingDir, '.none')));
    info.images = ds.coverage.total;
    info.captioned = ds.coverage.captioned;
    info.caption_sources = ds.coverage.bySource;
  } catch (e) {
    info.error = (e as Error).message;
  }
  return info;
}

export async function listDatasets(settings: TrainingSettings): Promise<DatasetInfo[]> {
  const entries = await readdir(settings.datasetsDir, { withFileTypes: true }).catch(() => []);
  const out: DatasetInfo[] = [];
  for (const e of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (e.name.startsWith('.') || !e.isDirectory()) continue;
    out.push(await describeDataset(join(settings.datasetsDir, e.name), e.name, settings));
  }
  return out;
}

/** Removes a dataset folder: renamed away first, so it disappears at once even if deleting takes a while. */
export async function deleteDataset(settings: TrainingSettings, name: string, inUse: (dir: string) => boolean): Promise<void> {
  checkDatasetName(name);
  const dir = join(settings.datasetsDir, name);
  const st = await stat(dir).catch(() => null);
  if (!st?.isDirectory()) throw new HttpError(404, `dataset '${name}' not found`);
  if (inUse(dir)) throw new HttpError(409, `dataset '${name}' is used by a queued or running training; cancel it first`);
  const trash = join(settings.datasetsDir, `.deleting-${randomBytes(6).toString('hex')}`);
  await rename(dir, trash);
  await rm(trash, { recursive: true, force: true });
}

const STAGING = /^\.(upload|replaced|deleting)-/;
const STALE_MS = 60 * 60 * 1000;

/** Removes hidden upload/replace/delete folders an interrupted server left behind (older than an hour). */
export async function removeStaleStaging(settings: TrainingSettings, now = Date.now()): Promise<string[]> {
  const removed: string[] = [];
  for (const e of await readdir(settings.datasetsDir, { withFileTypes: true }).catch(() => [])) {
    if (!e.isDirectory() || !STAGING.test(e.name)) continue;
    const p = join(settings.datasetsDir, e.name);
    const st = await stat(p).catch(() => null);
    if (st && now - st.mtimeMs > STALE_MS) {
      await rm(p, { recursive: true, force: true });
      removed.push(p);
    }
  }
  return removed;
}
