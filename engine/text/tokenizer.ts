import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync } from 'node:zlib';
import { UserError } from '../util/errors.ts';
import { BYTE_TO_UNICODE, bytesToSymbols } from './byte-unicode.ts';
import { cleanClipText } from './clip-clean.ts';

/**
 * CLIP's BPE tokenizer, giving the ids of OpenAI CLIP / open_clip's `SimpleTokenizer`: CLIP's text cleaning
 * (`cleanClipText`); split into words with CLIP's pattern; each word's UTF-8 bytes go through the
 * byte-to-unicode alphabet, its last symbol gets `</w>`, then merges apply in rank order. Reads
 * `tokenizer.json`, `vocab.json` + `merges.txt`, or CLIP's own `bpe_simple_vocab_16e6.txt.gz`; the project
 * ships the last (`BUNDLED_CLIP_TOKENIZER`), so single-file checkpoints need no download.
 */

const END_OF_WORD = '</w>';
/** CLIP's own merges file, as OpenAI CLIP and open_clip ship it. */
export const CLIP_BPE_GZ = 'bpe_simple_vocab_16e6.txt.gz';
/** The CLIP vocabulary this project ships (MIT; its license sits beside it). */
export const BUNDLED_CLIP_TOKENIZER = fileURLToPath(new URL('./clip-bpe', import.meta.url));

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** CLIP's word pattern; the special-token strings come first so they stay whole. */
function wordPattern(specials: string[]): RegExp {
  // `\s` of the reference (Python `regex`) is Unicode White_Space, which JavaScript's `\s` is not quite.
  return new RegExp(
    [...specials.map(escapeRegExp), "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\p{White_Space}\\p{L}\\p{N}]+"].join('|'),
    'gu',
  );
}

export interface ClipTokenizerFiles {
  vocab: Record<string, number>;
  /** Merge pairs in rank order, each as [left, right]. */
  merges: Array<[string, string]>;
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  unkToken?: string;
  /**
   * The strings that stand for the start / end token when they appear in a prompt. Default: the tokens'
   * own names (transformers). open_clip's are `<start_of_text>` / `<end_of_text>`, and it splits
   * `<|startoftext|>` like any other text.
   */
  textSpecials?: { bos: string; eos: string };
}

export class ClipTokenizer {
  readonly bos: number;
  readonly eos: number;
  /** Id used after the end token when padding to 77 (SD1: the end token itself). */
  readonly pad: number;
  private readonly unk: number;
  private readonly vocab: Map<string, number>;
  private readonly ranks = new Map<string, number>();
  private readonly specials = new Map<string, number>();
  private readonly pattern: RegExp;
  private readonly cache = new Map<string, number[]>();

  constructor(files: ClipTokenizerFiles) {
    this.vocab = new Map(Object.entries(files.vocab));
    files.merges.forEach(([a, b], i) => {
      const key = `${a} ${b}`;
      if (!this.ranks.has(key)) this.ranks.set(key, i);
    });
    const id = (token: string, what: string) => {
      const v = this.vocab.get(token);
      if (v === undefined) throw new UserError(`tokenizer vocabulary has no ${what} token ${JSON.stringify(token)}`);
      return v;
    };
    const bosToken = files.bosToken ?? '<|startoftext|>';
    const eosToken = files.eosToken ?? '<|endoftext|>';
    this.bos = id(bosToken, 'start');
    this.eos = id(eosToken, 'end');
    this.pad = id(files.padToken ?? eosToken, 'padding');
    this.unk = id(files.unkToken ?? eosToken, 'unknown');
    const inText = files.textSpecials ?? { bos: bosToken, eos: eosToken };
    this.specials.set(inText.bos, this.bos);
    this.specials.set(inText.eos, this.eos);
    this.pattern = wordPattern([inText.bos, inText.eos]);
  }

  /** Id of a vocabulary entry, e.g. `',</w>'`; undefined when absent. */
  tokenId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  get vocabSize(): number {
    return this.vocab.size;
  }

