/**
 * PNG text chunks and A1111 "infotext" (the `parameters` chunk that A1111, ComfyUI importers, Civitai and
 * image viewers read back as generation settings).
 *
 * Writing: a `tEXt` chunk when the text is Latin-1 (what PIL writes), else an uncompressed `iTXt` (UTF-8).
 * Reading: `tEXt`, `zTXt` and `iTXt`, compressed or not.
 * Formatting and parsing follow A1111 v1.10 `create_infotext` and `parse_generation_parameters`.
 */
import { crc32, inflateSync } from 'node:zlib';
import { UserError } from '../util/errors.ts';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export function isPng(buf: Uint8Array): boolean {
  return buf.length >= 8 && Buffer.from(buf.buffer, buf.byteOffset, 8).equals(SIGNATURE);
}

interface Chunk {
  type: string;
  data: Buffer;
  /** Offset of the chunk's length field. */
  start: number;
  /** Offset just past its CRC. */
  end: number;
}

function* chunks(png: Buffer, what: string): Generator<Chunk> {
  if (!isPng(png)) throw new UserError(`${what}: not a PNG file`);
  let p = 8;
  while (p + 12 <= png.length) {
    const len = png.readUInt32BE(p);
    const type = png.toString('latin1', p + 4, p + 8);
    const end = p + 12 + len;
    if (end > png.length) throw new UserError(`${what}: PNG chunk '${type}' runs past the end of the file`);
    yield { type, data: png.subarray(p + 8, p + 8 + len), start: p, end };
    if (type === 'IEND') return;
    p = end;
  }
}

function makeChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(data, crc32(head.subarray(4, 8))) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

function textChunk(key: string, value: string): Buffer {
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(key)) throw new UserError(`PNG text key '${key}' must be 1-79 Latin-1 characters`);
  // eslint-disable-next-line no-control-regex
  if (/^[\x00-\xff]*$/.test(value)) return makeChunk('tEXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0]), Buffer.from(value, 'latin1')]));
  // iTXt: keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
  return makeChunk('iTXt', Buffer.concat([Buffer.from(key, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(value, 'utf8')]));
}

/** All text chunks of a PNG, keyword → text (the first chunk wins when a keyword repeats). */
export function readPngText(png: Uint8Array, what = 'image'): Record<string, string> {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const out: Record<string, string> = {};
  for (const c of chunks(buf, what)) {
    if (c.type !== 'tEXt' && c.type !== 'zTXt' && c.type !== 'iTXt') continue;
    const z = c.data.indexOf(0);
    if (z <= 0) continue;
    const key = c.data.toString('latin1', 0, z);
    let text: string;
    try {
      if (c.type === 'tEXt') text = c.data.toString('latin1', z + 1);
      else if (c.type === 'zTXt') text = inflateSync(c.data.subarray(z + 2)).toString('latin1');
      else {
        const compressed = c.data[z + 1] === 1;
        const langEnd = c.data.indexOf(0, z + 3);
        const transEnd = c.data.indexOf(0, langEnd + 1);
        if (langEnd < 0 || transEnd < 0) continue;
        const body = c.data.subarray(transEnd + 1);
        text = (compressed ? inflateSync(body) : body).toString('utf8');
      }
    } catch {
      continue; // a damaged text chunk is skipped, as image viewers do
    }
    if (!(key in out)) out[key] = text;
  }
  return out;
}

/** Returns a copy of the PNG with these text chunks set (replacing chunks with the same keywords), before IDAT. */
export function writePngText(png: Uint8Array, entries: Record<string, string>, what = 'image'): Buffer {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  const keys = new Set(Object.keys(entries));
  const parts: Buffer[] = [SIGNATURE];
  let inserted = false;
  for (const c of chunks(buf, what)) {
    if ((c.type === 'tEXt' || c.type === 'zTXt' || c.type === 'iTXt') && keys.has(c.data.toString('latin1', 0, Math.max(0, c.data.indexOf(0))))) continue;
    if (!inserted && (c.type === 'IDAT' || c.type === 'IEND')) {
      for (const [k, v] of Object.entries(entries)) parts.push(textChunk(k, v));
      inserted = true;
    }
    parts.push(buf.subarray(c.start, c.end));
  }
  if (!inserted) throw new UserError(`${what}: PNG has no IDAT/IEND chunk`);
  return Buffer.concat(parts);
}

export type InfotextValue = string | number | boolean | null | undefined;

/** A1111 `infotext_utils.quote`: JSON-quote values containing `,`, `:` or a newline. */
export function quoteInfotextValue(v: string): string {
  if (!v.includes(',') && !v.includes('\n') && !v.includes(':')) return v;
  return JSON.stringify(v);
}

function unquote(v: string): string {
  if (v.length < 2 || v[0] !== '"' || v[v.length - 1] !== '"') return v;
  try {
    const r: unknown = JSON.parse(v);
    return typeof r === 'string' ? r : v;
  } catch {
    return v;
  }
}

/** Python's str() of a value, which is what A1111 writes: 7.0 for floats, True/False for booleans. */
export function pyStr(v: string | number | boolean, isFloat = false): string {
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return isFloat && Number.isInteger(v) ? v.toFixed(1) : String(v);
  return v;
}

/**
 * `prompt\nNegative prompt: neg\nSteps: 20, Sampler: Euler a, …`. Entries whose value is null/undefined are
 * left out; an entry whose value equals its key is written bare, as A1111 does.
 */
export function formatInfotext(prompt: string, negativePrompt: string, params: Record<string, InfotextValue>): string {
  const items: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined) continue;
    const s = pyStr(v);
    items.push(k === s ? k : `${k}: ${quoteInfotextValue(s)}`);
  }
  const neg = negativePrompt ? `\nNegative prompt: ${negativePrompt}` : '';
  return `${prompt}${neg}\n${items.join(', ')}`.trim();
}

