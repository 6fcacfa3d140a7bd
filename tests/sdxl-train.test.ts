// One SDXL LoRA training step against peft/diffusers: noisy latents, loss and every UNet LoRA gradient (kohya
// sd-scripts' SDXL names), with the frozen encoders' context and pooled embedding and the per-image size
// conditioning; then 3 AdamW steps. And sd-scripts' crop bookkeeping for the size conditioning.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { Goldens } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { loadLora } from '../engine/lora/load.ts';
import { sizeConditionVector } from '../engine/models/unet.ts';
import { LoraNetwork, downName, upName } from '../engine/train/lora-network.ts';
import { noiseBatch } from '../engine/train/objective.ts';
import { LoraLossEval, LoraTrainStep, type StepInputs } from '../engine/train/step-graph.ts';
import { sdxlCropTopLeft } from '../engine/train/buckets.ts';
import { createTrainingStepper } from '../engine/optim/index.ts';

const dir = join(fixturesDir, 'sdxl-tiny');
const IN = 'golden/inputs.safetensors';
const FILE = 'golden/lora_train_step_unet_only.safetensors';
let golden: Goldens;
let model: StableDiffusion;

before(async () => {
  golden = await Goldens.open(dir);
  model = await StableDiffusion.load(join(dir, 'sdxl-tiny.safetensors'), { threads: 1 });
});

