/**
 * Text datasets for causal-LM LoRA training: every `.jsonl` / `.csv` file in a folder, one example per row,
 * in one of three shapes:
 * - `text`: plain text, loss on every token;
 * - `instruction` (+ optional `input`) and `output`: loss on the output only;
 * - `messages`: a chat ([{role, content}, …]), loss on the assistant turns only.
 * Instructions and chats go through the model's chat template (instruction + input become the user turn);
 * a model without one gets Alpaca's prompt format for instructions and refuses chats.
 *
 * Tokens of a chat are made by rendering the template for every prefix of the conversation: the text each
 * assistant turn adds is the difference between the render that ends with it and the render that opens it
 * (`add_generation_prompt`), so the masks follow the template wherever it puts its role markers.
 */
import { readdir, readFile } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { seededRandom, shuffled } from '../train/seeded-random.ts';
import { UserError } from '../util/errors.ts';
import type { ChatMessage, LlmTokenizer } from './tokenizer.ts';

export interface Example {
  /** file:line, for messages. */
  source: string;
  ids: number[];
  /** 1 where the token is predicted with loss (answer tokens). */
  trainable: Uint8Array;
  truncated: boolean;
  split: 'train' | 'validation';
}

export interface TextDataset {
  files: string[];
  examples: Example[];
  summary: DatasetSummary;
}

export interface DatasetSummary {
  rows: number;
  train: number;
  validation: number;
  tokens: number;
  trainableTokens: number;
  truncatedRows: number;
  byShape: Record<'text' | 'instruction' | 'messages', number>;
}

type Row = Record<string, unknown>;

async function dataFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch((e: Error) => {
    throw new UserError(`train_data_dir: cannot read ${dir}: ${e.message}`);
  });
  const files = entries
    .filter((e) => e.isFile() && ['.jsonl', '.csv'].includes(extname(e.name).toLowerCase()))
    .map((e) => join(e.parentPath, e.name))
    .sort();
  if (!files.length) throw new UserError(`train_data_dir: ${dir} has no .jsonl or .csv files (one example per row: text, instruction/input/output or messages)`);
  return files;
}

async function readRows(file: string, root: string): Promise<{ source: string; row: Row }[]> {
  const text = await readFile(file, 'utf8');
  const name = relative(root, file);
  if (extname(file).toLowerCase() === '.csv') {
    let records: Row[];
    try {
      records = parseCsv(text, { columns: true, skip_empty_lines: true, bom: true }) as Row[];
    } catch (e) {
      throw new UserError(`${name}: not valid CSV: ${(e as Error).message}`);
    }
    return records.map((row, i) => ({ source: `${name}:${i + 2}`, row }));
  }
  const out: { source: string; row: Row }[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    let row: unknown;
    try {
      row = JSON.parse(line);
    } catch (e) {
      throw new UserError(`${name}:${i + 1}: not valid JSON: ${(e as Error).message}`);
    }
    if (!row || typeof row !== 'object' || Array.isArray(row)) throw new UserError(`${name}:${i + 1}: expected a JSON object per line`);
    out.push({ source: `${name}:${i + 1}`, row: row as Row });
  });
  return out;
}

const str = (v: unknown) => (typeof v === 'string' ? v : v === undefined || v === null ? '' : String(v));

function chatOf(row: Row, source: string): ChatMessage[] {
  let m = row.messages;
  if (typeof m === 'string') {
    try {
      m = JSON.parse(m);
    } catch {
      throw new UserError(`${source}: 'messages' is not a JSON list`);
    }
  }
  if (!Array.isArray(m) || !m.length) throw new UserError(`${source}: 'messages' must be a non-empty list of {role, content}`);
  return m.map((x, i) => {
    const role = (x as Row | null)?.role;
    const content = (x as Row | null)?.content;
    if (typeof role !== 'string' || typeof content !== 'string') throw new UserError(`${source}: messages[${i}] needs a string 'role' and 'content'`);
    return { role, content };
  });
}

/** Pieces of text in order, each with whether its tokens carry loss. */
type Piece = { text: string; trainable: boolean; special: boolean };

