/**
 * Textual-inversion embeddings on the sd-tiny fixture. The substitution is checked against the model itself:
 * an embedding whose vectors ARE the token-embedding rows of real words must condition exactly like those
 * words, in positive and negative prompts, and a chunk counts its vectors as tokens (A1111's rules).
 */
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClipConditioner, SdxlConditioner, type Conditioner } from '../engine/sd/conditioning.ts';
import { EmbeddingLibrary, readPickledEmbedding } from '../engine/sd/embeddings.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { clipTextPrefix } from '../engine/models/clip-text.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { tokenizePrompt, CHUNK_LENGTH } from '../engine/text/chunker.ts';
import { loadClipTokenizer, type ClipTokenizer } from '../engine/text/tokenizer.ts';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';

const dir = join(fixturesDir, 'sd-tiny');
let model: StableDiffusion;
let tokenizer: ClipTokenizer;
let width: number;
let tmp: string;

before(async () => {
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
  tokenizer = await loadClipTokenizer(join(dir, 'diffusers/tokenizer'));
  width = model.arch.textEncoder.width;
  tmp = await mkdtemp(join(tmpdir(), 'ti-'));
});

/** Rows of the model's own token-embedding table for the words of `text` (one token each). */
function rowsFor(text: string): Float32Array {
  const table = model.weights.get(`${clipTextPrefix(model.arch.textEncoder.layout)}embeddings.token_embedding.weight`)!.data;
  const ids = tokenizer.encode(text);
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, i) => out.set(table.subarray(id * width, (id + 1) * width), i * width));
  return out;
}

async function writeEmbedding(folder: string, name: string, key: string, vectors: Float32Array, shape: number[]): Promise<void> {
  await mkdir(folder, { recursive: true });
  await writeSafetensors(join(folder, `${name}.safetensors`), { [key]: { dtype: 'F32', shape, data: vectors } });
}

function assertClose(a: Float32Array, b: Float32Array, what: string): void {
  assert.equal(a.length, b.length, what);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  assert.ok(worst < 1e-5, `${what}: differs by ${worst}`);
}

test('an embedding made of the rows of "red cat" conditions exactly like "red cat", positive and negative; elsewhere nothing changes', async () => {
  const words = 'red cat';
  assert.equal(tokenizer.encode(words).length, 2, 'two one-token words');
  const folder = join(tmp, 'exact');
  await writeEmbedding(folder, 'my-redcat', 'emb_params', rowsFor(words), [2, width]);
  const lib = new EmbeddingLibrary(folder);
  assert.equal((await lib.refresh()).size, 0);
  const plain = new ClipConditioner(model, tokenizer);
  const withTi = new ClipConditioner(model, tokenizer);
  withTi.setEmbeddings(lib);
  assert.equal(lib.expectedShape, width);
  assert.deepEqual(lib.split().loaded.map((e) => [e.name, e.vectors, e.shape]), [['my-redcat', 2, width]]);

  for (const negative of [false, true]) {
    const got = await (withTi as Conditioner).encode('a photo of a my-redcat on grass', 1, { negative });
    const want = await (plain as Conditioner).encode('a photo of a red cat on grass', 1, { negative });
    assertClose(got.data, want.data, `negative=${negative}`);
    assert.deepEqual(got.embeddings, ['my-redcat']);
  }
  assert.deepEqual(withTi.takeUsedEmbeddings().map((e) => e.name), ['my-redcat']);
  assert.deepEqual(withTi.takeUsedEmbeddings(), [], 'the record resets');

  // Without the library the name is plain text again: different conditioning from "red cat".
  const text = await plain.encode('a photo of a my-redcat on grass', 1);
  const emb = await withTi.encode('a photo of a my-redcat on grass', 1);
  // CLIP attends causally: positions before the name (BOS + "a photo of a") are identical, the name's differ.
  const before = (1 + tokenizer.encode('a photo of a').length) * width;
  assertClose(emb.data.subarray(0, before), text.data.subarray(0, before), 'before the name');
  assert.ok(emb.data.subarray(before, before + width).some((v, i) => Math.abs(v - text.data[before + i]!) > 1e-4), 'the name position changed');
});

test('an embedding of another width is skipped and stays plain text; an unreadable pickle is reported with a conversion hint', async () => {
  const folder = join(tmp, 'skip');
  await writeEmbedding(folder, 'wide', 'emb_params', new Float32Array(3 * (width + 8)).fill(0.5), [3, width + 8]);
  await writeFile(join(folder, 'old.pt'), 'not a torch file');
  const lib = new EmbeddingLibrary(folder);
  const problems = await lib.refresh();
  assert.match(problems.get(join(folder, 'old.pt')) ?? '', /not a torch zip file.*weights_only=True.*old\.safetensors/);
  const c = new ClipConditioner(model, tokenizer);
  c.setEmbeddings(lib);
  assert.deepEqual(lib.split().skipped.map((e) => [e.name, e.shape]), [['wide', width + 8]]);
  const plain = new ClipConditioner(model, tokenizer);
  assertClose((await c.encode('wide shot', 1)).data, (await plain.encode('wide shot', 1)).data, 'skipped embedding');
});