  /**
   * Refuses a text encoder whose embedding table is smaller than this vocabulary (its ids would index past
   * it): the sign of a custom model that needs its own tokenizer files.
   */
  checkFits(embeddingRows: number, model: string): void {
    let maxId = 0;
    for (const id of this.vocab.values()) maxId = Math.max(maxId, id);
    if (maxId < embeddingRows) return;
    throw new UserError(
      `the CLIP tokenizer has ids up to ${maxId}, but the text encoder of ${model} has only ${embeddingRows} token embeddings: ` +
        `this model needs its own tokenizer files (tokenizer.json, or vocab.json + merges.txt); pass their folder as the tokenizer`,
    );
  }

  /** Token ids of `text`, without start/end tokens and without truncation. */
  encode(text: string): number[] {
    const out: number[] = [];
    for (const m of cleanClipText(text).matchAll(this.pattern)) {
      const word = m[0];
      const special = this.specials.get(word);
      if (special !== undefined) {
        out.push(special);
        continue;
      }
      for (const id of this.bpe(word)) out.push(id);
    }
    return out;
  }

  /** `[bos, ...ids, eos]` padded with `pad` (or truncated, keeping the end token) to `length`, as transformers pads to 77. */
  encodePadded(text: string, length = 77): number[] {
    const ids = [this.bos, ...this.encode(text)].slice(0, length - 1);
    ids.push(this.eos);
    while (ids.length < length) ids.push(this.pad);
    return ids;
  }

  private bpe(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    let symbols = bytesToSymbols(word);
    symbols[symbols.length - 1] += END_OF_WORD;
    while (symbols.length > 1) {
      let best = -1;
      let bestRank = Infinity;
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          best = i;
        }
      }
      if (best < 0) break;
      const first = symbols[best]!;
      const second = symbols[best + 1]!;
      // Merge every occurrence of the pair, left to right, as the reference does.
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; ) {
        if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
          merged.push(first + second);
          i += 2;
        } else {
          merged.push(symbols[i]!);
          i += 1;
        }
      }
      symbols = merged;
    }
    const ids = symbols.map((s) => this.vocab.get(s) ?? this.unk);
    if (this.cache.size < 100_000) this.cache.set(word, ids);
    return ids;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    (s) => s.isFile() || s.isDirectory(),
    () => false,
  );
}

async function readJson(path: string): Promise<unknown> {
  const text = await readFile(path, 'utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`${path} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') {
    return (v as { content: string }).content;
  }
  return undefined;
}

function parseMergeLines(text: string, path: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((line, i) => {
    if (line.length === 0 || (i === 0 && line.startsWith('#version'))) return;
    const parts = line.split(' ');
    if (parts.length !== 2) throw new UserError(`${path} line ${i + 1}: expected two symbols, got ${JSON.stringify(line)}`);
    out.push([parts[0]!, parts[1]!]);
  });
  return out;
}

/** CLIP uses the first 49152 − 256 − 2 merges of its file: 256 byte symbols, 256 with `</w>`, the merges and 2 specials make 49408 ids. */
const CLIP_MERGES = 49152 - 256 - 2;

/**
 * CLIP's tokenizer from its own merges file: ids 0–255 are the byte symbols in byte-to-unicode table order
 * (the printable bytes first, then the rest), 256–511 the same with `</w>`, then one token per merge in rank
 * order, then the start and end tokens.
 */
export async function loadClipBpeGz(path: string): Promise<ClipTokenizer> {
  let lines: string[];
  try {
    lines = gunzipSync(await readFile(path)).toString('utf8').split('\n');
  } catch (e) {
    throw new UserError(`${path}: not a gzip'd CLIP merges file (${(e as Error).message})`, { cause: e });
  }
  if (!lines[0]?.includes('#version') || lines.length <= CLIP_MERGES) {
    throw new UserError(`${path}: expected CLIP's merges file (a '#version' header line and at least ${CLIP_MERGES} merges)`);
  }
  const merges = lines.slice(1, CLIP_MERGES + 1).map((line, i): [string, string] => {
    const parts = line.split(' ');
    if (parts.length !== 2) throw new UserError(`${path} line ${i + 2}: expected two symbols, got ${JSON.stringify(line)}`);
    return [parts[0]!, parts[1]!];
  });
  const printable = BYTE_TO_UNICODE.filter((c) => c.charCodeAt(0) < 256);
  const rest = BYTE_TO_UNICODE.filter((c) => c.charCodeAt(0) >= 256);
  const symbols = [...printable, ...rest];
  const tokens = [...symbols, ...symbols.map((s) => s + END_OF_WORD), ...merges.map(([a, b]) => a + b), '<|startoftext|>', '<|endoftext|>'];
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => (vocab[t] = i));
  return new ClipTokenizer({ vocab, merges, textSpecials: { bos: '<start_of_text>', eos: '<end_of_text>' } });
}