function alpacaPieces(instruction: string, input: string, output: string, eos: string): Piece[] {
  const prompt = input
    ? `### Instruction:\n${instruction}\n\n### Input:\n${input}\n\n### Response:\n`
    : `### Instruction:\n${instruction}\n\n### Response:\n`;
  return [
    { text: prompt, trainable: false, special: true },
    { text: output + eos, trainable: true, special: false },
  ];
}

function chatPieces(tok: LlmTokenizer, messages: ChatMessage[], source: string): Piece[] {
  const pieces: Piece[] = [];
  let done = '';
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const open = tok.applyChatTemplate(messages.slice(0, i), true);
    const closed = tok.applyChatTemplate(messages.slice(0, i + 1), false);
    if (!open.startsWith(done) || !closed.startsWith(open)) {
      throw new UserError(`${source}: the chat template does not render this conversation as a growing prefix, so the assistant's tokens cannot be located`);
    }
    pieces.push({ text: open.slice(done.length), trainable: false, special: false }, { text: closed.slice(open.length), trainable: true, special: false });
    done = closed;
  });
  if (!pieces.length) throw new UserError(`${source}: the conversation has no assistant message to learn`);
  return pieces.filter((p) => p.text.length);
}

function encodePieces(tok: LlmTokenizer, pieces: Piece[]): { ids: number[]; trainable: number[] } {
  const ids: number[] = [];
  const trainable: number[] = [];
  pieces.forEach((p, i) => {
    // BOS (the post-processor's) only at the start of a plain-text or Alpaca row; templates write their own.
    const t = tok.encode(p.text, p.special && i === 0);
    ids.push(...t);
    trainable.push(...t.map(() => (p.trainable ? 1 : 0)));
  });
  return { ids, trainable };
}

export interface LoadTextOptions {
  maxSeqLength: number;
  validationSplit: number;
  seed: number;
}

/** Reads, tokenizes and splits the dataset; rows longer than maxSeqLength are cut there and counted. */
export async function loadTextDataset(dir: string, tok: LlmTokenizer, o: LoadTextOptions): Promise<TextDataset> {
  const files = await dataFiles(dir);
  const examples: Example[] = [];
  const byShape = { text: 0, instruction: 0, messages: 0 };
  const eos = tok.eosToken ?? '';
  for (const file of files) {
    for (const { source, row } of await readRows(file, dir)) {
      let pieces: Piece[];
      if (row.messages !== undefined && row.messages !== '') {
        if (!tok.hasChatTemplate) throw new UserError(`${source}: chat 'messages' need a model with a chat template (tokenizer_config.json chat_template)`);
        pieces = chatPieces(tok, chatOf(row, source), source);
        byShape.messages++;
      } else if (row.instruction !== undefined || row.output !== undefined) {
        if (typeof row.output !== 'string' || !row.output) throw new UserError(`${source}: an instruction row needs a non-empty 'output'`);
        const instruction = str(row.instruction);
        const input = str(row.input);
        pieces = tok.hasChatTemplate
          ? chatPieces(tok, [{ role: 'user', content: input ? `${instruction}\n\n${input}` : instruction }, { role: 'assistant', content: row.output }], source)
          : alpacaPieces(instruction, input, row.output, eos);
        byShape.instruction++;
      } else if (typeof row.text === 'string' && row.text) {
        pieces = [{ text: row.text, trainable: true, special: true }, { text: eos, trainable: true, special: false }];
        byShape.text++;
      } else {
        throw new UserError(`${source}: expected a 'text', 'instruction'/'output' or 'messages' field; the row has ${Object.keys(row).join(', ') || 'none'}`);
      }
      const { ids, trainable } = encodePieces(tok, pieces.filter((p) => p.text.length));
      const truncated = ids.length > o.maxSeqLength;
      const n = Math.min(ids.length, o.maxSeqLength);
      examples.push({ source, ids: ids.slice(0, n), trainable: Uint8Array.from(trainable.slice(0, n)), truncated, split: 'train' });
    }
  }
  // The validation rows are a seeded sample: the same rows for the same data and seed.
  const nVal = o.validationSplit > 0 && examples.length > 1 ? Math.min(examples.length - 1, Math.max(1, Math.round(o.validationSplit * examples.length))) : 0;
  for (const i of shuffled(examples.map((_, i) => i), seededRandom(o.seed, 'llm-validation')).slice(0, nVal)) examples[i]!.split = 'validation';
  const summary: DatasetSummary = {
    rows: examples.length,
    train: examples.length - nVal,
    validation: nVal,
    tokens: examples.reduce((a, e) => a + e.ids.length, 0),
    trainableTokens: examples.reduce((a, e) => a + e.trainable.reduce((x, y) => x + y, 0), 0),
    truncatedRows: examples.filter((e) => e.truncated).length,
    byShape,
  };
  const learnable = examples.filter((e) => e.split === 'train' && e.trainable.slice(1).some((x) => x));
  if (!learnable.length) throw new UserError(`train_data_dir: no training row has a token to learn within max_seq_length ${o.maxSeqLength}`);
  return { files, examples, summary };
}

