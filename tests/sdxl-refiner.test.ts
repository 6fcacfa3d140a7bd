// SDXL's refiner: an SGM refiner single file (built from the sdxl-tiny base in tests/support/sdxl-refiner.ts)
// loads as its own family; its conditioning is the base's OpenCLIP half with the aesthetic score in label_emb;
// and as A1111's refiner it continues the base's sampler run on the same latents from `refiner_switch_at`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { assertClose } from './support/golden.ts';
import { writeTinyRefiner } from './support/sdxl-refiner.ts';
import { SdGenerator, type GenerateWithLoras } from '../engine/generate/generator.ts';
import { sizeConditionRows } from '../engine/sd/size-conditioning.ts';
import { refinerReached } from '../engine/sd/refiner.ts';
import { DiscreteSchedule } from '../engine/sampling/training-schedule.ts';
import type { PreviewImage } from '../engine/sd/pipeline.ts';

const xl = join(fixturesDir, 'sdxl-tiny');
const tokenizer = join(xl, 'diffusers', 'tokenizer');
let tmp: string;
let base: SdGenerator;
let refiner: SdGenerator;

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'lora-scripts-refiner-'));
  const path = await writeTinyRefiner(tmp, 'tiny-refiner');
  base = await SdGenerator.load(join(xl, 'sdxl-tiny.safetensors'), { threads: 1, tokenizer });
  refiner = await SdGenerator.load(path, { threads: 1, tokenizer });
});
after(() => rm(tmp, { recursive: true, force: true }));

test('an SGM refiner file loads as the SDXL refiner: one OpenCLIP tower, label_emb over pooled + 5 size features', () => {
  const a = refiner.model.arch;
  const b = base.model.arch;
  assert.equal(a.family, 'sdxl-refiner');
  assert.equal(a.textEncoder2, undefined);
  assert.equal(a.textEncoder.prefix, 'conditioner.embedders.0.model.');
  assert.equal(a.textEncoder.width, b.textEncoder2!.width);
  assert.equal(a.unet.contextDim, b.textEncoder2!.width);
  assert.deepEqual(a.unet.adm, { ...b.unet.adm!, inChannels: b.unet.adm!.pooledDim + 5 * b.unet.adm!.sizeEmbedDim, sizeConditions: 5 });
  assert.equal(a.vae.scalingFactor, 0.13025);
});

test("the refiner's conditioning is the base's OpenCLIP half: penultimate states with emphasis, the same pooled embedding; empty negative = zeros", async () => {
  const w1 = base.model.arch.textEncoder.width;
  const w2 = base.model.arch.textEncoder2!.width;
  for (const prompt of ['a (red:1.3) cat on a mat', 'x']) {
    const full = await base.pipeline.conditioner.encode(prompt, 1);
    const own = await refiner.pipeline.conditioner.encode(prompt, 1);
    assert.equal(own.tokens, full.tokens);
    const half = new Float32Array(full.tokens * w2);
    for (let t = 0; t < full.tokens; t++) half.set(full.data.subarray(t * (w1 + w2) + w1, (t + 1) * (w1 + w2)), t * w2);
    assertClose(own.data, half, { atol: 1e-5, rtol: 1e-5 }, `context of '${prompt}'`);
    assertClose(own.pooled!, full.pooled!, { atol: 1e-5, rtol: 1e-5 }, `pooled of '${prompt}'`);
  }
  const empty = await refiner.pipeline.conditioner.encode('', 1, { negative: true });
  assert.ok(empty.data.every((v) => v === 0) && empty.pooled!.every((v) => v === 0));
});

test('size conditioning rows: the base six numbers; the refiner ends in the aesthetic score, 6.0 / 2.5 by default (A1111 options)', () => {
  const o = { sdxlCropTop: 8, sdxlCropLeft: 16 };
  assert.deepEqual(sizeConditionRows(base.model.arch.unet.adm, 1, 64, 96, o, false), [64, 96, 8, 16, 64, 96]);
  assert.deepEqual(sizeConditionRows(refiner.model.arch.unet.adm, 2, 64, 96, o, false), [64, 96, 8, 16, 6, 64, 96, 8, 16, 6]);
  assert.deepEqual(sizeConditionRows(refiner.model.arch.unet.adm, 1, 64, 96, o, true), [64, 96, 8, 16, 2.5]);
  assert.deepEqual(sizeConditionRows(refiner.model.arch.unet.adm, 1, 64, 96, { aestheticScore: 7, negativeAestheticScore: 1 }, true), [64, 96, 0, 0, 1]);
});