const RE_PARAM = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;
const RE_IMAGESIZE = /^(\d+)x(\d+)$/;

/** Keys A1111's parser fills in when the infotext lacks them (they mark the defaults of that time). */
const PARSE_DEFAULTS: Record<string, string | number | boolean> = {
  'Clip skip': '1',
  'Hires resize-1': 0,
  'Hires resize-2': 0,
  'Hires sampler': 'Use same sampler',
  'Hires schedule type': 'Use same scheduler',
  'Hires checkpoint': 'Use same checkpoint',
  'Hires prompt': '',
  'Hires negative prompt': '',
  RNG: 'GPU',
  'Schedule type': 'Automatic',
  'Schedule max sigma': 0,
  'Schedule min sigma': 0,
  'Schedule rho': 0,
  'VAE Encoder': 'Full',
  'VAE Decoder': 'Full',
  'FP8 weight': 'Disable',
  'Cache FP16 weight for LoRA': false,
  Emphasis: 'Original',
  'Refiner switch by sampling steps': false,
};

/**
 * A1111 `parse_generation_parameters`: `Prompt`, `Negative prompt`, then every `Key: value` of the last line
 * as strings (`WxH` values split into `Key-1`/`Key-2`), then the defaults above for missing keys.
 */
export function parseInfotext(text: string, opts: { defaults?: boolean } = {}): Record<string, string | number | boolean> {
  const res: Record<string, string | number | boolean> = {};
  const lines = text.trim().split('\n');
  let lastline = lines.pop() ?? '';
  if ([...lastline.matchAll(RE_PARAM)].length < 3) {
    lines.push(lastline);
    lastline = '';
  }
  let prompt = '';
  let negative = '';
  let doneWithPrompt = false;
  for (let line of lines) {
    line = line.trim();
    if (line.startsWith('Negative prompt:')) {
      doneWithPrompt = true;
      line = line.slice(16).trim();
    }
    if (doneWithPrompt) negative += (negative === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  res['Prompt'] = prompt;
  res['Negative prompt'] = negative;
  for (const m of lastline.matchAll(RE_PARAM)) {
    const k = m[1]!;
    const v = unquote(m[2]!);
    const size = RE_IMAGESIZE.exec(v);
    if (size) {
      res[`${k}-1`] = size[1]!;
      res[`${k}-2`] = size[2]!;
    } else res[k] = v;
  }
  if (opts.defaults !== false) for (const [k, v] of Object.entries(PARSE_DEFAULTS)) if (!(k in res)) res[k] = v;
  return res;
}
