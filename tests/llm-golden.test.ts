// The Llama decoder, its PEFT LoRA, loss, LoRA gradients and AdamW steps against transformers + peft.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { Goldens } from './support/golden.ts';
import { compile } from '../engine/runtime/session.ts';
import { compileTrainStep } from '../engine/runtime/train-step.ts';
import { loadLlm, llmContext, type LoadedLlm } from '../engine/llm/load.ts';
import { llamaForCausalLM } from '../engine/llm/model.ts';
import { decoderFeeds } from '../engine/llm/inputs.ts';
import { causalLmLoss, shiftedLabels, LABELS_INPUT } from '../engine/llm/objective.ts';
import { loadPeftAdapter, mergeAdapters } from '../engine/llm/peft.ts';
import { LlmLoraNetwork } from '../engine/llm/lora-network.ts';
import { AdamW } from '../engine/optim/index.ts';

const dir = join(fixturesDir, 'llama-tiny');
const G = 'golden/golden.safetensors';
let golden: Goldens;
let ids: number[];
let B: number;
let T: number;

before(async () => {
  golden = await Goldens.open(dir);
  const raw = await golden.readRaw('golden/inputs.safetensors', 'input_ids');
  [B, T] = raw.shape as [number, number];
  ids = Array.from(raw.data as BigInt64Array, Number);
});

async function forward(m: LoadedLlm): Promise<Float32Array> {
  const graph = llamaForCausalLM(llmContext(m.weights), m.arch);
  const net = await compile([graph.logits], { weights: 'external', threads: 1 });
  const [logits] = await net.run(decoderFeeds(m.arch, { ids, batch: B, length: T }));
  assert.deepEqual(logits!.shape, [B, T, m.arch.vocab]);
  return logits!.data as Float32Array;
}

test('base logits and loss match transformers', async () => {
  const m = await loadLlm(join(dir, 'model'));
  await golden.expectClose(await forward(m), G, 'logits_base');
  const graph = llamaForCausalLM(llmContext(m.weights), m.arch);
  const { loss } = causalLmLoss(graph.logits);
  const net = await compile([loss], { threads: 1 });
  const [l] = await net.run({ ...decoderFeeds(m.arch, { ids, batch: B, length: T }), [LABELS_INPUT]: { data: shiftedLabels(ids, B, T), shape: [B, T] } });
  await golden.expectClose(l!.data as Float32Array, G, 'loss_base');
});

test('the PEFT adapter merged by weight gives peft merge_and_unload logits; weight 0 gives the base back', async () => {
  const adapter = await loadPeftAdapter(join(dir, 'lora'));
  const m = await loadLlm(join(dir, 'model'));
  await mergeAdapters(m.weights, [{ adapter, weight: 1 }]);
  await golden.expectClose(await forward(m), G, 'logits_lora');
  const m0 = await loadLlm(join(dir, 'model'));
  await mergeAdapters(m0.weights, [{ adapter, weight: 0 }]);
  await golden.expectClose(await forward(m0), G, 'logits_base');
});

async function trainSetup(checkpointLayers: boolean) {
  const m = await loadLlm(join(dir, 'model'));
  const network = LlmLoraNetwork.fromAdapter(await loadPeftAdapter(join(dir, 'lora')));
  const graph = llamaForCausalLM(llmContext(m.weights, { adapter: network.hook(0, true), training: true }), m.arch, { checkpointLayers });
  const { loss } = causalLmLoss(graph.logits);
  const step = await compileTrainStep({ loss, params: network.paramTensors(), session: { weights: 'external', threads: 1 } });
  const feeds = { ...decoderFeeds(m.arch, { ids, batch: B, length: T }), [LABELS_INPUT]: { data: shiftedLabels(ids, B, T), shape: [B, T] } };
  return { network, step, feeds };
}

for (const ckpt of [false, true]) {
  test(`LoRA loss and gradients match peft${ckpt ? ' (each decoder layer checkpointed)' : ''}`, async () => {
    const { network, step, feeds } = await trainSetup(ckpt);
    const r = await step.run(feeds);
    await golden.expectClose(new Float32Array([r.loss]), G, 'loss_lora');
    const keys = golden.manifest.tensors.filter((t) => t.file === G && t.key.startsWith('grad/')).map((t) => t.key.slice(5));
    assert.equal(keys.length, network.params().size, 'one golden gradient per LoRA parameter');
    for (const k of keys) {
      const mine = r.grads.get(k);
      assert.ok(mine, `no gradient for ${k}`);
      await golden.expectClose(mine, G, `grad/${k}`);
    }
  });
}

test('3 AdamW steps match torch (losses and parameters)', async () => {
  const { network, step, feeds } = await trainSetup(false);
  const params = network.params();
  const opt = new AdamW([{ name: 'lora', params, lr: 1e-3 }], { weightDecay: 1e-2 });
  const losses: number[] = [];
  let r = await step.run(feeds);
  for (let k = 0; k < 3; k++) {
    opt.step(r.grads);
    r = await step.run(feeds);
    losses.push(r.loss);
  }
  await golden.expectClose(new Float32Array(losses), G, 'adamw_losses');
  for (const [k, v] of params) await golden.expectClose(v, G, `after_adamw/${k}`);
});