test("A1111's switch rule: by the noise level's timestep (999 − t) / 1000, or by steps with refiner_switch_by_sample_steps", () => {
  const sigmas = DiscreteSchedule.fromTrainSchedule().sigmas;
  const call = (t: number, index: number) => ({ sigma: sigmas[t]!, index, total: 10 });
  assert.equal(refinerReached({ switchAt: 0.8 }, call(200, 0), sigmas), false, '(999 − 200) / 1000 < 0.8');
  assert.equal(refinerReached({ switchAt: 0.8 }, call(199, 0), sigmas), true);
  assert.equal(refinerReached({ switchAt: 0.8, bySteps: true }, call(10, 7), sigmas), false);
  assert.equal(refinerReached({ switchAt: 0.8, bySteps: true }, call(999, 8), sigmas), true);
  assert.equal(refinerReached({ switchAt: null }, call(999, 0), sigmas), true, 'no switch_at: from the first call');
});

async function run(req: Partial<GenerateWithLoras>): Promise<{ images: Float32Array; previews: PreviewImage[]; refined: boolean; notes: string[] }> {
  const previews: PreviewImage[] = [];
  const out = await base.generate(
    { prompt: 'a red cat', negativePrompt: 'blurry', seeds: [7], width: 64, height: 64, steps: 6, cfgScale: 5, sampler: 'Euler', ...req },
    { onStep: (_s, _t, preview) => previews.push(preview()) },
  );
  return { images: out.images, previews, refined: out.refined ?? false, notes: out.notes };
}

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('txt2img with a refiner: the steps before the switch are the base run exactly, the refiner changes the rest', async () => {
  const plain = await run({});
  const refined = await run({ refiner: { generator: refiner, name: 'tiny-refiner', switchAt: 0.5, bySteps: true } });
  assert.equal(refined.refined, true);
  assert.equal(refined.previews.length, 6);
  for (let s = 0; s < 3; s++) assert.deepEqual(refined.previews[s]!.data, plain.previews[s]!.data, `step ${s + 1} (before the switch) is the base's`);
  assert.ok(maxAbs(refined.previews[3]!.data, plain.previews[3]!.data) > 0, 'step 4 is the refiner’s');
  // The same run without a refiner repeats bit for bit (`never` below), so any difference is the refiner's; this
  // refiner shares most weights with the base (tests/support/sdxl-refiner.ts), hence a small one.
  assert.ok(maxAbs(refined.images, plain.images) > 1e-3, `the refiner changes the image (max ${maxAbs(refined.images, plain.images)})`);

  // Default rule (noise level): some early steps stay the base's, the end is refined.
  const bySigma = await run({ refiner: { generator: refiner, name: 'tiny-refiner', switchAt: 0.5 } });
  assert.equal(bySigma.refined, true);
  assert.deepEqual(bySigma.previews[0]!.data, plain.previews[0]!.data);
  assert.ok(maxAbs(bySigma.images, plain.images) > 1e-3);

  const never = await run({ refiner: { generator: refiner, name: 'tiny-refiner', switchAt: 1 } });
  assert.equal(never.refined, false, 'switch_at 1 is never reached');
  assert.equal(maxAbs(never.images, plain.images), 0);
});

test('img2img with a refiner, and LoRAs: they apply to the base only when the refiner is another family (noted)', async () => {
  const plain = await run({});
  const init = plain.images.slice(0, 3 * 64 * 64);
  const img2img = { images: [init], denoisingStrength: 0.6 };
  const a = await run({ img2img });
  const b = await run({ img2img, refiner: { generator: refiner, name: 'tiny-refiner', switchAt: 0.7 } });
  assert.equal(b.refined, true);
  assert.ok(maxAbs(a.images, b.images) > 1e-3);
  const lora = { path: join(xl, 'lora-kohya', 'lora_a.safetensors'), te: 1, unet: 1, name: 'lora_a' };
  const withLora = await run({ loras: [lora], refiner: { generator: refiner, name: 'tiny-refiner', switchAt: 0.5 } });
  assert.ok(withLora.notes.some((n) => /LoRAs apply to the base model only: the refiner tiny-refiner is SDXL refiner/.test(n)), JSON.stringify(withLora.notes));
  assert.ok(maxAbs(withLora.previews[0]!.data, plain.previews[0]!.data) > 0, 'the LoRA changes the base steps');
});

test('a refiner from another latent space is refused naming both', async () => {
  const sd1 = await SdGenerator.load(join(fixturesDir, 'sd-tiny', 'diffusers'), { threads: 1 });
  await assert.rejects(run({ refiner: { generator: sd1, name: 'sd-tiny', switchAt: 0.5 } }), /refiner_checkpoint sd-tiny: its latent space .* is not the base model's/);
});