async function setup(checkpointBlocks = false) {
  const lora = await loadLora(join(dir, 'lora-kohya/lora_a.safetensors'));
  const rank = lora.modules[0]!.rank!;
  const network = LoraNetwork.create(model.weights, { rank, alpha: 1, targets: 'attention_mlp', textEncoder: false, seed: 0 });
  const ignored = network.loadFrom(lora, 'lora_a');
  assert.equal(ignored.length, lora.modules.filter((m) => m.part !== 'unet').length, 'only the text-encoder modules are left out');
  const latents = await golden.read(IN, 'train_latents');
  const noise = await golden.read(IN, 'train_noise');
  const timesteps = Array.from((await golden.readRaw(IN, 'train_timesteps')).data as BigInt64Array, Number);
  const sizes = (await golden.read(IN, 'train_time_ids')).data;
  const acp = (await golden.read('golden/schedule.safetensors', 'alphas_cumprod')).data;
  const context = await golden.read('golden/text_encoders.safetensors', 'context');
  const pooled = await golden.read('golden/text_encoders.safetensors', 'text_embeds');
  const [batch, , height, width] = latents.shape as number[];
  const nb = noiseBatch(latents.data, noise.data, timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
  const inputs: StepInputs = {
    noisy: nb.noisy,
    timesteps,
    target: nb.target,
    weights: nb.weights,
    context: context.data,
    added: sizeConditionVector(pooled.data, sizes, model.arch.unet.adm!),
  };
  const step = await LoraTrainStep.compile(model, network, { batch: batch!, height: height!, width: width!, tokens: context.shape[1]! }, { trainTextEncoder: false, checkpointBlocks, session: { threads: 1 } });
  return { network, inputs, step };
}

for (const ckpt of [false, true]) test(`SDXL LoRA step${ckpt ? ' with gradient checkpointing' : ''}: noisy latents, loss and every UNet LoRA gradient match peft (sd-scripts SDXL names)`, async () => {
  const { network, inputs, step } = await setup(ckpt);
  await golden.expectClose(inputs.noisy, FILE, 'noisy_latents');
  const r = await step.run(inputs);
  await golden.expectClose(new Float32Array([r.loss]), FILE, 'loss');
  const gradKeys = golden.manifest.tensors.filter((t) => t.file === FILE && t.key.startsWith('grad/')).map((t) => t.key);
  assert.equal(gradKeys.length, network.size * 2, 'one golden gradient per LoRA parameter');
  assert.ok(network.modules.every((m) => /^lora_unet_(input_blocks|middle_block|output_blocks)_/.test(m.name)), 'SGM module names');
  for (const key of gradKeys) {
    const mine = r.grads.get(key.slice('grad/'.length));
    assert.ok(mine, `no gradient for ${key}`);
    await golden.expectClose(mine, FILE, key);
  }
});

test('SDXL LoRA: 3 AdamW steps match torch\'s losses and weights', async () => {
  const { network, inputs, step } = await setup();
  const stepper = createTrainingStepper(
    {
      optimizer: 'adamw',
      learning_rate: 1e-3,
      text_encoder_lr: 1e-3,
      weight_decay: 1e-2,
      max_grad_norm: 0,
      lr_scheduler: 'constant',
      lr_warmup_steps: 0,
      gradient_accumulation_steps: 1,
      mixed_precision: 'no',
    },
    { unet: network.buffers('unet'), textencoder: network.buffers('te') },
    3,
  );
  const losses: number[] = [];
  let r = await step.run(inputs);
  for (let k = 0; k < 3; k++) {
    assert.ok(stepper.microBatch(r.loss, r.grads)?.applied);
    r = await step.run(inputs);
    losses.push(r.loss);
  }
  await golden.expectClose(new Float32Array(losses), FILE, 'adamw_losses');
  for (const m of network.modules) {
    for (const [name, data] of [[downName(m.name), m.down], [upName(m.name), m.up]] as const) {
      await golden.expectClose(data, FILE, `after_adamw/${name}`);
    }
  }
});

for (const where of ['sdxl-tiny.safetensors', 'diffusers'] as const) {
  test(`SDXL with both text encoders trained in the graph (${where}): the loss and UNet gradients of the frozen path fed diffusers' LoRA-A encoder outputs; a text-encoder gradient checks out by finite differences`, async () => {
    const m = where === 'diffusers' ? await StableDiffusion.load(join(dir, 'diffusers'), { threads: 1 }) : model;
    const lora = await loadLora(join(dir, 'lora-kohya/lora_a.safetensors'));
    const rank = lora.modules[0]!.rank!;
    const network = LoraNetwork.create(m.weights, { rank, alpha: 1, targets: 'attention_mlp', textEncoder: true, seed: 0 });
    assert.deepEqual(network.loadFrom(lora, 'lora_a'), [], 'every module of lora_a, both encoders included, is trained');
    assert.ok(network.hasPart('te') && network.hasPart('te2'));
    const ids1 = await golden.readRaw(IN, 'token_ids_te1');
    const ids2 = await golden.readRaw(IN, 'token_ids_te2');
    const [batch, tokens] = ids1.shape as [number, number];
    const latents = await golden.read(IN, 'train_latents');
    const noise = await golden.read(IN, 'train_noise');
    const timesteps = Array.from((await golden.readRaw(IN, 'train_timesteps')).data as BigInt64Array, Number);
    const sizes = (await golden.read(IN, 'train_time_ids')).data;
    const acp = (await golden.read('golden/schedule.safetensors', 'alphas_cumprod')).data;
    const [, , height, width] = latents.shape as number[];
    const nb = noiseBatch(latents.data, noise.data, timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
    const shape = { batch, height: height!, width: width!, tokens };
    const base = { noisy: nb.noisy, timesteps, target: nb.target, weights: nb.weights };
    const trained = await LoraTrainStep.compile(m, network, shape, { trainTextEncoder: true, session: { threads: 1 } });
    const teInputs: StepInputs = { ...base, ids: ids1.data as BigInt64Array, ids2: ids2.data as BigInt64Array, sizes };
    const r = await trained.run(teInputs);
    // The same batch through the frozen path, conditioned on diffusers' outputs of the LoRA-A encoders.
    const ctx = await golden.read('golden/text_encoders.safetensors', 'context_lora_a_x1');
    const pooled = await golden.read('golden/text_encoders.safetensors', 'text_embeds_lora_a_x1');
    const frozen = await LoraTrainStep.compile(m, network, shape, { trainTextEncoder: false, session: { threads: 1 } });
    const f = await frozen.run({ ...base, context: ctx.data, added: sizeConditionVector(pooled.data, sizes, m.arch.unet.adm!) });
    assert.ok(Math.abs(r.loss - f.loss) <= 1e-4 * Math.max(1, Math.abs(f.loss)), `loss ${r.loss} vs ${f.loss}`);
    // The check has teeth: the base encoders' outputs give another loss.
    const baseCtx = await golden.read('golden/text_encoders.safetensors', 'context');
    const basePooled = await golden.read('golden/text_encoders.safetensors', 'text_embeds');
    const without = await frozen.run({ ...base, context: baseCtx.data, added: sizeConditionVector(basePooled.data, sizes, m.arch.unet.adm!) });
    assert.ok(Math.abs(without.loss - f.loss) > 1e-2 * Math.abs(f.loss), `the text-encoder LoRA should move the loss (${without.loss} vs ${f.loss})`);
    for (const mod of network.modules.filter((x) => x.part === 'unet').slice(0, 8)) {
      const name = upName(mod.name);
      const a = r.grads.get(name)!;
      const b = f.grads.get(name)!;
      const scale = Math.max(...b.map(Math.abs));
      assert.ok(a.every((v, i) => Math.abs(v - b[i]!) <= 1e-3 * scale + 1e-7), `${name}: UNet gradient differs`);
    }
    // d loss / d (one element of te2's q LoRA): against a central difference.
    const q = network.modules.find((x) => x.name === 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj')!;
    const gq = r.grads.get(upName(q.name))!;
    let at = 0;
    gq.forEach((v, i) => (at = Math.abs(v) > Math.abs(gq[at]!) ? i : at));
    assert.ok(Math.abs(gq[at]!) > 1e-4, 'the text-encoder gradient is not trivial');
    const eps = 1e-2;
    const orig = q.up[at]!;
    q.up[at] = orig + eps;
    const plus = (await trained.run(teInputs)).loss;
    q.up[at] = orig - eps;
    const minus = (await trained.run(teInputs)).loss;
    q.up[at] = orig;
    const numeric = (plus - minus) / (2 * eps);
    assert.ok(Math.abs(numeric - gq[at]!) <= 0.05 * Math.abs(gq[at]!) + 1e-5, `te2 q gradient ${gq[at]} vs finite difference ${numeric}`);
  });
}

test('SDXL text-encoder LoRA gradients (te1 and te2, the SGM file with its fused OpenCLIP in_proj) agree with central differences of the loss at random coordinates', async () => {
  const lora = await loadLora(join(dir, 'lora-kohya/lora_a.safetensors'));
  const network = LoraNetwork.create(model.weights, { rank: lora.modules[0]!.rank!, alpha: 1, targets: 'attention_mlp', textEncoder: true, seed: 0 });
  assert.deepEqual(network.loadFrom(lora, 'lora_a'), []);
  const ids1 = await golden.readRaw(IN, 'token_ids_te1');
  const ids2 = await golden.readRaw(IN, 'token_ids_te2');
  const [batch, tokens] = ids1.shape as [number, number];
  const latents = await golden.read(IN, 'train_latents');
  const noise = await golden.read(IN, 'train_noise');
  const timesteps = Array.from((await golden.readRaw(IN, 'train_timesteps')).data as BigInt64Array, Number);
  const acp = (await golden.read('golden/schedule.safetensors', 'alphas_cumprod')).data;
  const [, , height, width] = latents.shape as number[];
  const nb = noiseBatch(latents.data, noise.data, timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
  const inputs: StepInputs = { noisy: nb.noisy, timesteps, target: nb.target, weights: nb.weights, ids: ids1.data as BigInt64Array, ids2: ids2.data as BigInt64Array, sizes: (await golden.read(IN, 'train_time_ids')).data };
  const shape = { batch, height: height!, width: width!, tokens };
  const step = await LoraTrainStep.compile(model, network, shape, { trainTextEncoder: true, session: { threads: 1 } });
  const lossOnly = await LoraLossEval.compile(model, network, shape, { trainTextEncoder: true, session: { threads: 1 } });
  const r = await step.run(inputs);
  // The fixture's float32 loss is off its float64 value by `float64_check.max_abs_err_vs_f64`; a central difference
  // over ±eps divides that rounding by eps, so the tolerance is a multiple of it plus 3 % for the truncation.
  const lossEntry = (golden.manifest.tensors as unknown as { file: string; key: string; float64_check: { max_abs_err_vs_f64: number } }[]).find((t) => t.file === FILE && t.key === 'loss')!;
  const eps = 1e-2;
  const roundoff = (4 * lossEntry.float64_check.max_abs_err_vs_f64) / eps;
  // A seeded pick: three modules per encoder, in each one up and one down coordinate among those whose gradient is
  // at least a tenth of the tensor's largest (so the comparison is not two numbers near zero).
  let seed = 12345;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  let checked = 0;
  for (const part of ['te', 'te2'] as const) {
    const mods = network.modules.filter((m) => m.part === part);
    assert.ok(mods.length >= 3, `${part}: ${mods.length} modules`);
    for (let k = 0; k < 3; k++) {
      const mod = mods.splice(rand(mods.length), 1)[0]!;
      for (const [which, data, name] of [['up', mod.up, upName(mod.name)], ['down', mod.down, downName(mod.name)]] as const) {
        const g = r.grads.get(name)!;
        const big = Math.max(...g.map(Math.abs));
        assert.ok(big > 0, `${name}: zero gradient`);
        const candidates = [...g.keys()].filter((i) => Math.abs(g[i]!) >= 0.1 * big);
        const at = candidates[rand(candidates.length)]!;
        const orig = data[at]!;
        data[at] = orig + eps;
        const plus = (await lossOnly.run(inputs)).loss;
        data[at] = orig - eps;
        const minus = (await lossOnly.run(inputs)).loss;
        data[at] = orig;
        const numeric = (plus - minus) / (2 * eps);
        assert.ok(Math.abs(numeric - g[at]!) <= 0.03 * Math.abs(g[at]!) + roundoff, `${name}[${at}] (${which}): gradient ${g[at]} vs central difference ${numeric}`);
        checked++;
      }
    }
  }
  assert.equal(checked, 12);
});

test('the crop SDXL is conditioned on follows sd-scripts (fit inside the bucket, centred)', () => {
  // A 800×1000 portrait in a 1024² bucket: fitted it is 819.2 wide, so 102 px in from the left.
  assert.deepEqual(sdxlCropTopLeft({ width: 1024, height: 1024 }, { width: 800, height: 1000 }), [0, 102]);
  // Landscape into a square bucket: offset from the top.
  assert.deepEqual(sdxlCropTopLeft({ width: 1024, height: 1024 }, { width: 1600, height: 900 }), [224, 0]);
  // Same aspect ratio: no crop.
  assert.deepEqual(sdxlCropTopLeft({ width: 1152, height: 896 }, { width: 2304, height: 1792 }), [0, 0]);
});

test('train with an SDXL base_model through the YAML: a kohya SDXL LoRA (sdxl_base_v1-0, SGM names) that loads back, with and without the text encoders', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { writePatternDataset, tinyConfig } = await import('./support/train-fixture.ts');
  const { train } = await import('../engine/train/trainer.ts');
  const { LoraMerger } = await import('../engine/lora/merge.ts');
  const tmp = await mkdtemp(join(tmpdir(), 'sdxl-train-'));
  try {
    await writePatternDataset(join(tmp, 'data'), 4);
    const sdxl = { base_model: join(dir, 'sdxl-tiny.safetensors'), tokenizer: join(dir, 'diffusers', 'tokenizer'), epochs: 1 };
    const r = await train(await tinyConfig(tmp, join(tmp, 'data'), join(tmp, 'out'), sdxl), { threads: 1 });
    assert.ok(Number.isFinite(r.lastLoss), `loss ${r.lastLoss}`);
    const lora = await loadLora(r.outputPath!);
    assert.equal(lora.metadata['ss_base_model_version'], 'sdxl_base_v1-0');
    assert.equal(lora.metadata['ss_v2'], 'False');
    assert.ok(lora.modules.length > 0 && lora.modules.every((m) => /^lora_unet_(input_blocks|middle_block|output_blocks)_/.test(m.name)), lora.modules[0]?.name);
    assert.ok(lora.modules.some((m) => m.tensors.up!.data.some((v) => v !== 0)), 'the run trained');
    const merged = await new LoraMerger(model.weights, { family: model.arch.family, log: () => {} }).apply([{ path: r.outputPath!, te: 1, unet: 1, name: 'trained' }]);
    assert.deepEqual(merged.loras[0]!.unmatched, []);
    assert.equal(merged.loras[0]!.applied, lora.modules.length);

    // Both text encoders trained too (the SGM file's OpenCLIP q/k/v through its fused in_proj): kohya lora_te1_/lora_te2_ modules.
    const te = await train(await tinyConfig(tmp, join(tmp, 'data'), join(tmp, 'te'), { ...sdxl, train_text_encoder: true }), { threads: 1 });
    const teLora = await loadLora(te.outputPath!);
    for (const prefix of ['lora_te1_', 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj']) {
      const mods = teLora.modules.filter((m) => m.name.startsWith(prefix));
      assert.ok(mods.length > 0 && mods.some((m) => m.tensors.up!.data.some((v) => v !== 0)), `${prefix} modules trained`);
    }
    const back = await new LoraMerger(model.weights, { family: model.arch.family, log: () => {} }).apply([{ path: te.outputPath!, te: 1, unet: 1, name: 'te' }]);
    assert.deepEqual(back.loras[0]!.unmatched, []);
    assert.equal(back.loras[0]!.applied, teLora.modules.length);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test("the trainer conditions each image on its own size and crop as kohya records them (original h, w; get_crop_ltrb's top, left; bucket h, w)", async () => {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const sharp = (await import('sharp')).default;
  const { tinyConfig, patternImage } = await import('./support/train-fixture.ts');
  const { train } = await import('../engine/train/trainer.ts');
  const tmp = await mkdtemp(join(tmpdir(), 'sdxl-sizes-'));
  const seen: number[][] = [];
  const run = LoraTrainStep.prototype.run;
  LoraTrainStep.prototype.run = function (this: LoraTrainStep, x: StepInputs) {
    const sizes = Array.from(x.sizes ?? []);
    for (let i = 0; i < sizes.length; i += 6) seen.push(sizes.slice(i, i + 6));
    return run.call(this, x);
  };
  try {
    // A 96×64 landscape and a 64×64 square in the 64² bucket. kohya's BucketManager.get_crop_ltrb fits the image
    // inside the bucket: 64 × 42.67, so crop top = (64 − 42.67) // 2 = 10, left 0; the square has no crop.
    await sharp(patternImage(1, 96).subarray(0, 96 * 64 * 3), { raw: { width: 96, height: 64, channels: 3 } }).png().toFile(join(tmp, 'wide.png'));
    await sharp(patternImage(2), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(join(tmp, 'square.png'));
    await writeFile(join(tmp, 'metadata.csv'), 'file_name,caption\nwide.png,"a disk"\nsquare.png,"a disk"\n');
    const cfg = await tinyConfig(tmp, tmp, join(tmp, 'out'), { base_model: join(dir, 'sdxl-tiny.safetensors'), tokenizer: join(dir, 'diffusers', 'tokenizer'), train_text_encoder: true, epochs: 1 });
    await train(cfg, { threads: 1 });
  } finally {
    LoraTrainStep.prototype.run = run;
    await rm(tmp, { recursive: true, force: true });
  }
  assert.deepEqual(seen.map((r) => r.join(',')).sort(), ['64,64,0,0,64,64', '64,96,10,0,64,64']);
});

test('resolution left out: 1024 for an SDXL base_model, 512 otherwise; a written one wins', async () => {
  const { parseTrainConfig } = await import('../engine/train/config.ts');
  const { stringify } = await import('yaml');
  const at = (base_model: string, extra: Record<string, unknown> = {}) =>
    parseTrainConfig(stringify({ train_data_dir: '.', base_model, ...extra }), join(fixturesDir, 'cfg.yaml')).then((r) => r.config.resolution);
  assert.equal(await at(join(dir, 'sdxl-tiny.safetensors')), 1024);
  assert.equal(await at(join(dir, 'diffusers')), 1024);
  assert.equal(await at(join(fixturesDir, 'sd-tiny', 'sd-tiny.safetensors')), 512);
  assert.equal(await at(join(dir, 'sdxl-tiny.safetensors'), { resolution: 768 }), 768);
});
