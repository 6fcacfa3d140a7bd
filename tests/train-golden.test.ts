// One LoRA training step on sd-tiny against peft/diffusers: noisy latents, loss and every LoRA gradient
// (UNet only, and UNet + text encoder through CLIP), then 3 AdamW steps: the losses and the final weights.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { Goldens, assertClose } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { loadLora } from '../engine/lora/load.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../engine/sampling/training-schedule.ts';
import { LoraNetwork, downName, upName } from '../engine/train/lora-network.ts';
import { noiseBatch } from '../engine/train/objective.ts';
import { LoraTrainStep, buildLossGraph, transposedConvsAsConvs, type StepInputs } from '../engine/train/step-graph.ts';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { compile } from '../engine/runtime/session.ts';
import { topoSort } from '../engine/graph/tensor.ts';
import { createTrainingStepper } from '../engine/optim/index.ts';

const dir = join(fixturesDir, 'sd-tiny');
const IN = 'golden/inputs.safetensors';
let golden: Goldens;
let model: StableDiffusion;

before(async () => {
  golden = await Goldens.open(dir);
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
});

async function setup(trainTE: boolean, file: string, checkpointBlocks = false) {
  const lora = await loadLora(join(dir, 'lora-kohya/lora_a.safetensors'));
  const rank = lora.modules[0]!.rank!;
  const network = LoraNetwork.create(model.weights, { rank, alpha: 1, targets: 'attention', textEncoder: trainTE, seed: 0 });
  const ignored = network.loadFrom(lora, 'lora_a');
  assert.equal(ignored.length, trainTE ? 0 : lora.modules.filter((m) => m.part === 'te').length);
  const ids = await golden.readRaw(IN, 'token_ids');
  const [batch, tokens] = ids.shape as [number, number];
  const latents = await golden.read(IN, 'train_latents');
  const noise = await golden.read(IN, 'train_noise');
  const timesteps = Array.from((await golden.readRaw(IN, 'train_timesteps')).data as BigInt64Array, Number);
  const acp = (await golden.read('golden/schedule.safetensors', 'alphas_cumprod')).data;
  const [, , height, width] = latents.shape as number[];
  const nb = noiseBatch(latents.data, noise.data, timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
  const inputs: StepInputs = { noisy: nb.noisy, timesteps, target: nb.target, weights: nb.weights };
  if (trainTE) inputs.ids = ids.data as BigInt64Array;
  else inputs.context = await model.encodeText(ids.data as BigInt64Array, batch, tokens, 1);
  const step = await LoraTrainStep.compile(model, network, { batch, height: height!, width: width!, tokens }, { trainTextEncoder: trainTE, checkpointBlocks, session: { threads: 1 } });
  return { lora, network, inputs, step, file, acp };
}

for (const [label, trainTE, ckpt] of [['unet_only', false, false], ['unet_te', true, false], ['unet_te', true, true]] as const) {
  const file = `golden/lora_train_step_${label}.safetensors`;

  test(`${label}${ckpt ? ' with UNet blocks checkpointed' : ''}: noisy latents, loss and every LoRA gradient match peft`, async () => {
    const { network, inputs, step, acp } = await setup(trainTE, file, ckpt);
    // The trainer's float32 ᾱ must be diffusers' own (to an ulp), or everything downstream is off.
    assertClose(alphasCumprod(SD_TRAIN_SCHEDULE), acp, { atol: 0, rtol: 1e-6 }, 'alphas_cumprod');
    await golden.expectClose(inputs.noisy, file, 'noisy_latents');
    const r = await step.run(inputs);
    await golden.expectClose(new Float32Array([r.loss]), file, 'loss');
    const gradKeys = golden.manifest.tensors.filter((t) => t.file === file && t.key.startsWith('grad/')).map((t) => t.key);
    assert.equal(gradKeys.length, network.size * 2, 'one golden gradient per LoRA parameter');
    assert.equal(network.hasPart('te'), trainTE);
    for (const key of gradKeys) {
      const name = key.slice('grad/'.length);
      const mine = r.grads.get(name);
      assert.ok(mine, `no gradient for ${name}`);
      await golden.expectClose(mine, file, key);
    }
    // up starts non-zero in lora_a, so the down gradients are non-trivial: make sure the check had teeth.
    const someDown = r.grads.get(downName(network.modules[0]!.name))!;
    assert.ok(someDown.some((v) => Math.abs(v) > 1e-6));
  });

  if (ckpt) continue;
  test(`${label}: 3 AdamW steps match torch's losses and weights`, async () => {
    const { network, inputs, step } = await setup(trainTE, file);
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
      const rep = stepper.microBatch(r.loss, r.grads);
      assert.ok(rep?.applied);
      r = await step.run(inputs);
      losses.push(r.loss);
    }
    await golden.expectClose(new Float32Array(losses), file, 'adamw_losses');
    for (const m of network.modules) {
      for (const [name, data] of [[downName(m.name), m.down], [upName(m.name), m.up]] as const) {
        await golden.expectClose(data, file, `after_adamw/${name}`);
      }
    }
  });
}

test('block checkpointing puts each top-level UNet block in its own segment', () => {
  const network = LoraNetwork.create(model.weights, { rank: 2, alpha: 1, targets: 'attention', textEncoder: true, seed: 0 });
  const shape = { batch: 1, height: 8, width: 8, tokens: 77 };
  const blocks = new Set([...model.weights.keys()].map((k) => /^model\.diffusion_model\.(input_blocks\.\d+|middle_block|output_blocks\.\d+)\./.exec(k)?.[1]).filter(Boolean));
  const segments = (ckpt: boolean) => {
    const { loss } = buildLossGraph(model, network, shape, { trainTextEncoder: true, checkpointBlocks: ckpt });
    return new Set(topoSort([loss]).map((t) => t.segment).filter((s) => s !== undefined)).size;
  };
  assert.equal(segments(false), 0);
  assert.equal(segments(true), blocks.size);
});

test('stride-1 transposed convolutions become convolutions with the same values; strided ones stay', async () => {
  const rnd = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k));
  const x = g.input('x', 'float32', [1, 3, 9, 9]);
  const w3 = g.param('w3', [4, 3, 3, 3], rnd(108, 1));
  const w1 = g.param('w1', [5, 4, 1, 1], rnd(20, 2));
  const ws = g.param('ws', [2, 5, 3, 3], rnd(90, 3));
  const y = g.conv2d(g.conv2d(g.conv2d(x, w3, undefined, { padding: 1 }), w1), ws, undefined, { stride: 2, padding: [0, 1, 1, 0] });
  const loss = g.sum(g.mul(y, y));
  const [dx] = grad(loss, [x]);
  const [rewritten] = transposedConvsAsConvs([dx!]);
  const count = (t: g.Tensor, op: string) => topoSort([t]).filter((n) => n.op === op).length;
  assert.equal(count(dx!, 'conv_transpose2d'), 3);
  assert.equal(count(rewritten!, 'conv_transpose2d'), 1, 'only the strided one is left');
  const feeds = { x: rnd(243, 4) };
  const [a] = await (await compile([dx!])).run(feeds);
  const [b] = await (await compile([rewritten!])).run(feeds);
  assertClose(b!.data as Float32Array, a!.data as Float32Array, { atol: 1e-4, rtol: 1e-5 }, 'dx');
});
