import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ClipModel, normalizeRows } from '../engine/clip/model.ts';
import { ClipCaptioner } from '../engine/label/clip-captioner.ts';
import { BUILTIN_TABLES } from '../engine/label/tables.ts';
import { fixturesDir } from './support/paths.ts';

// CLIP captioning on clip-tiny (random weights, so the captions are arbitrary but the ranking rules are
// checked against similarities computed here from the model's own embeddings).

const image = join(fixturesDir, 'clip-tiny/images/photo_rgb.png');
const load = () => ClipModel.load(join(fixturesDir, 'clip-tiny/model'), { tokenizer: join(fixturesDir, 'clip-bpe'), threads: 1 });

async function similarities(model: ClipModel, texts: readonly string[]): Promise<number[]> {
  const D = model.arch.projectionDim;
  const img = normalizeRows(await model.imageEmbeds(await model.pixelValues(image), 1), D);
  const txt = normalizeRows(await model.textEmbeds(texts), D);
  return texts.map((_, i) => txt.subarray(i * D, (i + 1) * D).reduce((s, v, d) => s + v * img[d]!, 0));
}

const argmax = (xs: number[]) => xs.indexOf(Math.max(...xs));

test("fast: each table's most similar phrase, subject first, then the top vocabulary tags", async () => {
  const model = await load();
  const vocab = ['cat', 'dog', 'sunset', 'ramen', 'castle', 'car', 'horse', 'sea'];
  const c = new ClipCaptioner(model, { mode: 'fast', tables: ['subjects', 'medium', 'lighting'], userTables: { mood: ['calm', 'tense', 'joyful'] }, vocab, maxFlavors: 2 });
  const { caption, similarity } = await c.caption(image);
  const expected: string[] = [];
  for (const t of [BUILTIN_TABLES.subjects, BUILTIN_TABLES.medium, BUILTIN_TABLES.lighting, ['calm', 'tense', 'joyful']]) expected.push(t[argmax(await similarities(model, t))]!);
  const v = await similarities(model, vocab);
  expected.push(...vocab.map((w, i) => [w, v[i]!] as const).sort((a, b) => b[1] - a[1]).slice(0, 2).map(([w]) => w));
  assert.equal(caption, expected.join(', '));
  const [whole] = await similarities(model, [caption]);
  assert.ok(Math.abs(similarity - whole!) < 1e-5, 'reported similarity is the caption\'s');
});

test('best: greedy additions only raise the similarity, and the caption stays within 77 tokens', async () => {
  const model = await load();
  const long = Array.from({ length: 80 }, (_, i) => `word${i}`).join(' ');
  const c = new ClipCaptioner(model, { mode: 'best', tables: ['subjects', 'medium', 'style', 'colours'], userTables: { huge: [long] }, vocab: ['cat', 'red', 'blue', 'night'], maxFlavors: 6 });
  const { caption, similarity } = await c.caption(image);
  const parts = caption.split(', ');
  assert.ok(!caption.includes('word0'), 'a phrase that cannot fit in 77 tokens is never added');
  assert.ok(model.tokenizer.encode(caption).length + 2 <= 77);
  assert.ok(parts.length <= 7);
  // Every prefix of the caption is less similar than the next: each step was an improvement.
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join(', '));
  const s = await similarities(model, prefixes);
  for (let i = 1; i < s.length; i++) assert.ok(s[i]! > s[i - 1]!, `step ${i} raised the similarity (${s[i - 1]} → ${s[i]})`);
  assert.ok(Math.abs(similarity - s.at(-1)!) < 1e-5);
  assert.equal(parts[0], BUILTIN_TABLES.subjects[argmax(await similarities(model, BUILTIN_TABLES.subjects))]);
  // At most one phrase per table of alternatives.
  for (const t of [BUILTIN_TABLES.medium, BUILTIN_TABLES.style, BUILTIN_TABLES.colours]) assert.ok(parts.filter((p) => t.includes(p)).length <= 1);
});

test('fast mode drops phrases that would overflow 77 tokens', async () => {
  const model = await load();
  const many = Array.from({ length: 30 }, (_, i) => `tag number ${i}`);
  const c = new ClipCaptioner(model, { mode: 'fast', tables: ['subjects'], userTables: {}, vocab: many, maxFlavors: 30 });
  const { caption } = await c.caption(image);
  assert.ok(model.tokenizer.encode(caption).length + 2 <= 77);
  assert.ok(caption.split(', ').length > 5, 'as many as fit are kept');
});
