/**
 * Captions on disk, read and written: the metadata table (metadata.csv / metadata.jsonl with `file_name` and
 * `caption` or `text`, as Hugging Face imagefolder) and kohya sidecars (photo.png → photo.txt).
 *
 * Training reads tables through readCaptionTable; everything that writes captions (the label command, the
 * server's caption editing, auto-labelling jobs) goes through writeCaptions, so a table keeps its row order,
 * its other columns and every row nobody asked to change, and a hand-written caption is only replaced when the
 * caller says so (mode 'overwrite').
 */
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { stringify as stringifyCsv } from 'csv-stringify/sync';
import { UserError } from '../util/errors.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';
import { splitTags, TAG_SEPARATOR } from './captions.ts';
import { findTable } from './dataset-listing.ts';

export interface CaptionRow {
  /** As written in the table: relative to the table's folder. */
  fileName: string;
  caption: string;
  /** 1-based line (CSV: the header is line 1) for messages. */
  line: number;
  /** Every column of the row as read, so rewriting the table keeps what other tools put there. */
  fields: Record<string, unknown>;
}

export interface CaptionTable {
  file: string;
  format: 'csv' | 'jsonl';
  /** Column order as found ('file_name' first when the table is new). */
  columns: string[];
  captionColumn: 'caption' | 'text';
  rows: CaptionRow[];
  warnings: string[];
}

/** Reads a metadata table; every problem names the file and the row. */
export async function readCaptionTable(file: string): Promise<CaptionTable> {
  const format = extname(file).toLowerCase() === '.jsonl' ? 'jsonl' : 'csv';
  const text = (await readFile(file, 'utf8')).replace(/^\uFEFF/, '');
  const warnings: string[] = [];
  let records: Array<{ row: Record<string, unknown>; line: number }>;
  let columns: string[] = [];
  if (format === 'jsonl') {
    records = [];
    text.split(/\r?\n/).forEach((l, i) => {
      if (!l.trim()) return;
      let row: unknown;
      try {
        row = JSON.parse(l);
      } catch (e) {
        throw new UserError(`${file}: line ${i + 1} is not valid JSON: ${(e as Error).message}`);
      }
      if (!row || typeof row !== 'object' || Array.isArray(row)) throw new UserError(`${file}: line ${i + 1} is not a JSON object`);
      records.push({ row: row as Record<string, unknown>, line: i + 1 });
    });
    columns = [...new Set(records.flatMap((r) => Object.keys(r.row)))];
  } else {
    try {
      const rows = parseCsv(text, { columns: (header: string[]) => ((columns = header.map((h) => h.trim())), columns), skip_empty_lines: true, info: true }) as Array<{
        record: Record<string, string>;
        info: { lines: number };
      }>;
      records = rows.map((r) => ({ row: r.record, line: r.info.lines }));
    } catch (e) {
      throw new UserError(`${file}: not a valid CSV table: ${(e as Error).message}`);
    }
  }
  const has = new Set(columns);
  if (records.length && !has.has('file_name'))
    throw new UserError(`${file}: no 'file_name' column (columns: ${columns.join(', ')}); the first column should be file_name, as in Hugging Face imagefolder`);
  const captionColumn = has.has('caption') ? 'caption' : has.has('text') ? 'text' : undefined;
  if (records.length && !captionColumn) throw new UserError(`${file}: no caption column; name it 'caption' or 'text' (columns: ${columns.join(', ')})`);
  if (has.has('caption') && has.has('text')) warnings.push(`${file} has both 'caption' and 'text' columns; using 'caption'`);

  const rows: CaptionRow[] = [];
  const seen = new Map<string, number>();
  const base = dirname(file);
  for (const { row, line } of records) {
    const fileName = row['file_name'];
    if (typeof fileName !== 'string' || !fileName.trim()) throw new UserError(`${file}: row ${line} has an empty file_name`);
    const cap = row[captionColumn!];
    if (cap !== undefined && cap !== null && typeof cap !== 'string') throw new UserError(`${file}: row ${line}: ${captionColumn} must be text, got ${JSON.stringify(cap)}`);
    const abs = tableEntryPath(base, fileName);
    const prev = seen.get(abs);
    if (prev !== undefined) throw new UserError(`${file}: ${fileName} is listed twice (rows ${prev} and ${line}); keep one`);
    seen.set(abs, line);
    rows.push({ fileName, caption: (cap ?? '').trim(), line, fields: row });
  }
  return { file, format, columns: columns.length ? columns : ['file_name', 'caption'], captionColumn: captionColumn ?? 'caption', rows, warnings };
}

/** The image a table row names: file_name is relative to the table's folder; Windows separators are accepted. */
export function tableEntryPath(tableDir: string, fileName: string): string {
  return resolve(tableDir, fileName.trim().replace(/\\/g, '/'));
}

/** How a new caption meets an existing one. */
export const CAPTION_WRITE_MODES = ['missing', 'overwrite', 'append'] as const;
export type CaptionWriteMode = (typeof CAPTION_WRITE_MODES)[number];

export interface CaptionChange {
  /** The image, relative to the dataset folder with '/' separators. */
  key: string;
  before: string;
  after: string;
  action: 'added' | 'replaced' | 'appended' | 'kept';
}

