import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadClipTokenizer, ClipTokenizer } from '../engine/text/tokenizer.ts';
import { chunkPrompt, emptyChunk, tokenizePrompt, CHUNK_LENGTH } from '../engine/text/chunker.ts';
import { applyEmphasis } from '../engine/text/emphasis.ts';
import { fixturesDir } from './support/paths.ts';

const tokDir = join(fixturesDir, 'sd-tiny', 'diffusers', 'tokenizer');
const goldens = JSON.parse(readFileSync(join(fixturesDir, 'sd-tiny', 'golden', 'tokenizer.json'), 'utf8')) as Array<{
  prompt: string;
  ids: number[];
  padded77: number[];
}>;
const tok = await loadClipTokenizer(tokDir);

/** A word that is a single token in this vocabulary, and is not a comma. */
function singleTokenWord(t: ClipTokenizer): string {
  for (const w of ['cat', 'photo', 'a', 'of']) if (t.encode(w).length === 1) return w;
  throw new Error('no single-token word');
}

test('a short prompt is one chunk equal to the reference padded ids, multipliers 1', () => {
  const g = goldens.find((x) => x.prompt === 'a photo of a cat')!;
  const chunks = chunkPrompt(tok, g.prompt);
  assert.equal(chunks.length, 1);
  assert.deepEqual(chunks[0]!.ids, g.padded77);
  assert.deepEqual(chunks[0]!.multipliers, new Array(77).fill(1));
});

test('emphasis: tokens carry the weights of their fragments', () => {
  const chunks = chunkPrompt(tok, '(masterpiece:1.2), best quality, ((detailed))');
  const [c] = chunks;
  const ids = [...tok.encode('masterpiece'), ...tok.encode(', best quality, '), ...tok.encode('detailed')];
  assert.deepEqual(c!.ids.slice(1, 1 + ids.length), ids);
  const n1 = tok.encode('masterpiece').length;
  const n2 = tok.encode(', best quality, ').length;
  const n3 = tok.encode('detailed').length;
  assert.deepEqual(c!.multipliers.slice(0, 1 + n1 + n2 + n3 + 1), [
    1,
    ...new Array(n1).fill(1.2),
    ...new Array(n2).fill(1),
    ...new Array(n3).fill(1.1 * 1.1),
    1,
  ]);
  // Emphasis "None" tokenizes the brackets as text; "Ignore" keeps the tokens and drops the weights.
  assert.deepEqual(chunkPrompt(tok, '(cat)', { emphasis: 'None' })[0]!.ids.slice(1, 4), tok.encode('(cat)'));
  assert.deepEqual(chunkPrompt(tok, '(cat:1.5)', { emphasis: 'Ignore' })[0]!.multipliers, new Array(77).fill(1));
});

test('a long prompt is split into 75-token chunks, each framed as BOS + 75 + EOS', () => {
  const g = goldens.reduce((a, b) => (b.ids.length > a.ids.length ? b : a));
  const body = g.ids.slice(1, -1);
  assert.ok(!body.includes(tok.tokenId(',</w>')!), 'this golden has no comma, so no backtracking');
  const { chunks, tokenCount } = tokenizePrompt(tok, g.prompt);
  assert.equal(chunks.length, Math.ceil(body.length / CHUNK_LENGTH));
  assert.equal(tokenCount, body.length);
  chunks.forEach((c, k) => {
    const part = body.slice(k * CHUNK_LENGTH, (k + 1) * CHUNK_LENGTH);
    const want = [tok.bos, ...part, tok.eos];
    while (want.length < 77) want.push(tok.eos);
    assert.deepEqual(c.ids, want, `chunk ${k}`);
  });
});

test('comma backtracking moves the words after a near comma into the next chunk', () => {
  const w = singleTokenWord(tok);
  const wid = tok.encode(w)[0]!;
  const comma = tok.tokenId(',</w>')!;
  const prompt = `${`${w} `.repeat(70)}, ${`${w} `.repeat(10)}`;
  const withBacktrack = chunkPrompt(tok, prompt);
  assert.equal(withBacktrack.length, 2);
  assert.deepEqual(withBacktrack[0]!.ids, [tok.bos, ...new Array(70).fill(wid), comma, ...new Array(5).fill(tok.eos)]);
  assert.deepEqual(withBacktrack[1]!.ids.slice(0, 12), [tok.bos, ...new Array(10).fill(wid), tok.eos]);

  const without = chunkPrompt(tok, prompt, { commaPaddingBacktrack: 0 });
  assert.deepEqual(without[0]!.ids, [tok.bos, ...new Array(70).fill(wid), comma, ...new Array(4).fill(wid), tok.eos]);
  assert.deepEqual(without[1]!.ids.slice(0, 8), [tok.bos, ...new Array(6).fill(wid), tok.eos]);

  // A comma further back than the limit does not move anything.
  const far = chunkPrompt(tok, `${`${w} `.repeat(50)}, ${`${w} `.repeat(40)}`, { commaPaddingBacktrack: 20 });
  assert.equal(far[0]!.ids.filter((x) => x === wid).length, 74);
});