test('chunking: an embedding counts its vectors as tokens and moves whole to the next chunk when it does not fit', () => {
  const emb = { name: 'ten', vectors: 10 };
  const nameIds = tokenizer.encode('ten');
  const matcher = {
    version: '1',
    at: (tokens: readonly number[], pos: number) => (nameIds.every((id, i) => tokens[pos + i] === id) ? { embedding: emb, length: nameIds.length } : null),
  };
  const filler = Array.from({ length: 70 }, () => 'a').join(' ');
  assert.equal(tokenizer.encode(filler).length, 70);
  const r = tokenizePrompt(tokenizer, `${filler} ten`, { embeddings: matcher });
  assert.equal(r.chunks.length, 2);
  assert.equal(r.chunks[0]!.fixes, undefined);
  assert.deepEqual(r.chunks[1]!.fixes, [{ offset: 1, embedding: emb }]);
  assert.deepEqual(r.chunks[1]!.ids.slice(1, 11), new Array(10).fill(0));
  assert.equal(r.tokenCount, CHUNK_LENGTH + 10);
  // Fitting: stays in the first chunk right after the text, its positions weighted like its fragment.
  const fit = tokenizePrompt(tokenizer, 'a (ten:1.5) b', { embeddings: matcher });
  assert.equal(fit.chunks.length, 1);
  assert.deepEqual(fit.chunks[0]!.fixes, [{ offset: 2, embedding: emb }]);
  assert.deepEqual(fit.chunks[0]!.multipliers.slice(2, 12), new Array(10).fill(1.5));
  assert.equal(fit.chunks[0]!.ids[12], tokenizer.encode('b')[0]);
});

test('SDXL: a clip_l + clip_g embedding of the rows of "red cat" in both towers conditions exactly like "red cat"', async () => {
  const xl = await StableDiffusion.load(join(fixturesDir, 'sdxl-tiny', 'diffusers'), { threads: 1 });
  const tok = await loadClipTokenizer(join(fixturesDir, 'sdxl-tiny', 'diffusers', 'tokenizer'));
  const te1 = xl.arch.textEncoder;
  const te2 = xl.arch.textEncoder2!;
  const rows = (arch: typeof te1, text: string): Float32Array => {
    const key = `${arch.prefix ?? clipTextPrefix(arch.layout)}${arch.layout === 'openclip' ? '' : 'embeddings.'}token_embedding.weight`;
    const table = xl.weights.get(key)!.data;
    const ids = tok.encode(text);
    const out = new Float32Array(ids.length * arch.width);
    ids.forEach((id, i) => out.set(table.subarray(id * arch.width, (id + 1) * arch.width), i * arch.width));
    return out;
  };
  const folder = join(tmp, 'xl');
  await mkdir(folder, { recursive: true });
  await writeSafetensors(join(folder, 'xl-redcat.safetensors'), {
    clip_l: { dtype: 'F32', shape: [2, te1.width], data: rows(te1, 'red cat') },
    clip_g: { dtype: 'F32', shape: [2, te2.width], data: rows(te2, 'red cat') },
  });
  const lib = new EmbeddingLibrary(folder);
  await lib.refresh();
  const withTi = new SdxlConditioner(xl, tok);
  withTi.setEmbeddings(lib);
  assert.deepEqual(lib.split().loaded.map((e) => [e.name, e.shape]), [['xl-redcat', te1.width + te2.width]]);
  const got = await withTi.encode('a xl-redcat on grass', 1);
  const want = await new SdxlConditioner(xl, tok).encode('a red cat on grass', 1);
  assertClose(got.data, want.data, 'context');
  assertClose(got.pooled!, want.pooled!, 'pooled');
});

test("A1111's .pt and diffusers' .bin embeddings are read as data only; a pickle that would run code is refused", async () => {
  const gdir = join(repoRoot, 'tests/golden/ti');
  const pt = await readPickledEmbedding(join(gdir, 'a1111-style.pt'));
  assert.deepEqual([pt.name, pt.vectors, pt.shape, pt.step, pt.sdCheckpoint, pt.sdCheckpointName], ['a1111-style', 2, 8, 1500, 'abcdef12', 'sd-tiny']);
  assert.deepEqual([...pt.data!], Array.from({ length: 16 }, (_, i) => i / 8));
  const bin = await readPickledEmbedding(join(gdir, 'concept.bin'));
  assert.deepEqual([bin.name, bin.vectors, bin.shape, bin.step], ['concept', 1, 8, null]);
  assert.deepEqual([...bin.data!], Array.from({ length: 8 }, (_, i) => i / 2));
  await assert.rejects(readPickledEmbedding(join(gdir, 'evil.pt')), /refers to (posix|os|nt)\.system/);
  // In a folder: the readable ones load (listed with their step), the other is a problem with a conversion hint.
  const folder = join(tmp, 'pickles');
  await mkdir(folder, { recursive: true });
  for (const f of ['a1111-style.pt', 'concept.bin', 'evil.pt']) await copyFile(join(gdir, f), join(folder, f));
  const lib = new EmbeddingLibrary(folder);
  const problems = await lib.refresh();
  assert.deepEqual(lib.split().loaded.map((e) => e.name).sort(), ['a1111-style', 'concept']);
  assert.match(problems.get(join(folder, 'evil.pt')) ?? '', /system.*convert it once|system.*Convert it once/is);
});

test('cleanup', async () => {
  await rm(tmp, { recursive: true, force: true });
});
