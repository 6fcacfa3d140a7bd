// SDXL generation: the pipeline's classifier-free guidance with pooled embeddings and size conditioning
// reproduces diffusers' Euler CFG trajectory and decoded image; and end to end (tokenizer → both encoders →
// sampler → VAE) through SdGenerator, with A1111's conditioning rules and LoRA stacks.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { Goldens, assertClose } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { Pipeline } from '../engine/sd/pipeline.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { SdxlConditioner, concatFeatures, type Conditioning } from '../engine/sd/conditioning.ts';

const dir = join(fixturesDir, 'sdxl-tiny');
let golden: Goldens;
let model: StableDiffusion;
let gen: SdGenerator;

before(async () => {
  golden = await Goldens.open(dir);
  model = await StableDiffusion.load(join(dir, 'diffusers'), { threads: 1 });
  gen = await SdGenerator.load(join(dir, 'diffusers'), { threads: 1 });
});

function row(t: { data: Float32Array; shape: number[] }, i: number): Float32Array {
  const n = t.data.length / t.shape[0]!;
  return t.data.slice(i * n, (i + 1) * n);
}

test('Euler CFG trajectory with pooled embeddings and size conditioning matches diffusers, and so does the decoded image', async () => {
  const file = 'golden/sample_euler.safetensors';
  const latents = await golden.read(file, 'latents');
  const guided = await golden.read(file, 'guided_eps');
  const sigmas = (await golden.read('golden/schedule.safetensors', 'euler_sigmas')).data;
  const ts = (await golden.read('golden/schedule.safetensors', 'euler_timesteps')).data;
  const initSigma = (await golden.read('golden/schedule.safetensors', 'init_noise_sigma')).data[0]!;
  const noise = await golden.read('golden/inputs.safetensors', 'sample_noise');
  const sizes = Array.from((await golden.read('golden/inputs.safetensors', 'sample_time_ids')).data);
  const context = await golden.read('golden/text_encoders.safetensors', 'context');
  const pooled = await golden.read('golden/text_encoders.safetensors', 'text_embeds');
  const tokens = context.shape[1]!;
  const cond: Conditioning = { data: row(context, 0), tokens, pooled: row(pooled, 0) };
  const uncond: Conditioning = { data: row(context, 1), tokens, pooled: row(pooled, 1) };
  const cfg = golden.manifest.config.cfg_scale as number;
  const [, , C, h, w] = latents.shape as number[];
  const pipeline = new Pipeline(model, new SdxlConditioner(model, gen.tokenizer));

  let x = noise.data.map((v) => v * initSigma);
  const tol = golden.tolerance(file, 'latents');
  assertClose(x, row(latents, 0), tol, 'initial latent');
  for (let i = 0; i < ts.length; i++) {
    const xin = x.map((v) => v / Math.sqrt(sigmas[i]! ** 2 + 1));
    const eps = await pipeline.guidedEps(xin, ts[i]!, cond, uncond, cfg, { batch: 1, height: h!, width: w!, tiling: false, sizes });
    assertClose(eps, row(guided, i), golden.tolerance(file, 'guided_eps'), `guided eps at step ${i}`);
    x = x.map((v, k) => v + eps[k]! * (sigmas[i + 1]! - sigmas[i]!));
    assertClose(x, row(latents, i + 1), tol, `latent after step ${i + 1}`);
  }
  assert.equal(x.length, C! * h! * w!);
  const image = await model.decode(x.map((v) => v / model.arch.vae.scalingFactor), { batch: 1, height: h!, width: w! });
  await golden.expectClose(image, file, 'image');
});

test('SDXL conditioning: the same chunks through both encoders (OpenCLIP padded with 0), context side by side, pooled from the first chunk; empty negative = zeros', async () => {
  const tok = gen.tokenizer;
  const c = new SdxlConditioner(model, tok);
  const prompt = 'a b c';
  const got = await c.encode(prompt, 1);
  const ids = tok.encode(prompt);
  const T = got.tokens;
  const frame = (pad: number) => BigInt64Array.from([tok.bos, ...ids, tok.eos, ...Array(T - ids.length - 2).fill(pad)], BigInt);
  const ref = await model.encodeTextSdxl(frame(tok.pad), frame(0), 1, T);
  assertClose(got.data, concatFeatures(ref.hidden1, ref.hidden2, T), { atol: 1e-5, rtol: 1e-5 }, 'context');
  assertClose(got.pooled!, ref.pooled, { atol: 1e-5, rtol: 1e-5 }, 'pooled');
  assert.equal(got.data.length, T * model.arch.unet.contextDim);

  // A1111's sdxl_clip_l_skip: off, clip skip leaves CLIP ViT-L at its penultimate layer; on, clip skip 1 reads the last one.
  assert.deepEqual(await c.encode(prompt, 1), await c.encode(prompt, 2));
  const last = await c.encode(prompt, 1, { sdxlClipLSkip: true });
  assert.ok(last.data.some((v, i) => Math.abs(v - got.data[i]!) > 1e-3), 'sdxl_clip_l_skip with clip skip 1 must change the CLIP-L half');

  const emptyNeg = await c.encode('', 1, { negative: true });
  assert.ok(emptyNeg.data.every((v) => v === 0) && emptyNeg.pooled!.every((v) => v === 0), 'an empty negative prompt is zeros');
  const emptyPos = await c.encode('', 1);
  assert.ok(emptyPos.data.some((v) => v !== 0), 'an empty positive prompt is encoded');
});

test('SdGenerator runs SDXL txt2img end to end: deterministic, size conditioning as A1111, LoRA stacks change the image', async () => {
  const base = { prompt: 'a (b:1.3) c', negativePrompt: '', seeds: [7], width: 64, height: 64, steps: 3, cfgScale: 5, sampler: 'Euler a' };
  const a = await gen.generate(base);
  assert.ok(a.images.every(Number.isFinite));
  assert.equal(a.images.length, 3 * 64 * 64);
  const again = await gen.generate(base);
  assert.deepEqual(again.images, a.images);
  // Size conditioning reaches the UNet as A1111 builds it: [h, w, crop top, crop left, h, w] for both CFG halves.
  // (The tiny UNet's eps barely depends on it: its label_emb path is checked against diffusers in sdxl-models.)
  const seen: number[][] = [];
  const predict = gen.model.predict.bind(gen.model);
  gen.model.predict = (x, t, c, d, added) => (seen.push(Array.from(added!.sizes)), predict(x, t, c, d, added));
  try {
    await gen.generate({ ...base, width: 64, height: 80, sdxlCropTop: 256, sdxlCropLeft: 128 });
  } finally {
    gen.model.predict = predict;
  }
  assert.ok(seen.length > 0);
  for (const s of seen) assert.deepEqual(s, [80, 64, 256, 128, 80, 64, 80, 64, 256, 128, 80, 64]);
  const lora = await gen.generate({ ...base, loras: [{ path: join(dir, 'lora-kohya/lora_a.safetensors'), te: 1, unet: 1, name: 'lora_a' }] });
  assert.deepEqual(lora.lora!.loras[0]!.unmatched, []);
  assert.ok(lora.images.some((v, i) => Math.abs(v - a.images[i]!) > 1e-3), 'the LoRA must change the image');
  const back = await gen.generate(base);
  assertClose(back.images, a.images, { atol: 1e-5, rtol: 0 }, 'base model restored after the LoRA');
});
