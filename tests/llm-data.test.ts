// Text datasets: row shapes, loss masks by role, truncation, splits, and packing that keeps documents apart.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTextDataset, makeBatch, packRows, type Example } from '../engine/llm/data.ts';
import { LlmTokenizer } from '../engine/llm/tokenizer.ts';
import { loadLlm, llmContext, type LoadedLlm } from '../engine/llm/load.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { causalLmLoss } from '../engine/llm/objective.ts';
import { batchFeeds } from '../engine/llm/evaluate.ts';
import { compile, type CompiledGraph } from '../engine/runtime/session.ts';
import { tinyModelFolder } from './support/llm-folder.ts';

let tok: LlmTokenizer;
let model: LoadedLlm;
let lossNet: CompiledGraph;
let work: string;
const opts = { maxSeqLength: 64, validationSplit: 0, seed: 1 };

before(async () => {
  const dir = await tinyModelFolder();
  tok = await LlmTokenizer.load(dir);
  model = await loadLlm(dir);
  lossNet = await compile([causalLmLoss(llamaForCausalLM(llmContext(model.weights), model.arch).logits).loss], { threads: 1 });
  work = await mkdtemp(join(tmpdir(), 'llm-data-'));
});

async function dataset(name: string, files: Record<string, string>, o = opts) {
  const dir = join(work, name);
  await mkdir(dir, { recursive: true });
  for (const [f, text] of Object.entries(files)) await writeFile(join(dir, f), text);
  return loadTextDataset(dir, tok, o);
}

const text = (e: Example, on: boolean) => tok.decode(e.ids.filter((_, i) => Boolean(e.trainable[i]) === on), false);

test('chat rows carry loss on the assistant turns only, as the template renders them', async () => {
  const messages = [
    { role: 'system', content: 'S' },
    { role: 'user', content: 'U1' },
    { role: 'assistant', content: 'A1' },
    { role: 'user', content: 'U2' },
    { role: 'assistant', content: 'A2' },
  ];
  const ds = await dataset('chat', { 'c.jsonl': JSON.stringify({ messages }) + '\n' }, { ...opts, maxSeqLength: 256 });
  const e = ds.examples[0]!;
  assert.equal(tok.decode(e.ids, false), tok.applyChatTemplate(messages, false));
  assert.equal(text(e, true), `A1${tok.eosToken}A2${tok.eosToken}`);
  assert.equal(ds.summary.byShape.messages, 1);
});

test('text rows learn every token; instruction rows only the output; CSV rows too; truncation is counted', async () => {
  const long = 'x'.repeat(100);
  const ds = await dataset('mixed', {
    'a.jsonl': [JSON.stringify({ text: 'hello' }), JSON.stringify({ instruction: 'Do', input: 'it', output: 'done' }), JSON.stringify({ text: long })].join('\n'),
    'b.csv': 'text\n"from csv"\n',
  });
  assert.equal(ds.summary.rows, 4);
  assert.deepEqual(ds.summary.byShape, { text: 3, instruction: 1, messages: 0 });
  const [hello, instr, longRow, csv] = ds.examples;
  assert.equal(tok.decode(hello!.ids, false), `${tok.bosToken}hello${tok.eosToken}`);
  assert.ok(hello!.trainable.every((x) => x === 1));
  assert.equal(text(instr!, true), `done${tok.eosToken}`);
  assert.match(text(instr!, false), /Do\n\nit/);
  assert.equal(longRow!.ids.length, 64);
  assert.ok(longRow!.truncated);
  assert.equal(ds.summary.truncatedRows, 1);
  assert.equal(tok.decode(csv!.ids), 'from csv');
});

test('validation rows are a seeded sample of the stated size', async () => {
  const rows = Array.from({ length: 20 }, (_, i) => JSON.stringify({ text: `row ${i}` })).join('\n');
  const a = await dataset('split', { 'r.jsonl': rows }, { ...opts, validationSplit: 0.25 });
  const b = await loadTextDataset(join(work, 'split'), tok, { ...opts, validationSplit: 0.25 });
  assert.equal(a.summary.validation, 5);
  assert.deepEqual(a.examples.map((e) => e.split), b.examples.map((e) => e.split));
  const c = await loadTextDataset(join(work, 'split'), tok, { ...opts, validationSplit: 0.25, seed: 2 });
  assert.notDeepEqual(a.examples.map((e) => e.split), c.examples.map((e) => e.split));
});

test('a packed row gives each document the loss it has alone: attention and positions stay inside it', async () => {
  const ds = await dataset('pack', { 'p.jsonl': ['The first document.', 'A second one, longer than the first.', 'Third.'].map((t) => JSON.stringify({ text: t })).join('\n') });
  const rows = packRows(ds.examples, true, 128);
  assert.equal(packRows(ds.examples, true, 64).length, 2, 'a row never exceeds max_seq_length');
  assert.equal(rows.length, 1, 'three short documents share one row');
  const packed = makeBatch(rows, tok.eosIds[0]!);
  const [lp] = await lossNet.run(batchFeeds(model.arch, packed));
  let sum = 0;
  let n = 0;
  const alone: { loss: number; tokens: number }[] = [];
  for (const e of ds.examples) {
    const b = makeBatch([[e]], tok.eosIds[0]!);
    const [l] = await lossNet.run(batchFeeds(model.arch, b));
    alone.push({ loss: Number(l!.data[0]), tokens: b.lossTokens });
    sum += Number(l!.data[0]) * b.lossTokens;
    n += b.lossTokens;
  }
  assert.equal(packed.lossTokens, n);
  assert.ok(Math.abs(Number(lp!.data[0]) - sum / n) < 1e-5, `packed ${lp!.data[0]} vs separate ${sum / n}`);
  // Without the document boundaries the same tokens give another loss: the check has teeth.
  const joined = { ...packed, segments: new Int32Array(packed.segments.length), positions: Int32Array.from(packed.positions, (_, i) => i) };
  const [lj] = await lossNet.run(batchFeeds(model.arch, joined));
  assert.ok(Math.abs(Number(lj!.data[0]) - sum / n) > 1e-3);
  // Padding the shorter row of a batch changes nothing either.
  const padded = makeBatch([[ds.examples[0]!], [ds.examples[1]!]], tok.eosIds[0]!);
  const [l2] = await lossNet.run(batchFeeds(model.arch, padded));
  const want = (alone[0]!.loss * alone[0]!.tokens + alone[1]!.loss * alone[1]!.tokens) / (alone[0]!.tokens + alone[1]!.tokens);
  assert.ok(Math.abs(Number(l2!.data[0]) - want) < 1e-5, `padded batch ${l2!.data[0]} vs ${want}`);
});

test('bad rows are named by file and line', async () => {
  await assert.rejects(dataset('bad1', { 'x.jsonl': '{"text": "ok"}\n{oops\n' }), /x\.jsonl:2: not valid JSON/);
  await assert.rejects(dataset('bad2', { 'x.jsonl': '{"prompt": "p"}\n' }), /x\.jsonl:1: expected a 'text', 'instruction'\/'output' or 'messages' field; the row has prompt/);
  await assert.rejects(dataset('bad3', { 'x.jsonl': '{"messages": [{"role": "user", "content": "hi"}]}\n' }), /x\.jsonl:1: the conversation has no assistant message/);
  await assert.rejects(dataset('bad4', { 'notes.txt': 'x' }), /has no \.jsonl or \.csv files/);
});
