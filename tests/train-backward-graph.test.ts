// The LoRA training step's backward graph, inspected as built: frozen weights get no gradient work (only
// input gradients flow through frozen layers), each LoRA weight gets exactly one weight-gradient product,
// and the forward keeps no more activations for the backward than the gradient rules need.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { buildLossGraph, transposedConvsAsConvs } from '../engine/train/step-graph.ts';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { topoSort, type Tensor } from '../engine/graph/tensor.ts';

const dir = join(fixturesDir, 'sd-tiny');
let model: StableDiffusion;

before(async () => {
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
});

/**
 * The loss, the gradients of the LoRA weights and of `extra(loss)` (the step's rewrite applied) and the nodes
 * that carry the loss gradient.
 */
function backward(network: LoraNetwork, extra: (loss: Tensor) => Tensor[] = () => []) {
  // The smallest latent every level can halve twice over (the shapes matter, not the size).
  const h = 2 ** model.arch.unet.channelMult.length;
  const { loss } = buildLossGraph(model, network, { batch: 1, height: h, width: h, tokens: 77 }, { trainTextEncoder: false });
  const seed = g.input('seed', 'float32', []);
  const wanted = [...network.paramTensors(['unet']), ...extra(loss)];
  const outs = transposedConvsAsConvs([loss, ...grad(loss, wanted, { seed })]);
  // Descendants of the seed: every node of the backward pass that depends on dL (not weight re-layouts).
  const carries = new Set<Tensor>([seed]);
  for (const t of topoSort(outs)) if (t.inputs.some((i) => carries.has(i))) carries.add(t);
  return { loss, outs, carries };
}

const key = (s: readonly unknown[]) => s.join('x');

for (const targets of ['attention_mlp', 'attention_mlp_conv'] as const) {
  test(`${targets}: frozen weights are never differentiated; one weight-gradient product per LoRA weight`, () => {
    const network = LoraNetwork.create(model.weights, { rank: 4, alpha: 4, targets, textEncoder: false, seed: 0 });
    const lora = network.paramTensors(['unet']);
    const { outs, carries } = backward(network);
    const loraSet = new Set(lora);
    const frozen = topoSort(outs).filter((t) => t.op === 'param' && !loraSet.has(t) && t.rank >= 2);
    assert.ok(frozen.length > 50, `the UNet's frozen weights are in the graph (${frozen.length})`);
    const loraShapes = new Set(lora.flatMap((p) => [key(p.shape), key([...p.shape].reverse())]));
    const frozenOnly = new Set(frozen.flatMap((p) => [key(p.shape), key([...p.shape].reverse())]).filter((k) => !loraShapes.has(k)));
    const weightShaped = [...carries].filter((t) => frozenOnly.has(key(t.shape)));
    assert.deepEqual(weightShaped.map(String), [], 'no frozen-weight-shaped value depends on the loss gradient');
    // A weight gradient is a weight-shaped product: a rank-2 GEMM for a Linear (batch and tokens folded in;
    // a 2-D [batch, features] input's own gradient is not weight-shaped), a [batch, groups, out, in·taps]
    // product summed over the batch for a conv (convWeightGrad).
    const linearGemms = [...carries].filter((t) => t.op === 'matmul' && t.rank === 2 && loraShapes.has(key(t.shape)));
    const convGemms = [...carries].filter((t) => t.op === 'matmul' && t.rank === 4 && t.shape[1] === 1 && t.inputs[1]!.op === 'transpose' && t.inputs[1]!.inputs[0]!.op === 'reshape');
    const linearLora = lora.filter((p) => p.rank === 2).length;
    const convLora = lora.filter((p) => p.rank === 4).length;
    assert.equal(linearGemms.length, linearLora, 'one GEMM per Linear LoRA weight');
    assert.equal(convGemms.length, convLora, 'one patch GEMM per conv LoRA weight');
    if (targets === 'attention_mlp_conv') assert.ok(convLora > 0);
  });
}

