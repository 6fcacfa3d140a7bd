import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClipModel, normalizeRows } from '../engine/clip/model.ts';
import { eosOneHot } from '../engine/models/clip-text.ts';
import { clipPixelValues, resizeForClip } from '../engine/clip/preprocess.ts';
import { decodeRgb } from '../engine/image/decode-rgb.ts';
import { Goldens, assertClose } from './support/golden.ts';
import { fixturesDir } from './support/paths.ts';

// The CLIP towers, projections and CLIPImageProcessor against transformers' outputs on clip-tiny. Sizes
// come from the model's config and tensors; every number compared comes from the golden files.

const dir = join(fixturesDir, 'clip-tiny');
const tokenizer = join(fixturesDir, 'clip-bpe');
const load = () => ClipModel.load(join(dir, 'model'), { tokenizer, threads: 1, weights: 'inputs' });

interface Manifest {
  images: { file: string; width: number; height: number; resized_hw: [number, number] }[];
  phrases: string[];
  input_ids: number[][];
}
const manifest = async (): Promise<Manifest> => JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8'));

test('preprocessing reproduces Pillow resize and CLIPImageProcessor pixel_values', async () => {
  const g = await Goldens.open(dir);
  const m = await manifest();
  const model = await load();
  const S = model.arch.vision.imageSize;
  const all: Float32Array[] = [];
  for (const [i, img] of m.images.entries()) {
    const rgb = await decodeRgb(join(dir, img.file));
    assert.deepEqual([rgb.width, rgb.height], [img.width, img.height], img.file);
    const resized = resizeForClip(rgb, model.preprocess);
    assert.deepEqual([resized.height, resized.width], img.resized_hw, `${img.file}: resized size`);
    const golden = await g.readRaw('golden/preprocess.safetensors', `resized_uint8/${i}`);
    const want = golden.data as Uint8Array;
    let off = 0;
    for (let j = 0; j < want.length; j++) if (resized.data[j] !== want[j]) off++;
    assert.equal(off, 0, `${img.file}: ${off} of ${want.length} resized bytes differ from Pillow`);
    const px = clipPixelValues(rgb, model.preprocess);
    assert.deepEqual([px.height, px.width], [S, S]);
    all.push(px.data);
  }
  const joined = new Float32Array(all.reduce((n, a) => n + a.length, 0));
  all.reduce((o, a) => (joined.set(a, o), o + a.length), 0);
  await g.expectClose(joined, 'golden/preprocess.safetensors', 'pixel_values');
});

test('vision tower: hidden states, pooled output and image embeddings match transformers', async () => {
  const g = await Goldens.open(dir);
  const model = await load();
  const px = await g.read('golden/inputs.safetensors', 'pixel_values');
  const n = px.shape[0]!;
  const graph = await model.visionGraph(n, true);
  const S = model.arch.vision.imageSize;
  const [embeds, last, pen, pooled] = await graph.run({ pixel_values: { data: px.data, shape: [n, 3, S, S] } });
  await g.expectClose(last!.data as Float32Array, 'golden/vision.safetensors', 'last_hidden_state');
  await g.expectClose(pen!.data as Float32Array, 'golden/vision.safetensors', 'penultimate_hidden_state');
  await g.expectClose(pooled!.data as Float32Array, 'golden/vision.safetensors', 'pooled');
  await g.expectClose(embeds!.data as Float32Array, 'golden/vision.safetensors', 'image_embeds');
  // The batched path used for captioning gives the same embeddings.
  await g.expectClose(await model.imageEmbeds(px.data, n), 'golden/vision.safetensors', 'image_embeds');
});

test('text tower: tokenizer ids, pooled output, text embeddings and logits match transformers', async () => {
  const g = await Goldens.open(dir);
  const m = await manifest();
  const model = await load();
  const T = model.arch.text.maxPositions;
  const ids = await g.readRaw('golden/inputs.safetensors', 'input_ids');
  const n = ids.shape[0]!;
  m.phrases.forEach((p, i) => assert.deepEqual(model.tokenize(p), m.input_ids[i], `token ids of ${JSON.stringify(p)}`));
  const [embeds] = await (await model.textGraph(n)).run({
    input_ids: { data: ids.data as BigInt64Array, shape: [n, T] },
    eos_onehot: { data: eosOneHot(ids.data as BigInt64Array, n, T), shape: [n, 1, T] },
  });
  const [hidden] = await (await model.textHiddenGraph(n)).run({ input_ids: { data: ids.data as BigInt64Array, shape: [n, T] } });
  await g.expectClose(hidden!.data as Float32Array, 'golden/text.safetensors', 'last_hidden_state');
  await g.expectClose(embeds!.data as Float32Array, 'golden/text.safetensors', 'text_embeds');
  // transformers' pooled output is the last hidden state at each row's first end token.
  const W = model.arch.text.width;
  const onehot = eosOneHot(ids.data as BigInt64Array, n, T);
  const h = hidden!.data as Float32Array;
  const pooled = new Float32Array(n * W);
  for (let r = 0; r < n; r++) {
    const at = onehot.subarray(r * T, (r + 1) * T).indexOf(1);
    pooled.set(h.subarray((r * T + at) * W, (r * T + at + 1) * W), r * W);
  }
  await g.expectClose(pooled, 'golden/text.safetensors', 'pooled');
  // From text, through the chunked path captioning uses.
  const fromText = await model.textEmbeds(m.phrases);
  await g.expectClose(fromText, 'golden/text.safetensors', 'text_embeds');

  // logits_per_image = exp(logit_scale) · cos(image, text), from our own embeddings end to end.
  const D = model.arch.projectionDim;
  const px = await g.read('golden/inputs.safetensors', 'pixel_values');
  const img = normalizeRows(await model.imageEmbeds(px.data, px.shape[0]!), D);
  const txt = normalizeRows(fromText, D);
  const logits = new Float32Array(px.shape[0]! * n);
  for (let i = 0; i < px.shape[0]!; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += img[i * D + d]! * txt[j * D + d]!;
      logits[i * n + j] = model.logitScale * s;
    }
  await g.expectClose(logits, 'golden/logits.safetensors', 'logits_per_image');
  const scale = await g.read('golden/logits.safetensors', 'logit_scale');
  assertClose([Math.log(model.logitScale)], scale.data, { atol: 1e-6, rtol: 0 }, 'logit_scale');
});

test('a model folder without tokenizer files uses the CLIP vocabulary shipped with lora-scripts', async () => {
  const m = await manifest();
  const model = await ClipModel.load(join(dir, 'model'), { threads: 1 });
  m.phrases.forEach((p, i) => assert.deepEqual(model.tokenize(p), m.input_ids[i], `token ids of ${JSON.stringify(p)}`));
});
