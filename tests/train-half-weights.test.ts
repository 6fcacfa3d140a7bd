/**
 * Frozen UNet weights held in half precision under gradient checkpointing: a float16 copy of sd-tiny loaded
 * with `halfWeights` gives the loss and LoRA gradients of the same file loaded as float32, holds the UNet in
 * half the bytes, and widens each weight again for the backward pass behind an `after` edge. Then the trainer
 * end to end on the (float16) demo model with --gradient-checkpointing and sample images.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { stringify } from 'yaml';
import { grad } from '../engine/autodiff/grad.ts';
import { topoSort } from '../engine/graph/tensor.ts';
import { f32ToF16 } from '../engine/safetensors/float.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { writeSafetensors, type TensorToWrite } from '../engine/safetensors/writer.ts';
import { DEMO_MODEL, DEMO_RESOLUTION, DEMO_STRIPES_DIR } from '../engine/demo/demo-model.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { buildLossGraph, LoraTrainStep } from '../engine/train/step-graph.ts';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';

const UNET = 'model.diffusion_model.';
let dir: string;
let halfFile: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'lora-scripts-half-'));
  // sd-tiny with every float tensor stored as F16, and its sidecar config beside it.
  const src = await SafetensorsFile.open(join(fixturesDir, 'sd-tiny', 'sd-tiny.safetensors'));
  const tensors = new Map<string, TensorToWrite>();
  for (const name of src.names()) {
    const t = await src.read(name);
    tensors.set(name, t.dtype === 'F32' ? { dtype: 'F16', shape: t.shape, data: f32ToF16(t.data as Float32Array) } : { dtype: t.dtype, shape: t.shape, data: t.data });
  }
  await src.close();
  halfFile = join(dir, 'sd-tiny-f16.safetensors');
  await writeSafetensors(halfFile, tensors);
  await copyFile(join(fixturesDir, 'sd-tiny', 'sd-tiny.yaml'), join(dir, 'sd-tiny-f16.yaml')).catch(() => {});
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function stepInputs(model: StableDiffusion, shape: { batch: number; height: number; width: number; tokens: number }) {
  const { batch, height, width, tokens } = shape;
  const c = model.arch.unet.inChannels;
  const n = batch * c * height * width;
  return {
    noisy: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7)),
    timesteps: Array.from({ length: batch }, (_, b) => 100 + 400 * b),
    context: Float32Array.from({ length: batch * tokens * model.arch.unet.contextDim }, (_, i) => Math.cos(i * 0.13)),
    target: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.31)),
    weights: new Float32Array(batch).fill(1),
  };
}

test('checkpointed LoRA step with the UNet held in float16 gives the float32-held loss and gradients', async () => {
  const opts = { threads: 1, ...(await sdTinySingleFileOptions()) };
  const full = await StableDiffusion.load(halfFile, opts);
  const half = await StableDiffusion.load(halfFile, { ...opts, halfWeights: [UNET] });
  assert.ok(half.holdsHalfWeights && !full.holdsHalfWeights);
  assert.ok(![...half.weights.keys()].some((k) => k.startsWith(UNET)), 'the half-held UNet is not in the float32 map');
  let unetBytes = 0;
  for (const [k, w] of full.weights) if (k.startsWith(UNET)) unetBytes += w.data.byteLength;
  assert.equal(full.weightBytes() - half.weightBytes(), unetBytes / 2);
  assert.deepEqual(half.weightShapes().keys(), full.weightShapes().keys());

  const netOpts = { rank: 2, alpha: 1, targets: 'attention_mlp_conv' as const, textEncoder: false, seed: 3 };
  const nets = [LoraNetwork.create(full.weightShapes(), netOpts), LoraNetwork.create(half.weightShapes(), netOpts)];
  for (const net of nets) for (const m of net.modules) m.up.forEach((_, i) => (m.up[i] = 0.01 * Math.sin(i)));
  const shape = { batch: 2, height: 8, width: 8, tokens: 77 };
  const x = await stepInputs(full, shape);
  const results = [];
  for (const [i, model] of [full, half].entries()) {
    const step = await LoraTrainStep.compile(model, nets[i]!, shape, { trainTextEncoder: false, checkpointBlocks: true, session: { threads: 1 } });
    results.push(await step.run(x));
  }
  const [a, b] = results as [(typeof results)[0], (typeof results)[0]];
  assert.ok(Number.isFinite(a.loss) && Math.abs(a.loss - b.loss) <= 1e-6 * Math.abs(a.loss), `loss ${a.loss} vs ${b.loss}`);
  assert.deepEqual([...a.grads.keys()], [...b.grads.keys()]);
  const maxAbs = (v: Float32Array) => v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const overall = Math.max(...[...a.grads.values()].map(maxAbs));
  assert.ok(overall > 0);
  // Each tensor against its own scale, except gradients that are rounding noise around zero (a time-embedding
  // shift that the next GroupNorm removes): those against a thousandth of the largest gradient.
  let worst = { name: '', rel: 0 };
  for (const [name, ga] of a.grads) {
    const gb = b.grads.get(name)!;
    const scale = Math.max(maxAbs(ga), 1e-3 * overall);
    for (let j = 0; j < ga.length; j++) {
      const rel = Math.abs(ga[j]! - gb[j]!) / scale;
      if (rel > worst.rel) worst = { name, rel };
    }
  }
  assert.ok(worst.rel <= 1e-4, `largest gradient difference: ${worst.rel} of ${worst.name}'s scale`);
});

test('each half-held weight is widened again for the backward pass, gated, and never kept from the forward pass', async () => {
  const opts = { threads: 1, ...(await sdTinySingleFileOptions()) };
  const half = await StableDiffusion.load(halfFile, { ...opts, halfWeights: [UNET] });
  const net = LoraNetwork.create(half.weightShapes(), { rank: 2, alpha: 1, targets: 'attention_mlp_conv', textEncoder: false, seed: 3 });
  const { loss } = buildLossGraph(half, net, { batch: 1, height: 8, width: 8, tokens: 77 }, { trainTextEncoder: false, checkpointBlocks: true });
  const nodes = topoSort([loss, ...grad(loss, net.paramTensors(['unet']))]);
  const halfParams = nodes.filter((t) => t.op === 'param' && t.dtype === 'float16');
  assert.ok(halfParams.length > 0);
  const users = new Map<(typeof nodes)[0], string[]>();
  for (const t of nodes) for (const i of t.inputs) if (i.op === 'param' && i.dtype === 'float16') users.set(i, [...(users.get(i) ?? []), t.op]);
  let rewidened = 0;
  for (const p of halfParams) {
    const u = users.get(p) ?? [];
    assert.equal(u.filter((op) => op === 'cast').length, 1, `${p.name}: one forward widening`);
    assert.ok(u.every((op) => op === 'cast' || op === 'after'), `${p.name} is used by ${u.join(', ')}`);
    if (u.includes('after')) rewidened++;
  }
  // Weights of the blocks outside checkpoint segments (the time embedding, conv_in, the output head) keep their
  // forward widening; every block weight is widened again.
  const blockWeights = halfParams.filter((p) => /^model\.diffusion_model\.(input_blocks\.([1-9]|\d\d+)|middle_block|output_blocks)\./.test(p.name!));
  assert.ok(rewidened >= blockWeights.length - 2 * 12 && rewidened > halfParams.length / 2, `${rewidened} of ${halfParams.length} re-widened`);
});

test('train --gradient-checkpointing on the float16 demo model holds its UNet in float16 and renders samples', async () => {
  const data = join(dir, 'stripes');
  await rm(data, { recursive: true, force: true });
  await import('node:fs/promises').then((fs) => fs.cp(DEMO_STRIPES_DIR, data, { recursive: true }));
  const cfg = {
    train_data_dir: data,
    allow_missing_captions: true, // the data set's flat pictures have empty captions, as in configs/demo_lora.yaml
    base_model: DEMO_MODEL,
    output_dir: join(dir, 'out'),
    latent_cache_dir: join(dir, 'latents'),
    logging_dir: join(dir, 'logs'),
    output_name: 'half',
    resolution: DEMO_RESOLUTION,
    enable_bucket: false,
    lora_rank: 4,
    lora_alpha: 4,
    batch_size: 30,
    epochs: 1,
    learning_rate: 1e-3,
    sample_every_n_steps: 1,
    sample_prompts: [{ prompt: 'a red star on a blue background', steps: 4 }],
  };
  await writeFile(join(dir, 'half.yaml'), stringify(cfg));
  const r = spawnSync(process.execPath, [join(repoRoot, 'bin/lora-scripts.js'), 'train', '--config', join(dir, 'half.yaml'), '--gradient-checkpointing', '--no-progress'], { encoding: 'utf8', cwd: dir });
  assert.equal(r.status, 0, r.stderr + r.stdout);
  const log = r.stderr + r.stdout;
  assert.match(log, /float16 weights stay float16/);
  assert.match(log, /fed at every step/);
  const samples = (await readdir(join(dir, 'out', 'sample'))).filter((f) => f.endsWith('.png'));
  assert.ok(samples.length >= 1, `samples: ${samples.join(', ')}`);
  assert.ok((await readFile(join(dir, 'out', 'half.safetensors'))).byteLength > 0);
});