test('BREAK closes the chunk; a leading BREAK gives an empty first chunk', () => {
  const chunks = chunkPrompt(tok, 'a photo BREAK of a cat');
  assert.equal(chunks.length, 2);
  assert.deepEqual(chunks[0]!.ids.slice(0, 4), [tok.bos, ...tok.encode('a photo'), tok.eos]);
  assert.deepEqual(chunks[1]!.ids.slice(0, 5), [tok.bos, ...tok.encode('of a cat'), tok.eos]);
  const lead = chunkPrompt(tok, 'BREAK cat');
  assert.equal(lead.length, 2);
  assert.deepEqual(lead[0], emptyChunk(tok));
  const { tokenCount } = tokenizePrompt(tok, 'a photo BREAK of a cat');
  assert.equal(tokenCount, CHUNK_LENGTH + tok.encode('of a cat').length);
});

test('empty prompt: one chunk of BOS and EOS padding', () => {
  assert.deepEqual(chunkPrompt(tok, ''), [emptyChunk(tok)]);
  const g = goldens.find((x) => x.prompt === '')!;
  assert.deepEqual(emptyChunk(tok).ids, g.padded77);
});

test('a tokenizer whose padding id differs from EOS pads after the first EOS', () => {
  const vocab = JSON.parse(readFileSync(join(tokDir, 'vocab.json'), 'utf8')) as Record<string, number>;
  const merges = readFileSync(join(tokDir, 'merges.txt'), 'utf8')
    .split('\n')
    .slice(1)
    .filter((l) => l)
    .map((l) => l.split(' ') as [string, string]);
  const padToken = Object.keys(vocab).find((k) => vocab[k] === 0)!;
  const t = new ClipTokenizer({ vocab, merges, padToken });
  const [c] = chunkPrompt(t, 'a cat');
  const n = t.encode('a cat').length;
  assert.deepEqual(c!.ids.slice(0, n + 4), [t.bos, ...t.encode('a cat'), t.eos, 0, 0]);
  assert.equal(c!.ids[76], 0);
});

test('applyEmphasis "Original" multiplies per token then restores the mean of the whole tensor', () => {
  const z = new Float32Array([1, 2, 3, 4, -1, 0.5]);
  const m = [1, 2, 0.5];
  const out = applyEmphasis(z, [3, 2], m);
  const scaled = [1, 2, 6, 8, -0.5, 0.25];
  const ratio = (1 + 2 + 3 + 4 - 1 + 0.5) / scaled.reduce((a, b) => a + b, 0);
  scaled.forEach((v, i) => assert.ok(Math.abs(out[i]! - v * ratio) < 1e-6, `${i}`));
  const mean = (a: ArrayLike<number>) => Array.from(a).reduce((x, y) => x + y, 0) / a.length;
  assert.ok(Math.abs(mean(out) - mean(z)) < 1e-6);

  assert.deepEqual(Array.from(applyEmphasis(z, [3, 2], m, 'No norm')), scaled);
  assert.deepEqual(applyEmphasis(z, [3, 2], m, 'Ignore'), z);

  // Batched: one mean over every row of the batch, as A1111 takes z.mean() of the whole chunk batch.
  const zb = new Float32Array([...z, ...z]);
  const outB = applyEmphasis(zb, [2, 3, 2], [...m, 1, 1, 1]);
  const scaledB = [...scaled, 1, 2, 3, 4, -1, 0.5];
  const ratioB = (2 * 9.5) / scaledB.reduce((a, b) => a + b, 0);
  scaledB.forEach((v, i) => assert.ok(Math.abs(outB[i]! - v * ratioB) < 1e-6, `batch ${i}`));
  assert.throws(() => applyEmphasis(z, [3, 2], [1, 2]), RangeError);
});
