import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BUNDLED_CLIP_TOKENIZER, CLIP_BPE_GZ, loadClipTokenizer, type ClipTokenizer } from '../engine/text/tokenizer.ts';
import { cleanClipText } from '../engine/text/clip-clean.ts';
import { chunkPrompt } from '../engine/text/chunker.ts';
import { findTokenizerDir, SdGenerator } from '../engine/generate/generator.ts';
import { writeSyntheticCheckpoint, type SyntheticSdConfig } from '../engine/sd/synthetic.ts';
import { loadTrainConfig } from '../engine/train/config.ts';
import { UserError } from '../engine/util/errors.ts';
import { fixturesDir } from './support/paths.ts';
import { writeSmallVocabCheckpoint } from './support/small-vocab.ts';

const bpeDir = join(fixturesDir, 'clip-bpe');
const golden = JSON.parse(readFileSync(join(bpeDir, 'golden/token_ids.json'), 'utf8')) as {
  bos: number;
  eos: number;
  pad_sd1: number;
  prompts: Array<{ category: string; prompt: string; clean: string; ids: number[]; padded77: number[]; a1111_chunks: number[][] }>;
};
const manifest = JSON.parse(readFileSync(join(bpeDir, 'manifest.json'), 'utf8')) as { source: { gz_sha256: string } };

let bundled: ClipTokenizer | undefined;
const tokenizer = async () => (bundled ??= await loadClipTokenizer(BUNDLED_CLIP_TOKENIZER));

test('the bundled vocabulary is CLIP\'s own merges file, with its license beside it', async () => {
  const gz = await readFile(join(BUNDLED_CLIP_TOKENIZER, CLIP_BPE_GZ));
  assert.equal(createHash('sha256').update(gz).digest('hex'), manifest.source.gz_sha256);
  const license = await readFile(join(BUNDLED_CLIP_TOKENIZER, 'LICENSE-clip-bpe.txt'), 'utf8');
  assert.match(license, /MIT License/);
  assert.match(license, /Copyright \(c\) 2021 OpenAI/);
});

test('CLIP text cleaning gives the reference clean text for every golden prompt', () => {
  const wrong = golden.prompts.filter((p) => cleanClipText(p.prompt) !== p.clean);
  assert.deepEqual(wrong.map((p) => [p.category, p.prompt, cleanClipText(p.prompt), p.clean]), []);
});

test('every golden prompt gives the reference ids: unpadded, padded to 77, and in A1111 chunks', async () => {
  const t = await tokenizer();
  assert.equal(t.bos, golden.bos);
  assert.equal(t.eos, golden.eos);
  assert.equal(t.pad, golden.pad_sd1);
  assert.ok(golden.prompts.length > 0);
  const categories = new Set<string>();
  for (const p of golden.prompts) {
    const label = `${p.category} ${JSON.stringify(p.prompt)}`;
    assert.deepEqual([t.bos, ...t.encode(p.prompt)], p.ids.slice(0, -1), `ids of ${label}`);
    assert.deepEqual(t.encodePadded(p.prompt, p.padded77.length), p.padded77, `padded ids of ${label}`);
    // The goldens' prompts are what A1111 hands the tokenizer (emphasis already parsed out).
    assert.deepEqual(chunkPrompt(t, p.prompt, { emphasis: 'None' }).map((c) => c.ids), p.a1111_chunks, `chunks of ${label}`);
    categories.add(p.category);
  }
  // Prompts past one chunk exercise truncation and chunking.
  assert.ok(golden.prompts.some((p) => p.ids.length > p.padded77.length), 'the set has prompts longer than 77 tokens');
  assert.ok(categories.size > 1);
});

test('a tokenizer folder beside the checkpoint or an explicit one wins; else the bundled vocabulary', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'tokdir-'));
  try {
    const ckpt = join(dir, 'models', 'Stable-diffusion', 'm.safetensors');
    await mkdir(join(dir, 'models', 'Stable-diffusion'), { recursive: true });
    await writeFile(ckpt, '');
    assert.equal(await findTokenizerDir(ckpt), BUNDLED_CLIP_TOKENIZER);
    const beside = join(dir, 'models', 'Stable-diffusion', 'tokenizer');
    await mkdir(beside);
    await writeFile(join(beside, 'vocab.json'), '{}');
    await writeFile(join(beside, 'merges.txt'), '');
    assert.equal(await findTokenizerDir(ckpt), beside);
    assert.equal(await findTokenizerDir(ckpt, join(dir, 'elsewhere')), join(dir, 'elsewhere'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a single file with a full CLIP vocabulary generates with no tokenizer given', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bundled-gen-'));
  try {
    const t = await tokenizer();
    const path = join(dir, 'clip-vocab.safetensors');
    // SD 1.x-shaped and tiny, with CLIP's full vocabulary (64 wide: one 64-wide head by the family rule).
    const cfg: SyntheticSdConfig = {
      unet: { modelChannels: 32, channelMult: [1, 2], numResBlocks: 1, attentionLevels: [true, false], contextDim: 64, inChannels: 4 },
      text: { width: 64, layers: 1, intermediate: 128, vocab: t.vocabSize, positions: 77 },
      vae: { channels: 32, channelMult: [1, 2], numResBlocks: 1, zChannels: 4 },
    };
    await writeSyntheticCheckpoint(path, cfg, { seed: 5 });
    const gen = await SdGenerator.load(path, { threads: 1 });
    assert.equal(gen.tokenizer.vocabSize, t.vocabSize);
    const req = { prompt: 'a red star on a blue background', negativePrompt: '', seeds: [1], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
    const a = await gen.generate(req);
    assert.equal(a.images.length, 3 * 64 * 64);
    assert.ok(a.images.every(Number.isFinite));
    // The prompt reaches the model: another prompt, another picture.
    const b = await gen.generate({ ...req, prompt: 'a green circle on a white background' });
    assert.ok(a.images.some((v, i) => Math.abs(v - b.images[i]!) > 1e-4));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a custom text encoder smaller than the CLIP vocabulary is refused with a pointer to its own tokenizer', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bundled-small-'));
  try {
    const path = join(dir, 'small.safetensors');
    await writeSmallVocabCheckpoint(path);
    await assert.rejects(SdGenerator.load(path, { threads: 1 }), (e: unknown) =>
      e instanceof UserError && /token embeddings/.test(e.message) && /own tokenizer/.test(e.message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('training a single file with tokenizer unset uses the bundled vocabulary', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'bundled-train-'));
  try {
    await mkdir(join(dir, 'data'));
    const cfg = join(dir, 'cfg.yaml');
    await writeFile(cfg, `train_data_dir: data\nbase_model: '${join(fixturesDir, 'sd-tiny', 'sd-tiny.safetensors')}'\n`);
    const { config } = await loadTrainConfig(cfg);
    assert.equal(config.tokenizer, BUNDLED_CLIP_TOKENIZER);
    await access(join(config.tokenizer, CLIP_BPE_GZ));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
