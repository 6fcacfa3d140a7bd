/**
 * Dataset upload: `multipart/form-data` with image files (png, jpg, webp), `.txt` caption sidecars and a
 * `metadata.csv` / `metadata.jsonl`, or a single `.zip` holding them (folders allowed, e.g. kohya `10_name`).
 *
 * Nothing from the client reaches a path unchecked: names with separators, `..`, absolute or drive paths,
 * hidden names and control characters are refused (zip entries the same per component, plus symlinks,
 * encrypted and duplicate entries); sizes are limited per file, in total and in count, before and while
 * bytes arrive and before anything is inflated (413). Files are staged in a hidden folder beside the
 * datasets, every image is decoded with sharp, the caption table is read the way training reads it, and
 * only then the staged folder is renamed into `<data-dir>/datasets/<name>` in one step.
 */
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, extname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import multer, { type StorageEngine } from 'multer';
import sharp from 'sharp';
import { gated } from '../engine/image/pixel-gate.ts';
import { multipartParseError } from './multipart-error.ts';
import { parse as parseCsv } from 'csv-parse/sync';
import { loadDataset } from '../engine/train/dataset.ts';
import { HttpError } from './errors.ts';
import { checkDatasetName, describeDataset, listingConfig, type DatasetInfo } from './datasets.ts';
import { extractZipEntries, listZipEntries, ZipFormatError, type ZipEntry } from './safe-zip.ts';
import type { TrainingSettings } from './train-settings.ts';

export interface UploadResult extends DatasetInfo {
  /** Files written, relative to the dataset folder. */
  uploaded: string[];
  /** Zip entries left out on purpose (folders, macOS/Windows metadata). */
  skipped: string[];
  replaced: boolean;
}

const IMAGE_EXTS = new Set(['.png', '.jpg', '.jpeg', '.webp']);
const TABLES = new Set(['metadata.csv', 'metadata.jsonl']);
const FORMAT_OF_EXT: Record<string, string> = { '.png': 'png', '.jpg': 'jpeg', '.jpeg': 'jpeg', '.webp': 'webp' };
/** Archive litter from macOS and Windows: skipped, not refused, so ordinary zips upload. */
const JUNK = /^(__MACOSX\/|(.*\/)?(\.DS_Store|Thumbs\.db|desktop\.ini)$)/i;
const MAX_DEPTH = 8;

const refuse = (msg: string): never => {
  throw new HttpError(422, msg);
};

