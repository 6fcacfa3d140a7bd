/**
 * Finds the training images, their captions and their buckets.
 * Captions come, in this order, from the metadata table (metadata.csv / .jsonl with file_name + caption or text,
 * as Hugging Face imagefolder), a sidecar file (kohya: photo.png → photo.txt), or the class tokens of a kohya
 * `N_name` repeat folder. Images without any caption are refused unless allow_missing_captions is set, because
 * silently training on empty captions is a common and costly mistake.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join, relative, dirname, extname, basename, resolve, sep } from 'node:path';
import { UserError } from '../util/errors.ts';
import type { TrainConfig } from './config.ts';
import { BUCKET_RESO_STEP } from './config-fields.ts';
import { IMAGE_EXTENSIONS, probeImage, verifyImage, loadImageTensor, type ImageTensor } from '../image/load.ts';
import { makeBuckets, placeImage, batchesPerEpoch, type ImagePlacement, type Size, type Crop } from './buckets.ts';
import { seededRandom, shuffled } from './seeded-random.ts';
import { readCaptionTable, tableEntryPath } from './caption-table.ts';

export type CaptionSource = 'metadata' | 'sidecar' | 'folder' | 'none';

export interface DatasetItem {
  /** Absolute path of the image. */
  path: string;
  /** Path relative to train_data_dir with '/' separators: the image's stable identity in logs, seeds and caches. */
  key: string;
  caption: string;
  captionSource: CaptionSource;
  /** Times the image appears per epoch (kohya `N_name` folders), 1 otherwise. */
  repeats: number;
  /** Size as displayed, after EXIF orientation. */
  width: number;
  height: number;
  placement: ImagePlacement;
  split: 'train' | 'validation';
}

export interface CaptionCoverage {
  total: number;
  captioned: number;
  bySource: Record<CaptionSource, number>;
  /** Keys of the images without a caption. */
  missing: string[];
}

export interface Dataset {
  root: string;
  metadataPath: string | null;
  items: DatasetItem[];
  buckets: Size[];
  coverage: CaptionCoverage;
  warnings: string[];
}

export interface LoadDatasetOptions {
  /** Decode every image fully (finds truncated files); otherwise only headers are read. */
  verifyImages?: boolean;
}

const REPEAT_FOLDER = /^([1-9]\d*)_(.+)$/;
const PROBE_CONCURRENCY = 8;

export async function loadDataset(config: TrainConfig, opts: LoadDatasetOptions = {}): Promise<Dataset> {
  const root = config.train_data_dir;
  const warnings: string[] = [];
  const skip = new Set([config.output_dir, config.latent_cache_dir, config.logging_dir].map((p) => resolve(p)));
  const found = await findImages(root, skip);
  const table = config.metadata_path ? await readMetadata(config.metadata_path, warnings) : new Map<string, MetaRow>();

  const paths = new Set(found);
  for (const [abs, row] of table) {
    if (!paths.has(abs)) {
      const kind = await stat(abs).catch(() => undefined);
      if (!kind?.isFile())
        throw new UserError(`${config.metadata_path}: row ${row.line} names ${row.fileName}, but ${abs} does not exist`);
      if (!IMAGE_EXTENSIONS.has(extname(abs).toLowerCase()))
        throw new UserError(`${config.metadata_path}: row ${row.line} names ${row.fileName}, which is not a png, jpg or webp image`);
      paths.add(abs);
    }
  }
  if (paths.size === 0)
    throw new UserError(`no images (png, jpg, webp) found in train_data_dir ${root}${config.metadata_path ? ` or listed in ${config.metadata_path}` : ''}`);

  const buckets = config.enable_bucket
    ? makeBuckets({ resolution: config.resolution, minReso: config.min_bucket_reso, maxReso: config.max_bucket_reso, step: BUCKET_RESO_STEP })
    : [{ width: config.resolution, height: config.resolution }];

  const sorted = [...paths].map((p) => ({ path: p, key: keyOf(root, p) })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const items = await mapLimit(sorted, PROBE_CONCURRENCY, async ({ path, key }): Promise<DatasetItem> => {
    const size = await probeImage(path);
    if (opts.verifyImages) await verifyImage(path);
    const folder = repeatFolder(key);
    const { caption, source } = await findCaption(path, table.get(path), folder?.classTokens, config.caption_extension);
    return {
      path,
      key,
      caption,
      captionSource: source,
      repeats: folder?.repeats ?? 1,
      width: size.width,
      height: size.height,
      placement: placeImage(size, buckets),
      split: 'train',
    };
  });

  const coverage = captionCoverage(items);
  if (coverage.missing.length && !config.allow_missing_captions) throw missingCaptionsError(coverage, config);
  assignValidation(items, config.validation_split, config.seed);

  const upscaled = items.filter((i) => i.width < i.placement.bucket.width || i.height < i.placement.bucket.height);
  if (upscaled.length)
    warnings.push(
      `${upscaled.length} image${upscaled.length === 1 ? ' is' : 's are'} smaller than ${upscaled.length === 1 ? 'its' : 'their'} bucket and will be upscaled: ` +
        listSome(upscaled.map((i) => `${i.key} (${i.width}×${i.height} → ${i.placement.bucket.width}×${i.placement.bucket.height})`)),
    );
  return { root, metadataPath: config.metadata_path, items, buckets, coverage, warnings };
}

/** Loads one item as the VAE's input: resized, cropped (its center crop unless `crop` is given), optionally flipped. */
export function loadItemTensor(item: DatasetItem, opts: { flip?: boolean; crop?: Crop } = {}): Promise<ImageTensor> {
  return loadImageTensor(item.path, { resized: item.placement.resized, crop: opts.crop ?? item.placement.crop, flip: opts.flip });
}

export interface StepPlan {
  batchesPerEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
}

/** Micro-batches and optimizer steps for the training split, counted per bucket as batches never mix buckets. */
export function stepPlan(dataset: Dataset, config: TrainConfig): StepPlan {
  const train = dataset.items.filter((i) => i.split === 'train');
  const batches = batchesPerEpoch(
    train.map((i) => i.placement),
    train.map((i) => i.repeats),
    config.batch_size,
  );
  const stepsPerEpoch = Math.ceil(batches / config.gradient_accumulation_steps);
  return { batchesPerEpoch: batches, stepsPerEpoch, totalSteps: stepsPerEpoch * config.epochs };
}

export function captionCoverage(items: readonly DatasetItem[]): CaptionCoverage {
  const bySource: Record<CaptionSource, number> = { metadata: 0, sidecar: 0, folder: 0, none: 0 };
  for (const i of items) bySource[i.captionSource]++;
  return {
    total: items.length,
    captioned: items.length - bySource.none,
    bySource,
    missing: items.filter((i) => i.captionSource === 'none').map((i) => i.key),
  };
}

// ---------------------------------------------------------------- helpers

function keyOf(root: string, abs: string): string {
  return relative(root, abs).split(sep).join('/');
}

function listSome(names: string[], n = 5): string {
  return names.length <= n ? names.join(', ') : `${names.slice(0, n).join(', ')} and ${names.length - n} more`;
}

async function findImages(dir: string, skip: Set<string>): Promise<string[]> {
  const out: string[] = [];
  const entries = await readdir(dir, { withFileTypes: true }).catch((e: Error) => {
    throw new UserError(`cannot read folder ${dir}: ${e.message}`);
  });
  for (const e of entries) {
    if (e.name.startsWith('.')) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (!skip.has(resolve(p))) out.push(...(await findImages(p, skip)));
    } else if (IMAGE_EXTENSIONS.has(extname(e.name).toLowerCase())) {
      out.push(p);
    }
  }
  return out;
}

