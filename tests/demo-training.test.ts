/**
 * The demo recipe's training pieces on a tiny model of the demo's layout: the UNet and the text encoder
 * trained in one graph from token ids (the token embeddings kept as drawn), the caption-swap gap measured on
 * held-out scenes as training goes, the v-prediction-like loss weight, and the plain captions.
 */
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DEMO_RECIPE } from '../engine/demo/demo-model.ts';
import { autoencoderBatch } from '../engine/demo/autoencoder-batches.ts';
import { diffusionLossWeight, loadPhase, savePhase, trainUnet, type CaptionGapResult } from '../engine/demo/full-training.ts';
import { COLOURS, plainCaption, plainPrompt, renderScene, sampleScene } from '../engine/demo/toy-world.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../engine/sampling/training-schedule.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { writeSyntheticCheckpoint, type SyntheticSdConfig } from '../engine/sd/synthetic.ts';
import { chunkPrompt } from '../engine/text/chunker.ts';
import { BUNDLED_CLIP_TOKENIZER, loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { gaussian, minSnrWeight, snr } from '../engine/train/objective.ts';
import { seededRandom } from '../engine/train/seeded-random.ts';

/** The demo's layout, narrower: one UNet level, a 64-wide text tower (one CLIP-rule head), CLIP's vocabulary. */
const TINY: SyntheticSdConfig = {
  unet: { modelChannels: 32, channelMult: [1], numResBlocks: 1, attentionLevels: [true], contextDim: 64, inChannels: 4 },
  text: { width: 64, layers: 1, intermediate: 128, vocab: 49408, positions: 77 },
  vae: { channels: 32, channelMult: [1, 1], numResBlocks: 1, zChannels: 4 },
};

test('the plain caption keeps colours, shape and count and is the test prompts\' form for one shape', () => {
  for (let i = 0; i < 50; i++) {
    const s = sampleScene(DEMO_RECIPE.seed, i);
    const plain = plainCaption(s);
    assert.ok(plain.includes(s.colour) && plain.includes(s.background) && plain.includes(s.shape), plain);
    assert.doesNotMatch(plain, /small|large|corner|center|left|right/, plain);
    if (s.count === 1) assert.equal(plain, plainPrompt(s.shape, s.colour, s.background));
  }
});

test('the v-prediction-like term adds λ·(SNR + 1)/SNR to the min-SNR-γ weight: small at low noise, large at high', () => {
  const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
  const o = { minSnrGamma: 5, vPredLikeLoss: 1 };
  for (const t of [0, 100, 500, 900, 999]) {
    const m = minSnrWeight(acp, t, 5, 'epsilon');
    assert.ok(Math.abs(diffusionLossWeight(acp, t, o) - m * (1 + (snr(acp, t) + 1) / snr(acp, t))) < 1e-9);
    assert.equal(diffusionLossWeight(acp, t, { minSnrGamma: 5, vPredLikeLoss: 0 }), m);
  }
  assert.ok(diffusionLossWeight(acp, 999, o) > 100 * diffusionLossWeight(acp, 0, o));
});

test('trainUnet trains the UNet and the text encoder (not its token embeddings) through one graph and logs the caption-swap gap', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-scripts-demo-train-'));
  try {
    const path = join(dir, 'tiny.safetensors');
    await writeSyntheticCheckpoint(path, TINY, { seed: 3 });
    const model = await StableDiffusion.load(path, { threads: 2 });
    const w = model.weights;
    const tokenizer = await loadClipTokenizer(BUNDLED_CLIP_TOKENIZER);
    const idsOf = (text: string) => Int32Array.from(chunkPrompt(tokenizer, text)[0]!.ids);
    const T = idsOf('').length;
    const scenes = Array.from({ length: 4 }, (_, i) => sampleScene(DEMO_RECIPE.seed, i));
    const ids = new Int32Array(scenes.length * T);
    const plainIds = new Int32Array(scenes.length * T);
    scenes.forEach((s, i) => {
      ids.set(idsOf(s.caption), i * T);
      plainIds.set(idsOf(plainCaption(s)), i * T);
    });
    const h = 2;
    const latents = gaussian(scenes.length * 4 * h * h, seededRandom(1, 'latents'));
    const keys = {
      tokens: 'cond_stage_model.transformer.text_model.embeddings.token_embedding.weight',
      textLayer: 'cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight',
      crossAttention: 'model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight',
    };
    const before = Object.fromEntries(Object.entries(keys).map(([n, k]) => [n, Float32Array.from(w.get(k)!.data)]));
    const gaps: CaptionGapResult[] = [];
    const steps = 2;
    await trainUnet(w, model.arch, { latents, ids, plainIds, count: scenes.length, emptyIds: idsOf('') }, {
      steps, batch: 2, lr: 1e-3, textLr: 1e-3, warmup: 0, latentSize: h, tokens: T, seed: 1, uncondRate: 0.1, plainRate: 0.5,
      noiseOffset: 0.1, minSnrGamma: 5, vPredLikeLoss: 1, session: { threads: 2 }, logEvery: 1,
      validation: { latents, ids, count: scenes.length }, logGap: (_, g) => gaps.push(g),
    });
    const changed = (n: keyof typeof keys) => !w.get(keys[n])!.data.every((v, i) => v === before[n]![i]);
    assert.equal(changed('tokens'), false, 'token embeddings moved');
    assert.ok(changed('textLayer'), 'the text encoder did not train');
    assert.ok(changed('crossAttention'), 'the cross-attention did not train');
    assert.equal(gaps.length, steps);
    for (const g of gaps) assert.ok(Number.isFinite(g.right) && Number.isFinite(g.wrong) && g.right > 0 && g.wrong > 0, JSON.stringify(g));
    // Training moved the weights the gap is measured with: the two measurements differ.
    assert.notDeepEqual(gaps[0], gaps[1]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('autoencoder batches: seeded crops whose shape pixels weigh 1 + shapeWeight and background pixels 1', () => {
  const pictures = Array.from({ length: 6 }, (_, i) => {
    const scene = sampleScene(DEMO_RECIPE.seed, i);
    return { scene, rgb: renderScene(scene, 32) };
  });
  const a = autoencoderBatch(pictures, 32, 16, 3, 3, 5, 7);
  assert.deepEqual(a, autoencoderBatch(pictures, 32, 16, 3, 3, 5, 7));
  assert.notDeepEqual(a.images, autoencoderBatch(pictures, 32, 16, 3, 3, 5, 8).images);
  assert.equal(a.images.length, 3 * 3 * 16 * 16);
  assert.deepEqual([...new Set(a.weights)].sort(), [1, 4].filter((v) => a.weights.includes(v)));
  // A whole picture: exactly its non-background pixels weigh 4.
  const whole = autoencoderBatch(pictures.slice(0, 1), 32, 32, 1, 3, 5, 0);
  const [r, g, b] = COLOURS[pictures[0]!.scene.background];
  const rgb = pictures[0]!.rgb;
  for (let q = 0; q < 32 * 32; q++) {
    const background = rgb[q * 3] === r && rgb[q * 3 + 1] === g && rgb[q * 3 + 2] === b;
    assert.equal(whole.weights[q], background ? 1 : 4);
  }
  assert.ok(whole.weights.includes(4) && whole.weights.includes(1));
});

test('a saved training phase loads back only under the settings that made it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'demo-phase-'));
  try {
    const w = new Map([
      ['first_stage_model.a', { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }],
      ['model.diffusion_model.b', { shape: [2], data: Float32Array.from([7, 8]) }],
    ]);
    const file = join(dir, 'sub', 'autoencoder.safetensors');
    await savePhase(file, '{"steps":2}', w, /^first_stage_model\./);
    const fresh = new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: new Float32Array(v.data.length) }]));
    assert.equal(await loadPhase(file, '{"steps":3}', fresh), false);
    assert.deepEqual([...fresh.get('first_stage_model.a')!.data], [0, 0, 0, 0, 0, 0]);
    assert.equal(await loadPhase(file, '{"steps":2}', fresh), true);
    assert.deepEqual([...fresh.get('first_stage_model.a')!.data], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual([...fresh.get('model.diffusion_model.b')!.data], [0, 0], 'only the saved keys load');
    assert.equal(await loadPhase(join(dir, 'missing.safetensors'), '{"steps":2}', fresh), false);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