/** One path component as given by the client; returns it unchanged when it is safe. */
function checkComponent(c: string, full: string): string {
  if (c === '' || c === '.' || c === '..') refuse(`file name '${full}' is not allowed: it contains an empty, '.' or '..' path component`);
  if (c.startsWith('.')) refuse(`file name '${full}' is not allowed: hidden files (names starting with '.') are refused`);
  if (/[\u0000-\u001f\u007f<>:"|?*\\]/.test(c)) refuse(`file name '${full}' is not allowed: it contains a control character or one of < > : " | ? * \\`);
  if (/[. ]$/.test(c)) refuse(`file name '${full}' is not allowed: names may not end in '.' or a space`);
  if (Buffer.byteLength(c) > 255) refuse(`file name '${full}' is too long`);
  return c;
}

/** A multipart file name: one plain name, no folders. */
export function safeUploadName(name: string): string {
  if (name.includes('/') || name.includes('\\')) refuse(`file name '${name}' is not allowed: path separators are refused; send plain file names (or one .zip for folders)`);
  return checkComponent(name, name);
}

/** A zip entry name: '/'-separated relative path, each component safe. */
export function safeZipPath(name: string): string {
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) refuse(`zip entry '${name}' is not allowed: absolute paths are refused`);
  if (name.includes('\\')) refuse(`zip entry '${name}' is not allowed: backslashes are refused`);
  const parts = name.split('/');
  if (parts.length > MAX_DEPTH) refuse(`zip entry '${name}' is nested too deep (at most ${MAX_DEPTH} levels)`);
  for (const c of parts) checkComponent(c, name);
  return parts.join('/');
}

type Kind = 'image' | 'caption' | 'table';

function kindOf(rel: string): Kind {
  const ext = extname(rel).toLowerCase();
  if (IMAGE_EXTS.has(ext)) return 'image';
  if (TABLES.has(rel)) return 'table';
  if (TABLES.has(basename(rel))) refuse(`'${rel}': the caption table must be at the top of the dataset, not in a folder`);
  if (ext === '.txt') return 'caption';
  return refuse(`'${rel}' is not accepted: upload png, jpg or webp images, .txt captions, metadata.csv or metadata.jsonl (or one .zip of them)`);
}

const tooLarge = (msg: string) => new HttpError(413, msg);

/** Streams each file into the staging folder, counting the bytes of the whole request against the total. */
class StagingStorage implements StorageEngine {
  private n = 0;
  private total = 0;

  constructor(
    private readonly dir: string,
    private readonly maxTotal: number,
  ) {}

  _handleFile(_req: Request, file: Express.Multer.File, cb: (error?: unknown, info?: Partial<Express.Multer.File>) => void): void {
    const path = join(this.dir, `part-${this.n++}`);
    const out = createWriteStream(path, { flags: 'wx' });
    const src = file.stream;
    let size = 0;
    let settled = false;
    let failed = false;
    const settle = (err: unknown, info?: Partial<Express.Multer.File>) => {
      if (settled) return;
      settled = true;
      cb(err, info);
    };
    const abandon = (err: unknown) => {
      if (settled || failed) return;
      failed = true;
      out.destroy();
      // Keep reading so the parser can finish the request; the bytes go nowhere.
      src.resume();
      void rm(path, { force: true }).finally(() => settle(err));
    };
    src.on('data', (chunk: Buffer) => {
      if (settled || failed) return;
      size += chunk.length;
      this.total += chunk.length;
      if (this.total > this.maxTotal) return abandon(tooLarge(`upload is larger than the limit of ${this.maxTotal} bytes in total`));
      if (!out.write(chunk)) {
        src.pause();
        out.once('drain', () => src.resume());
      }
    });
    src.on('error', abandon);
    out.on('error', abandon);
    src.on('end', () => {
      if (!settled && !failed) out.end(() => settle(null, { path, size }));
    });
  }

  _removeFile(_req: Request, file: Express.Multer.File, cb: (error: Error | null) => void): void {
    rm(file.path, { force: true }).then(() => cb(null), cb);
  }
}

function multerError(e: multer.MulterError, s: TrainingSettings): HttpError {
  const file = (e as { filename?: string }).filename;
  switch (e.code) {
    case 'LIMIT_FILE_SIZE':
      return tooLarge(`file${file ? ` '${file}'` : ''} is larger than the limit of ${s.maxUploadFileBytes} bytes per file`);
    case 'LIMIT_FILE_COUNT':
    case 'LIMIT_PART_COUNT':
      return tooLarge(`too many files in one upload (limit ${s.maxUploadFiles})`);
    default:
      return new HttpError(422, `bad multipart upload: ${e.message}`);
  }
}

function receive(req: Request, res: Response, staging: string, s: TrainingSettings): Promise<Express.Multer.File[]> {
  const seen = new Set<string>();
  const upload = multer({
    storage: new StagingStorage(staging, s.maxUploadTotalBytes),
    // Without this, busboy cuts names to their last component and '../../x.png' would pass as 'x.png'.
    preservePath: true,
    defParamCharset: 'utf8',
    limits: { fileSize: s.maxUploadFileBytes, files: s.maxUploadFiles, parts: s.maxUploadFiles + 16, fields: 16, fieldSize: 64 * 1024 },
    fileFilter: (_req, file, cb) => {
      try {
        const name = safeUploadName(file.originalname);
        if (extname(name).toLowerCase() !== '.zip') kindOf(name);
        if (seen.has(name)) refuse(`file '${name}' is sent twice`);
        seen.add(name);
        cb(null, true);
      } catch (e) {
        cb(e as Error);
      }
    },
  }).any();
  return new Promise((resolve, reject) => {
    upload(req, res, (err: unknown) => {
      if (err instanceof multer.MulterError) reject(multerError(err, s));
      else if (err) reject(multipartParseError(err) ?? err);
      else resolve((req.files as Express.Multer.File[] | undefined) ?? []);
    });
  });
}

/** Checks the zip's entries, then inflates the accepted ones into `dataDir`. */
async function unpackZip(zipPath: string, dataDir: string, s: TrainingSettings): Promise<{ written: string[]; skipped: string[] }> {
  const buf = new Uint8Array(await readFile(zipPath));
  let entries: ZipEntry[];
  try {
    entries = listZipEntries(buf);
  } catch (e) {
    if (e instanceof ZipFormatError) refuse(`the .zip cannot be read: ${e.message}`);
    throw e;
  }
  const accepted: ZipEntry[] = [];
  const skipped: string[] = [];
  const names = new Set<string>();
  const files: string[] = [];
  let total = 0;
  for (const e of entries) {
    if (JUNK.test(e.name)) {
      skipped.push(e.name);
      continue;
    }
    if (e.isSymlink) refuse(`zip entry '${e.name}' is a symbolic link; links are refused`);
    const rel = safeZipPath(e.isDirectory ? e.name.replace(/\/+$/, '') : e.name);
    if (e.isDirectory) {
      skipped.push(e.name);
      continue;
    }
    if (e.encrypted) refuse(`zip entry '${e.name}' is encrypted`);
    if (e.method !== 0 && e.method !== 8) refuse(`zip entry '${e.name}' uses compression method ${e.method}; only stored and deflate are supported`);
    kindOf(rel);
    if (names.has(rel.toLowerCase())) refuse(`zip entry '${rel}' appears twice`);
    names.add(rel.toLowerCase());
    files.push(rel.toLowerCase());
    if (e.size > s.maxUploadFileBytes) throw tooLarge(`zip entry '${rel}' unpacks to ${e.size} bytes, over the limit of ${s.maxUploadFileBytes} bytes per file`);
    total += e.size;
    if (total > s.maxUploadTotalBytes) throw tooLarge(`the zip unpacks to more than the limit of ${s.maxUploadTotalBytes} bytes in total`);
    accepted.push(e);
  }
  if (accepted.length > s.maxUploadFiles) throw tooLarge(`the zip holds ${accepted.length} files, over the limit of ${s.maxUploadFiles}`);
  // A file and a folder of the same name ('a.png' and 'a.png/b.png') cannot both be unpacked.
  for (const f of files) {
    const parts = f.split('/');
    for (let i = 1; i < parts.length; i++) {
      const folder = parts.slice(0, i).join('/');
      if (names.has(folder)) refuse(`zip entries '${folder}' and '${f}' conflict: '${folder}' is both a file and a folder`);
    }
  }
  let unpacked: Map<string, Uint8Array>;
  try {
    unpacked = extractZipEntries(buf, accepted);
  } catch (e) {
    if (e instanceof ZipFormatError) refuse(e.message);
    throw e;
  }
  const written: string[] = [];
  for (const [name, data] of unpacked) {
    const target = join(dataDir, ...name.split('/'));
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, data, { flag: 'wx' });
    written.push(name);
  }
  return { written, skipped };
}

/** Every image decodes completely, in one of the accepted formats, within the pixel limit. */
async function verifyImages(dataDir: string, rels: string[], s: TrainingSettings): Promise<void> {
  for (const rel of rels.filter((r) => kindOf(r) === 'image')) {
    const p = join(dataDir, ...rel.split('/'));
    try {
      const img = sharp(p, { limitInputPixels: s.maxImagePixels });
      const meta = await img.metadata();
      if (!['png', 'jpeg', 'webp'].includes(meta.format ?? '')) refuse(`'${rel}' is not a png, jpeg or webp image (sharp reads it as ${meta.format ?? 'unknown'})`);
      if (meta.format !== FORMAT_OF_EXT[extname(rel).toLowerCase()]) refuse(`'${rel}' is a ${meta.format} image; give it a matching extension`);
      await gated((meta.width ?? 0) * (meta.height ?? 0), () => img.stats());
    } catch (e) {
      if (e instanceof HttpError) throw e;
      refuse(`'${rel}' is not a readable image: ${(e as Error).message}`);
    }
  }
}

/** file_name values of the caption table must name files inside the dataset (no '..', no absolute paths). */
async function checkTable(dataDir: string): Promise<string | null> {
  for (const name of TABLES) {
    const p = join(dataDir, name);
    const text = await readFile(p, 'utf8').catch(() => null);
    if (text === null) continue;
    const names: unknown[] = [];
    try {
      if (name.endsWith('.jsonl')) {
        for (const line of text.split(/\r?\n/)) if (line.trim()) names.push((JSON.parse(line) as { file_name?: unknown }).file_name);
      } else {
        const rows = parseCsv(text.replace(/^\uFEFF/, ''), { columns: true, skip_empty_lines: true }) as Record<string, unknown>[];
        for (const r of rows) names.push(r['file_name']);
      }
    } catch (e) {
      refuse(`${name} cannot be read: ${(e as Error).message}`);
    }
    for (const n of names) {
      if (typeof n !== 'string') continue;
      const rel = n.trim().replace(/\\/g, '/');
      try {
        safeZipPath(rel);
      } catch {
        refuse(`${name}: file_name '${n}' must name a file inside the dataset (no '..', absolute or hidden paths)`);
      }
    }
    return p;
  }
  return null;
}

/**
 * Handles `POST /sdapi/v1/train/datasets/{name}`. `replace` swaps an existing dataset for the upload;
 * without it an existing name answers 409. `inUse` tells whether a queued or running training reads a folder.
 */
export async function receiveDatasetUpload(
  req: Request,
  res: Response,
  s: TrainingSettings,
  rawName: string,
  opts: { replace: boolean; inUse: (dir: string) => boolean },
): Promise<UploadResult> {
  const name = checkDatasetName(rawName);
  if (!req.is('multipart/form-data')) throw new HttpError(415, 'send the dataset as multipart/form-data (image files and metadata.csv, or one .zip)');
  await mkdir(s.datasetsDir, { recursive: true });
  const target = join(s.datasetsDir, name);
  const exists = Boolean(await stat(target).catch(() => null));
  if (exists && !opts.replace) throw new HttpError(409, `dataset '${name}' already exists; add ?replace=true to replace it, or DELETE it first`);
  if (exists && opts.inUse(target)) throw new HttpError(409, `dataset '${name}' is used by a queued or running training`);
  const declared = Number(req.headers['content-length']);
  // Multipart framing adds a little to the file bytes; the exact count is made while receiving.
  if (Number.isFinite(declared) && declared > s.maxUploadTotalBytes + 1024 * 1024) {
    throw tooLarge(`upload of ${declared} bytes is larger than the limit of ${s.maxUploadTotalBytes} bytes in total`);
  }

  const staging = await mkdtemp(join(s.datasetsDir, '.upload-'));
  try {
    const files = await receive(req, res, staging, s);
    if (files.length === 0) refuse('no files in the upload; send images and metadata.csv, or one .zip');
    const dataDir = join(staging, 'data');
    await mkdir(dataDir);
    let uploaded: string[] = [];
    let skipped: string[] = [];
    const zips = files.filter((f) => extname(f.originalname).toLowerCase() === '.zip');
    if (zips.length) {
      if (files.length > 1) refuse('send either one .zip or loose files, not both');
      ({ written: uploaded, skipped } = await unpackZip(zips[0]!.path, dataDir, s));
    } else {
      for (const f of files) {
        await rename(f.path, join(dataDir, f.originalname));
        uploaded.push(f.originalname);
      }
    }
    uploaded.sort();
    if (!uploaded.some((r) => kindOf(r) === 'image')) refuse('the upload holds no png, jpg or webp images');
    await verifyImages(dataDir, uploaded, s);
    const table = await checkTable(dataDir);
    try {
      await loadDataset(listingConfig(dataDir, table, join(staging, '.none')));
    } catch (e) {
      refuse((e as Error).message.split(dataDir).join(name));
    }

    if (exists) {
      if (opts.inUse(target)) throw new HttpError(409, `dataset '${name}' is used by a queued or running training`);
      const old = join(s.datasetsDir, `.replaced-${randomBytes(6).toString('hex')}`);
      await rename(target, old);
      await rename(dataDir, target);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(dataDir, target).catch((e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOTEMPTY' || e.code === 'EEXIST') throw new HttpError(409, `dataset '${name}' was created by another upload meanwhile`);
        throw e;
      });
    }
    return { ...(await describeDataset(target, name, s)), uploaded, skipped, replaced: exists };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
