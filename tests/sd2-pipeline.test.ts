import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { inferSdArch, unetHeadsAt } from '../engine/sd/arch.ts';
import { ClipConditioner } from '../engine/sd/conditioning.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { Pipeline, type GenerateRequest } from '../engine/sd/pipeline.ts';
import { declaredPrediction, sidecarYamlPath } from '../engine/sd/prediction.ts';
import { SD2, syntheticShapes, tinySd2Config, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { loadClipTokenizer, type ClipTokenizer } from '../engine/text/tokenizer.ts';
import { UserError } from '../engine/util/errors.ts';

let dir: string;
let tokenizer: ClipTokenizer;
let plain: string;
let vModel: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sd2-pipe-'));
  tokenizer = await loadClipTokenizer(join(fixturesDir, 'sd-tiny/diffusers/tokenizer'));
  const cfg = tinySd2Config({ vocab: tokenizer.vocabSize });
  plain = join(dir, 'sd2-tiny.safetensors');
  vModel = join(dir, 'sd2-tiny-v.safetensors');
  await writeSyntheticCheckpoint(plain, cfg, { seed: 21 });
  await writeSyntheticCheckpoint(vModel, cfg, { seed: 21 });
  // A1111's way to mark a 768-v checkpoint: its config YAML next to it.
  await writeFile(sidecarYamlPath(vModel), 'model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    parameterization: "v"\n    linear_start: 0.00085\n');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test('SD2 shapes: OpenCLIP-H tower (24 stored, 23 used), Linear projections, 1024 context, 64-wide heads', () => {
  const shapes = syntheticShapes(SD2);
  const arch = inferSdArch((k) => shapes.get(k));
  assert.equal(arch.family, 'sd2');
  assert.equal(arch.textEncoder.layout, 'openclip');
  assert.equal(arch.textEncoder.activation, 'gelu');
  assert.equal(arch.textEncoder.width, SD2.text.width);
  assert.equal(arch.textEncoder.layers, SD2.text.layers);
  assert.equal(arch.textEncoder.heads, SD2.text.width / 64);
  assert.equal(arch.unet.useLinearProjection, true);
  assert.equal(arch.unet.contextDim, SD2.text.width);
  assert.deepEqual(arch.unet.heads, { headDim: 64 });
  assert.deepEqual(SD2.unet.channelMult.map((_, l) => unetHeadsAt(arch.unet, l)), SD2.unet.channelMult.map((m) => (m * SD2.unet.modelChannels) / 64));
  // A1111's SD2 test: the fused in_proj of the first resblock is [3·W, W].
  assert.deepEqual(shapes.get('cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight'), [3 * SD2.text.width, SD2.text.width]);
  assert.deepEqual(shapes.get('model.diffusion_model.input_blocks.1.1.proj_in.weight'), [SD2.unet.modelChannels, SD2.unet.modelChannels]);
  assert.ok(shapes.has(`cond_stage_model.model.transformer.resblocks.${SD2.text.layers - 1}.ln_1.weight`));
});

test('a tiny SD2 checkpoint loads as sd2 / openclip / linear projections / 64-wide heads, and A1111\'s probe decides its prediction', async () => {
  const m = await StableDiffusion.load(plain, { threads: 1 });
  assert.equal(m.arch.family, 'sd2');
  assert.equal(m.arch.textEncoder.layout, 'openclip');
  assert.equal(m.arch.unet.useLinearProjection, true);
  assert.deepEqual(m.arch.unet.heads, { headDim: 64 });
  assert.equal(m.arch.unet.contextDim, m.arch.textEncoder.width);
  assert.equal(m.predictionSource, 'probe');
  assert.equal(m.prediction, (await m.probeV()) ? 'v_prediction' : 'epsilon');
});

test('A1111\'s v probe reads the UNet: an output far below the input means v', async () => {
  const m = await StableDiffusion.load(plain, { threads: 1, prediction: 'epsilon' });
  assert.equal(m.predictionSource, 'option');
  // Zero the last conv so the UNet outputs its bias everywhere (weights are fed in place).
  m.weights.get('model.diffusion_model.out.2.weight')!.data.fill(0);
  const bias = m.weights.get('model.diffusion_model.out.2.bias')!.data;
  bias.fill(-2);
  assert.equal(await m.probeV(), true);
  bias.fill(0);
  assert.equal(await m.probeV(), false);
});

test('SD2 conditioning: padding id 0 after the end token, and clip skip has no effect (A1111\'s OpenCLIP wrapper)', async () => {
  const m = await StableDiffusion.load(plain, { threads: 1, prediction: 'epsilon' });
  const cond = new ClipConditioner(m, tokenizer);
  assert.notEqual(tokenizer.pad, 0, 'the fixture tokenizer pads with its end token; SD2 must override that');
  assert.equal(cond.effectiveTokenizer.pad, 0);
  const prompt = 'a red cube';
  const body = tokenizer.encode(prompt);
  const T = 77;
  const ids = (pad: number) => BigInt64Array.from([tokenizer.bos, ...body, tokenizer.eos, ...Array(T - body.length - 2).fill(pad)], BigInt);
  const c = await cond.encode(prompt, 1);
  assert.equal(c.tokens, T);
  assert.ok(maxDiff(c.data, await m.encodeText(ids(0), 1, T)) < 1e-5, 'context is the encoder on 0-padded ids');
  assert.ok(maxDiff(c.data, await m.encodeText(ids(tokenizer.eos), 1, T)) > 1e-3, 'end-token padding would differ');
  assert.deepEqual((await cond.encode(prompt, 2)).data, c.data);
  // The encoder itself honours clip skip (kohya's training semantics); only A1111's generation wrapper ignores it.
  assert.ok(maxDiff(await m.encodeText(ids(0), 1, T, 2), c.data) > 1e-3);
});

function request(over: Partial<GenerateRequest> = {}): GenerateRequest {
  return { prompt: 'a red cube', negativePrompt: 'blurry', seeds: [5], width: 64, height: 64, steps: 3, cfgScale: 5, sampler: 'Euler a', ...over };
}

test('txt2img on the tiny SD2 checkpoint: finite, deterministic, seed-dependent', async () => {
  const m = await StableDiffusion.load(plain, { threads: 1, prediction: 'epsilon' });
  const pipe = new Pipeline(m, new ClipConditioner(m, tokenizer));
  for (const sampler of ['Euler a', 'DDIM']) {
    const a = await pipe.generate(request({ sampler }));
    assert.equal(a.images.length, 3 * 64 * 64);
    assert.ok(a.images.every(Number.isFinite), `${sampler}: non-finite pixels`);
    assert.deepEqual((await pipe.generate(request({ sampler }))).images, a.images, `${sampler}: not deterministic`);
    assert.ok(maxDiff((await pipe.generate(request({ sampler, seeds: [6] }))).images, a.images) > 1e-3, `${sampler}: seed ignored`);
  }
});

test('a v checkpoint (sidecar YAML) samples as v: finite, deterministic, and unlike the same run read as eps', async () => {
  const m = await StableDiffusion.load(vModel, { threads: 1 });
  assert.equal(m.prediction, 'v_prediction');
  assert.equal(m.predictionSource, sidecarYamlPath(vModel));
  const pipe = new Pipeline(m, new ClipConditioner(m, tokenizer));
  for (const sampler of ['Euler', 'DPM++ 2M', 'DDIM', 'UniPC']) {
    const a = await pipe.generate(request({ sampler }));
    assert.ok(a.images.every(Number.isFinite), `${sampler}: non-finite pixels`);
    assert.deepEqual((await pipe.generate(request({ sampler }))).images, a.images, `${sampler}: not deterministic`);
    const asEps = await pipe.generate(request({ sampler, prediction: 'epsilon' }));
    assert.ok(maxDiff(asEps.images, a.images) > 1e-3, `${sampler}: the prediction type made no difference`);
  }
  // Inpainting: where the mask keeps the image, the x0 estimate is the image's latent whatever the model
  // predicts, so with nothing to repaint every step's preview is the same under v as under eps.
  const img = new Float32Array(3 * 64 * 64).map((_, i) => Math.sin(i / 40) * 0.8);
  const previews = async (prediction: 'epsilon' | 'v_prediction', mask: Float32Array | null) => {
    const out: Uint8Array[] = [];
    await pipe.generate(request({ sampler: 'Euler', prediction, img2img: { images: [img], denoisingStrength: 0.8, mask } }), {
      onStep: (_s, _t, preview) => out.push(preview().data),
    });
    return out;
  };
  const keepAll = new Float32Array(64 * 64);
  const [kv, ke] = [await previews('v_prediction', keepAll), await previews('epsilon', keepAll)];
  assert.ok(kv.length > 0);
  kv.forEach((p, i) => assert.ok(p.every((b, j) => Math.abs(b - ke[i]![j]!) <= 1), `step ${i}: masked x0 differs between v and eps`));
  const [fv, fe] = [await previews('v_prediction', null), await previews('epsilon', null)];
  assert.ok(fv.some((p, i) => p.some((b, j) => Math.abs(b - fe[i]![j]!) > 1)), 'unmasked previews must depend on the prediction type');
  // The explicit option wins over the YAML.
  assert.equal((await StableDiffusion.load(vModel, { threads: 1, prediction: 'epsilon' })).prediction, 'epsilon');
});

test('declared prediction types: diffusers scheduler config, LDM YAML default, bad files named in the error', async () => {
  const folder = join(dir, 'diffusers-v');
  await mkdir(join(folder, 'scheduler'), { recursive: true });
  await writeFile(join(folder, 'scheduler', 'scheduler_config.json'), JSON.stringify({ _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' }));
  assert.deepEqual(await declaredPrediction(folder, true), { prediction: 'v_prediction', source: join(folder, 'scheduler', 'scheduler_config.json') });

  const eps = join(dir, 'eps.safetensors');
  await writeFile(sidecarYamlPath(eps), 'model:\n  params:\n    linear_start: 0.00085\n');
  assert.equal((await declaredPrediction(eps, false))?.prediction, 'epsilon');
  assert.equal(await declaredPrediction(join(dir, 'none.safetensors'), false), undefined);

  const bad = join(dir, 'bad.safetensors');
  await writeFile(sidecarYamlPath(bad), 'model:\n  params:\n    parameterization: "x0"\n');
  await assert.rejects(declaredPrediction(bad, false), (e: unknown) => e instanceof UserError && e.message.includes(sidecarYamlPath(bad)) && e.message.includes('parameterization'));
});