export function describeSummary(s: DatasetSummary, maxSeqLength: number): string {
  return (
    `dataset: ${s.rows} rows (text ${s.byShape.text}, instruction ${s.byShape.instruction}, chat ${s.byShape.messages}); ` +
    `train ${s.train}, validation ${s.validation}; ${s.tokens} tokens, ${s.trainableTokens} with loss; ` +
    `${s.truncatedRows} row${s.truncatedRows === 1 ? '' : 's'} truncated to max_seq_length ${maxSeqLength}`
  );
}

/** One micro-batch, ready to feed: rows padded to the longest, segments for packing, labels shifted. */
export interface LlmBatch {
  batch: number;
  length: number;
  ids: Int32Array;
  positions: Int32Array;
  segments: Int32Array;
  trainable: Uint8Array;
  /** Tokens that carry loss in this batch. */
  lossTokens: number;
}

/**
 * Rows of examples for one epoch: with packing, examples are packed greedily in order into rows of at most
 * maxSeqLength tokens (an example never spans two rows); without, one example per row.
 */
export function packRows(examples: readonly Example[], packing: boolean, maxSeqLength: number): Example[][] {
  if (!packing) return examples.map((e) => [e]);
  const rows: Example[][] = [];
  let cur: Example[] = [];
  let used = 0;
  for (const e of examples) {
    if (used + e.ids.length > maxSeqLength && cur.length) {
      rows.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(e);
    used += e.ids.length;
  }
  if (cur.length) rows.push(cur);
  return rows;
}

/** Pads rows to one length; padding is its own segment (−1) and carries no loss. */
export function makeBatch(rows: readonly Example[][], padId: number): LlmBatch {
  const B = rows.length;
  const T = Math.max(...rows.map((r) => r.reduce((a, e) => a + e.ids.length, 0)));
  const ids = new Int32Array(B * T).fill(padId);
  const positions = new Int32Array(B * T);
  const segments = new Int32Array(B * T).fill(-1);
  const trainable = new Uint8Array(B * T);
  rows.forEach((row, b) => {
    let t = 0;
    row.forEach((e, s) => {
      for (let k = 0; k < e.ids.length; k++, t++) {
        ids[b * T + t] = e.ids[k]!;
        positions[b * T + t] = k;
        segments[b * T + t] = s;
        trainable[b * T + t] = e.trainable[k]!;
      }
    });
    for (let p = 0; t < T; t++, p++) positions[b * T + t] = p;
  });
  let lossTokens = 0;
  for (let i = 0; i < B * T; i++) if ((i + 1) % T !== 0 && trainable[i + 1] && segments[i] === segments[i + 1] && segments[i]! >= 0) lossTokens++;
  return { batch: B, length: T, ids, positions, segments, trainable, lossTokens };
}

/** The epoch's micro-batches: training rows shuffled by (seed, epoch), packed, cut into batches. */
export function epochBatches(examples: readonly Example[], o: { seed: number; epoch: number; batchSize: number; packing: boolean; maxSeqLength: number }): Example[][][] {
  const train = examples.filter((e) => e.split === 'train');
  const order = shuffled(train, seededRandom(o.seed, 'llm-epoch', o.epoch));
  const rows = packRows(order, o.packing, o.maxSeqLength);
  const out: Example[][][] = [];
  for (let i = 0; i < rows.length; i += o.batchSize) out.push(rows.slice(i, i + o.batchSize));
  return out;
}