function repeatFolder(key: string): { repeats: number; classTokens: string } | undefined {
  const parts = key.split('/');
  if (parts.length < 2) return undefined;
  const m = REPEAT_FOLDER.exec(parts[0]!);
  return m ? { repeats: Number(m[1]), classTokens: m[2]!.trim() } : undefined;
}

interface MetaRow {
  fileName: string;
  caption: string;
  /** 1-based line (CSV: the header is line 1) for messages. */
  line: number;
}

/** Rows keyed by the image's absolute path; file_name is relative to the table's folder, as in HF imagefolder. */
async function readMetadata(file: string, warnings: string[]): Promise<Map<string, MetaRow>> {
  const table = await readCaptionTable(file);
  warnings.push(...table.warnings);
  const base = dirname(file);
  return new Map(table.rows.map((r) => [tableEntryPath(base, r.fileName), { fileName: r.fileName, caption: r.caption, line: r.line }]));
}

async function findCaption(
  image: string,
  row: MetaRow | undefined,
  classTokens: string | undefined,
  extension: string,
): Promise<{ caption: string; source: CaptionSource }> {
  if (row?.caption) return { caption: row.caption, source: 'metadata' };
  const sidecar = join(dirname(image), basename(image, extname(image)) + extension);
  const text = await readFile(sidecar, 'utf8').catch(() => undefined);
  if (text !== undefined) {
    const first = text.replace(/^\uFEFF/, '').split(/\r?\n/)[0]!.trim();
    if (first) return { caption: first, source: 'sidecar' };
  }
  if (classTokens) return { caption: classTokens, source: 'folder' };
  return { caption: '', source: 'none' };
}

function missingCaptionsError(cov: CaptionCoverage, config: TrainConfig): UserError {
  const where = config.metadata_path
    ? `add rows to ${config.metadata_path} or write ${config.caption_extension} files beside the images`
    : `write a ${config.caption_extension} file beside each image (photo.png → photo${config.caption_extension}) or a metadata.csv with file_name and caption columns`;
  return new UserError(
    `${cov.missing.length} of ${cov.total} images have no caption: ${listSome(cov.missing, 10)}. ` +
      `${where}, or set allow_missing_captions: true to train them with an empty caption`,
  );
}

/** Holds out round(n × split) images chosen by seed (at least one when split > 0, never all). */
function assignValidation(items: DatasetItem[], split: number, seed: number): void {
  if (split <= 0 || items.length < 2) return;
  const n = Math.min(items.length - 1, Math.max(1, Math.round(items.length * split)));
  const chosen = shuffled(
    items.map((_, i) => i),
    seededRandom(seed, 'validation-split'),
  ).slice(0, n);
  for (const i of chosen) items[i]!.split = 'validation';
}

async function mapLimit<T, R>(xs: readonly T[], limit: number, fn: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const worker = async () => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await fn(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, xs.length) }, worker));
  return out;
}