/** Whether `dir` holds files `loadClipTokenizer` reads. */
export async function hasTokenizerFiles(dir: string): Promise<boolean> {
  return (
    (await exists(join(dir, 'tokenizer.json'))) ||
    ((await exists(join(dir, 'vocab.json'))) && (await exists(join(dir, 'merges.txt')))) ||
    (await exists(join(dir, CLIP_BPE_GZ)))
  );
}

/**
 * Loads a CLIP tokenizer from `dir` (or from `dir/tokenizer`, a diffusers model folder):
 * `tokenizer.json` if present, else `vocab.json` + `merges.txt`, else `bpe_simple_vocab_16e6.txt.gz`;
 * special tokens from `tokenizer_config.json` / `special_tokens_map.json` when present.
 */
export async function loadClipTokenizer(dir: string): Promise<ClipTokenizer> {
  const candidates = [dir, join(dir, 'tokenizer')];
  for (const d of candidates) {
    const hasJson = await exists(join(d, 'tokenizer.json'));
    const hasPair = (await exists(join(d, 'vocab.json'))) && (await exists(join(d, 'merges.txt')));
    if (!hasJson && !hasPair) {
      if (await exists(join(d, CLIP_BPE_GZ))) return loadClipBpeGz(join(d, CLIP_BPE_GZ));
      continue;
    }
    const special = await readSpecialTokens(d);
    if (hasJson) return new ClipTokenizer({ ...(await readTokenizerJson(join(d, 'tokenizer.json'))), ...special });
    const vocabPath = join(d, 'vocab.json');
    const vocab = await readJson(vocabPath);
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) throw new UserError(`${vocabPath}: expected an object of token -> id`);
    const mergesPath = join(d, 'merges.txt');
    const merges = parseMergeLines(await readFile(mergesPath, 'utf8'), mergesPath);
    return new ClipTokenizer({ vocab: vocab as Record<string, number>, merges, ...special });
  }
  throw new UserError(
    `no CLIP tokenizer in ${dir}: expected tokenizer.json, vocab.json and merges.txt, or ${CLIP_BPE_GZ} (there or in ${join(dir, 'tokenizer')}). ` +
      `Leave the tokenizer unset to use the CLIP vocabulary that ships with lora-scripts.`,
    { status: 400 },
  );
}

async function readTokenizerJson(path: string): Promise<ClipTokenizerFiles> {
  const j = (await readJson(path)) as {
    model?: { type?: string; vocab?: Record<string, number>; merges?: Array<string | [string, string]>; unk_token?: string };
  };
  const model = j?.model;
  if (!model || model.type !== 'BPE' || !model.vocab || !Array.isArray(model.merges)) {
    throw new UserError(`${path}: expected a BPE tokenizer with model.vocab and model.merges`);
  }
  const merges = model.merges.map((m, i): [string, string] => {
    const parts = typeof m === 'string' ? m.split(' ') : m;
    if (!Array.isArray(parts) || parts.length !== 2) throw new UserError(`${path}: model.merges[${i}] is not a pair`);
    return [parts[0]!, parts[1]!];
  });
  return { vocab: model.vocab, merges, unkToken: model.unk_token ?? undefined };
}

async function readSpecialTokens(dir: string): Promise<Partial<ClipTokenizerFiles>> {
  const out: Partial<ClipTokenizerFiles> = {};
  for (const name of ['special_tokens_map.json', 'tokenizer_config.json']) {
    const p = join(dir, name);
    if (!(await exists(p))) continue;
    const j = (await readJson(p)) as Record<string, unknown>;
    const bos = tokenContent(j.bos_token);
    const eos = tokenContent(j.eos_token);
    const pad = tokenContent(j.pad_token);
    const unk = tokenContent(j.unk_token);
    if (bos) out.bosToken = bos;
    if (eos) out.eosToken = eos;
    if (pad) out.padToken = pad;
    if (unk) out.unkToken = unk;
  }
  return out;
}