test('the frozen-weight check catches a differentiated frozen weight', () => {
  // The same detector, with one frozen 3×3 conv kernel and one frozen Linear asked for: both show up.
  const network = LoraNetwork.create(model.weights, { rank: 4, alpha: 4, targets: 'attention_mlp', textEncoder: false, seed: 0 });
  let conv: Tensor | undefined;
  let linear: Tensor | undefined;
  const { carries } = backward(network, (loss) => {
    const params = topoSort([loss]).filter((t) => t.op === 'param');
    conv = params.find((p) => p.rank === 4 && p.shape[2] === 3 && p.name!.includes('in_layers'));
    linear = params.find((p) => p.rank === 2 && p.name!.includes('emb_layers'));
    assert.ok(conv && linear);
    return [conv, linear];
  });
  const [c, l] = [conv, linear];
  assert.ok(c && l);
  assert.ok([...carries].some((t) => key(t.shape) === key(c.shape)), 'conv weight gradient found');
  assert.ok([...carries].some((t) => t.op === 'matmul' && t.rank === 2 && (key(t.shape) === key(l.shape) || key(t.shape) === key([...l.shape].reverse()))));
});

test('GELU, SiLU and the norms keep only their input for the backward pass', () => {
  const network = LoraNetwork.create(model.weights, { rank: 4, alpha: 4, targets: 'attention_mlp', textEncoder: false, seed: 0 });
  const { loss, carries, outs } = backward(network);
  const forward = new Set(topoSort([loss]));
  const kept = new Set<Tensor>();
  for (const t of topoSort(outs)) if (carries.has(t)) for (const i of t.inputs) if (forward.has(i)) kept.add(i);
  const count = (op: string) => [...forward].filter((t) => t.op === op).length;
  const keptOf = (op: string) => [...kept].filter((t) => t.op === op).length;
  assert.ok(count('gelu') > 0 && count('silu') > 0 && count('normalize') > 0);
  // SiLU's and the normalisations' outputs are rebuilt from their inputs; GELU's output is kept only because
  // GEGLU multiplies by it (the other factor's gradient), never for its own derivative.
  assert.equal(keptOf('silu'), 0, 'SiLU outputs kept');
  assert.equal(keptOf('normalize'), 0, 'GroupNorm outputs kept');
  assert.equal(keptOf('sigmoid'), 0, 'sigmoid intermediates kept');
  assert.equal(keptOf('erf'), 0, 'erf intermediates kept');
  assert.equal(keptOf('gelu'), count('gelu'));
});

/** Whether `b` is among the ancestors of `a` (or is `a`). */
const dependsOn = (a: Tensor, b: Tensor) => topoSort([a]).includes(b);

test('each LoRA weight gradient is due before the gradient flows on past its layer', () => {
  const x = g.input('x', 'float32', [2, 6, 8]);
  const frozen = g.param('w', [8, 8], new Float32Array(64).fill(0.1));
  const down = g.param('down', [2, 8], new Float32Array(16).fill(0.2));
  const up = g.param('up', [8, 2], new Float32Array(16).fill(0.3));
  const y = g.add(g.linear(x, frozen), g.linear(g.linear(x, down), up));
  const [dDown, dUp, dx] = grad(g.sum(g.mul(y, y)), [down, up, x]);
  // dx is the gradient that continues to earlier layers: it can only be computed once both weight-gradient
  // products are (each weight's gradient is its product, laid out as the weight).
  const product = (d: Tensor) => topoSort([d]).filter((t) => t.op === 'matmul').at(-1)!;
  assert.ok(dependsOn(dx!, product(dUp!)) && dependsOn(dx!, product(dDown!)), 'dx waits for dUp and dDown');
  assert.ok(!dependsOn(dUp!, dx!) && !dependsOn(dDown!, dx!));
});

test('chunked attention backward: each query chunk starts after the previous one has finished', async () => {
  const { MHA_BACKWARD_CHUNK_ELEMENTS } = await import('../engine/autodiff/rules.ts');
  const T = Math.ceil((2 * MHA_BACKWARD_CHUNK_ELEMENTS) / 1024) + 8;
  const q = g.input('q', 'float32', [1, T, 2]);
  const kv = g.input('kv', 'float32', [1, 1024, 2]);
  const o = g.multiHeadAttention(q, kv, kv, 1);
  const [dq] = grad(g.sum(g.mul(o, o)), [q, kv]);
  const softmaxes = topoSort([dq!]).filter((t) => t.op === 'softmax').sort((a, b) => a.id - b.id);
  assert.ok(softmaxes.length >= 3, `${softmaxes.length} chunks`);
  // The probabilities of chunk i+1 depend on chunk i's own probabilities (through its finished dQ, dK, dV).
  for (let i = 1; i < softmaxes.length; i++) assert.ok(dependsOn(softmaxes[i]!, softmaxes[i - 1]!), `chunk ${i} waits for chunk ${i - 1}`);
});