export interface WriteCaptionsOptions {
  /** Dataset folder: update keys are relative to it. */
  root: string;
  /** 'metadata' writes the table (created as root/metadata.csv if absent); 'sidecar' writes photo.txt files. */
  target: 'metadata' | 'sidecar';
  /** The table to update; default: root/metadata.csv, or root/metadata.jsonl when only that exists. */
  table?: string | null;
  mode: CaptionWriteMode;
  /** Sidecar extension (kohya's caption_extension), default '.txt'. */
  extension?: string;
  /** Report what would change without writing anything. */
  dryRun?: boolean;
}

/**
 * Writes captions for the given images (keys relative to root). 'missing' only fills empty captions,
 * 'overwrite' replaces, 'append' adds the new caption's tags that the old one lacks. Returns one change per
 * key, 'kept' where nothing changes; writes nothing when nothing changes or on a dry run.
 */
export async function writeCaptions(updates: ReadonlyMap<string, string>, opts: WriteCaptionsOptions): Promise<CaptionChange[]> {
  const root = resolve(opts.root);
  for (const key of updates.keys()) keyInside(root, key);
  return opts.target === 'sidecar' ? writeSidecars(root, updates, opts) : writeTable(root, updates, opts);
}

/** Merges one caption into another by the mode's rule. */
export function mergeCaption(before: string, next: string, mode: CaptionWriteMode): { after: string; action: CaptionChange['action'] } {
  const old = before.trim();
  const add = next.trim();
  if (!old) return add ? { after: add, action: 'added' } : { after: old, action: 'kept' };
  if (mode === 'missing' || old === add) return { after: old, action: 'kept' };
  if (mode === 'overwrite') return { after: add, action: 'replaced' };
  const have = new Set(splitTags(old).map((t) => t.toLowerCase()));
  const extra = splitTags(add).filter((t) => !have.has(t.toLowerCase()) && (have.add(t.toLowerCase()), true));
  return extra.length ? { after: [old, ...extra].join(`${TAG_SEPARATOR} `), action: 'appended' } : { after: old, action: 'kept' };
}

function keyInside(root: string, key: string): string {
  const abs = resolve(root, key);
  const rel = relative(root, abs);
  if (!rel || rel.startsWith('..') || rel.includes(`..${sep}`) || resolve(rel) === rel) throw new UserError(`caption key '${key}' is outside the dataset folder ${root}`);
  return abs;
}

async function writeSidecars(root: string, updates: ReadonlyMap<string, string>, opts: WriteCaptionsOptions): Promise<CaptionChange[]> {
  const ext = opts.extension ?? '.txt';
  const changes: CaptionChange[] = [];
  for (const [key, caption] of updates) {
    const image = keyInside(root, key);
    const file = join(dirname(image), basename(image, extname(image)) + ext);
    const text = await readFile(file, 'utf8').catch(() => '');
    const before = text.replace(/^\uFEFF/, '').split(/\r?\n/)[0]!.trim();
    const { after, action } = mergeCaption(before, caption, opts.mode);
    changes.push({ key, before, after, action });
    if (action !== 'kept' && !opts.dryRun) await writeBufferAtomic(file, `${after}\n`);
  }
  return changes;
}

async function writeTable(root: string, updates: ReadonlyMap<string, string>, opts: WriteCaptionsOptions): Promise<CaptionChange[]> {
  const file = opts.table ?? (await findTable(root)) ?? join(root, 'metadata.csv');
  const existing = await readCaptionTable(file).catch((e: NodeJS.ErrnoException | UserError) => {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  });
  const table: CaptionTable = existing ?? { file, format: extname(file).toLowerCase() === '.jsonl' ? 'jsonl' : 'csv', columns: ['file_name', 'caption'], captionColumn: 'caption', rows: [], warnings: [] };
  const base = dirname(file);
  const byPath = new Map(table.rows.map((r) => [tableEntryPath(base, r.fileName), r]));
  const changes: CaptionChange[] = [];
  let dirty = false;
  for (const [key, caption] of updates) {
    const image = keyInside(root, key);
    let row = byPath.get(image);
    const { after, action } = mergeCaption(row?.caption ?? '', caption, opts.mode);
    changes.push({ key, before: row?.caption ?? '', after, action });
    if (action === 'kept') continue;
    dirty = true;
    if (!row) {
      const fileName = relative(base, image).split(sep).join('/');
      row = { fileName, caption: after, line: 0, fields: { file_name: fileName } };
      table.rows.push(row);
      byPath.set(image, row);
    }
    row.caption = after;
    row.fields[table.captionColumn] = after;
  }
  if (dirty && !opts.dryRun) await writeBufferAtomic(file, formatTable(table));
  return changes;
}

/** The table as text, columns in their original order. */
export function formatTable(table: CaptionTable): string {
  if (table.format === 'jsonl') return table.rows.map((r) => JSON.stringify(r.fields)).join('\n') + (table.rows.length ? '\n' : '');
  const columns = table.columns.includes(table.captionColumn) ? table.columns : [...table.columns, table.captionColumn];
  return stringifyCsv(
    table.rows.map((r) => columns.map((c) => (r.fields[c] ?? '') as string)),
    { header: true, columns },
  );
}
