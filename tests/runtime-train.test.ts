import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { compile } from '../engine/runtime/session.ts';
import { compileTrainStep } from '../engine/runtime/train-step.ts';
import { LossScaler } from '../engine/runtime/precision.ts';
import { lcg } from './autodiff-gradcheck.ts';

process.env['LORA_SCRIPTS_QUIET'] = '1';

/** Plain Adam over named buffers, in place (engine/optim is the real one; this keeps the test self-contained). */
function adam(params: g.Tensor[], lr: number) {
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  let t = 0;
  return (grads: Map<string, Float32Array>) => {
    t++;
    for (const p of params) {
      const w = p.value as Float32Array;
      const d = grads.get(p.name!)!;
      const mi = m.get(p.name!) ?? new Float32Array(w.length);
      const vi = v.get(p.name!) ?? new Float32Array(w.length);
      m.set(p.name!, mi);
      v.set(p.name!, vi);
      for (let i = 0; i < w.length; i++) {
        mi[i] = 0.9 * mi[i]! + 0.1 * d[i]!;
        vi[i] = 0.999 * vi[i]! + 0.001 * d[i]! * d[i]!;
        w[i] = w[i]! - (lr * (mi[i]! / (1 - 0.9 ** t))) / (Math.sqrt(vi[i]! / (1 - 0.999 ** t)) + 1e-8);
      }
    }
  };
}

function init(name: string, shape: number[], fanIn: number, r: () => number) {
  const n = shape.reduce((a, b) => a * b, 1);
  const s = Math.sqrt(3 / fanIn);
  return g.param(name, shape, Float32Array.from({ length: n }, () => (r() * 2 - 1) * s));
}

test('an MLP learns two concentric rings to cross-entropy < 0.1 and accuracy > 95%', async () => {
  const r = lcg(3);
  const N = 256;
  const xs = new Float32Array(N * 2);
  const ys = new Float32Array(N * 2);
  for (let i = 0; i < N; i++) {
    const cls = i % 2;
    const rad = (cls ? 2 : 1) + (r() - 0.5) * 0.4;
    const a = r() * 2 * Math.PI;
    xs[2 * i] = rad * Math.cos(a);
    xs[2 * i + 1] = rad * Math.sin(a);
    ys[2 * i + cls] = 1;
  }
  const x = g.input('x', 'float32', ['B', 2]);
  const y = g.input('y', 'float32', ['B', 2]);
  const ps = [init('w1', [32, 2], 2, r), init('b1', [32], 32, r), init('w2', [32, 32], 32, r), init('b2', [32], 32, r), init('w3', [2, 32], 32, r), init('b3', [2], 32, r)];
  const [w1, b1, w2, b2, w3, b3] = ps as [g.Tensor, g.Tensor, g.Tensor, g.Tensor, g.Tensor, g.Tensor];
  const logits = g.linear(g.tanh(g.linear(g.tanh(g.linear(x, w1, b1)), w2, b2)), w3, b3);
  const loss = g.crossEntropy(logits, y);
  const step = await compileTrainStep({ loss, params: ps, extraOutputs: [logits] });
  const opt = adam(ps, 0.02);
  const feeds = { x: { data: xs, shape: [N, 2] }, y: { data: ys, shape: [N, 2] } };
  let first = 0;
  let last = { loss: 0, extras: [] as g.AnyTypedArray[] };
  for (let i = 0; i < 300; i++) {
    const res = await step.run(feeds);
    if (i === 0) first = res.loss;
    last = { loss: res.loss, extras: res.extras.map((e) => e.data) };
    opt(res.grads);
  }
  const lg = last.extras[0] as Float32Array;
  let correct = 0;
  for (let i = 0; i < N; i++) if ((lg[2 * i + 1]! > lg[2 * i]! ? 1 : 0) === i % 2) correct++;
  assert.ok(first > 0.5, `initial loss ${first}`);
  assert.ok(last.loss < 0.1, `final loss ${last.loss}`);
  assert.ok(correct / N > 0.95, `accuracy ${correct / N}`);
});

test('a small conv net (conv, group_norm, silu, pooling) learns bar orientation to cross-entropy < 0.05', async () => {
  const r = lcg(5);
  const N = 64, S = 8;
  const imgs = new Float32Array(N * S * S);
  const ys = new Float32Array(N * 2);
  for (let i = 0; i < N; i++) {
    const vertical = i % 2;
    const at = Math.floor(r() * S);
    for (let a = 0; a < S; a++) for (let b = 0; b < S; b++) imgs[i * S * S + a * S + b] = (vertical ? b : a) === at ? 1 : (r() - 0.5) * 0.3;
    ys[2 * i + vertical] = 1;
  }
  const x = g.input('img', 'float32', ['B', 1, S, S]);
  const y = g.input('y', 'float32', ['B', 2]);
  const ps = [init('c1', [8, 1, 3, 3], 9, r), init('c1b', [8], 9, r), g.param('gn.w', [8], new Float32Array(8).fill(1)), g.param('gn.b', [8], new Float32Array(8)),
    init('c2', [8, 8, 3, 3], 72, r), init('fc', [2, 8], 8, r)];
  const [c1, c1b, gw, gb, c2, fc] = ps as g.Tensor[];
  let h = g.conv2d(x, c1!, c1b!, { padding: 1 });
  h = g.silu(g.groupNorm(h, 4, gw, gb));
  h = g.conv2d(h, c2!, undefined, { padding: 1, stride: 2 });
  const logits = g.linear(g.mean(g.abs(h), [2, 3]), fc!);
  const step = await compileTrainStep({ loss: g.crossEntropy(logits, y), params: ps });
  const opt = adam(ps, 0.03);
  let loss = Infinity;
  let first = 0;
  for (let i = 0; i < 150 && loss > 0.02; i++) {
    const res = await step.run({ img: { data: imgs, shape: [N, 1, S, S] }, y: { data: ys, shape: [N, 2] } });
    if (i === 0) first = res.loss;
    loss = res.loss;
    opt(res.grads);
  }
  assert.ok(first > 0.6, `initial loss ${first}`);
  assert.ok(loss < 0.05, `final loss ${loss}`);
});

test('compileTrainStep gives the same loss and gradients as grad() run by hand; frozen params get none', async () => {
  const r = lcg(9);
  const x = g.input('x', 'float32', [3, 4]);
  const frozen = init('frozen', [4, 4], 4, r);
  const a = init('lora_down', [2, 4], 4, r);
  const b = init('lora_up', [4, 2], 2, r);
  const h = g.add(g.linear(x, frozen), g.mul(g.linear(g.linear(x, a), b), 0.5));
  const loss = g.mean(g.mul(h, h));
  const xd = Float32Array.from({ length: 12 }, () => r() - 0.5);
  const step = await compileTrainStep({ inputs: [x], loss, params: [a, b] });
  const res = await step.run({ x: xd });
  await assert.rejects(compileTrainStep({ inputs: [g.input('unused', 'float32', [1])], loss, params: [a] }), /not used by the loss/);
  assert.deepEqual([...res.grads.keys()], ['lora_down', 'lora_up']);
  const ref = await (await compile([loss, ...grad(loss, [a, b])])).run({ x: xd });
  assert.equal(res.loss, ref[0]!.data[0]);
  assert.deepEqual(res.grads.get('lora_down'), ref[1]!.data);
  assert.deepEqual(res.grads.get('lora_up'), ref[2]!.data);
  assert.equal(res.finite, true);
});

test('baking the frozen weights (external) leaves loss and gradients unchanged; trainable ones stay fed', async () => {
  const r = lcg(13);
  const x = g.input('x', 'float32', [2, 3, 6, 6]);
  const frozen = init('frozen.conv', [4, 3, 3, 3], 27, r);
  const down = init('lora.down', [2, 4, 1, 1], 4, r);
  const up = init('lora.up', [4, 2, 1, 1], 2, r);
  const h = g.conv2d(x, frozen, undefined, { padding: 1 });
  const y = g.add(h, g.conv2d(g.conv2d(h, down), up));
  const loss = g.mean(g.mul(y, y));
  const xd = Float32Array.from({ length: 216 }, () => r() - 0.5);
  const fed = await (await compileTrainStep({ loss, params: [down, up] })).run({ x: xd });
  const bakedStep = await compileTrainStep({ loss, params: [down, up], session: { weights: 'external' } });
  const baked = await bakedStep.run({ x: xd });
  assert.ok(Math.abs(baked.loss - fed.loss) < 1e-6 * Math.abs(fed.loss));
  for (const n of ['lora.down', 'lora.up']) {
    const a = baked.grads.get(n)!;
    const b = fed.grads.get(n)!;
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-5 * (1 + Math.abs(b[i]!)), `${n}[${i}]`);
  }
  // The trainable buffers are still read at each run: zeroing lora.up zeroes the gradient of lora.down.
  (up.value as Float32Array).fill(0);
  const after = await bakedStep.run({ x: xd });
  assert.ok(after.grads.get('lora.down')!.every((v) => v === 0));
});

test('float16 step with float32 master weights matches float32 within float16 precision; CPU falls back by default', async () => {
  const r = lcg(11);
  const x = g.input('x', 'float32', [8, 16]);
  const w1 = init('w1', [16, 16], 16, r);
  const w2 = init('w2', [1, 16], 16, r);
  const loss = g.mean(g.square(g.linear(g.tanh(g.linear(x, w1)), w2)));
  const xd = Float32Array.from({ length: 128 }, () => r() - 0.5);
  const f32 = await (await compileTrainStep({ loss, params: [w1, w2] })).run({ x: xd });
  const fallback = await compileTrainStep({ loss, params: [w1, w2], precision: 'float16' });
  assert.equal(fallback.scaler, undefined, 'CPU runs float32');
  const half = await compileTrainStep({ loss, params: [w1, w2], precision: 'float16', forceFloat16: true });
  assert.ok(half.scaler);
  const h = await half.run({ x: xd });
  assert.ok(h.finite);
  assert.ok(Math.abs(h.loss - f32.loss) < 2e-3 * Math.abs(f32.loss) + 1e-4, `loss ${h.loss} vs ${f32.loss}`);
  for (const name of ['w1', 'w2']) {
    const a = h.grads.get(name)!;
    const b = f32.grads.get(name)!;
    const scale = Math.max(...Array.from(b, Math.abs));
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) < 1e-2 * scale, `${name}[${i}] ${a[i]} vs ${b[i]}`);
  }
});

test('LossScaler halves on overflow, skips the step, and grows after a run of clean steps', () => {
  const s = new LossScaler(1024, 3, 4096);
  assert.equal(s.update(false), false);
  assert.equal(s.scale, 512);
  for (let i = 0; i < 3; i++) assert.equal(s.update(true), true);
  assert.equal(s.scale, 1024);
  for (let i = 0; i < 9; i++) s.update(true);
  assert.equal(s.scale, 4096);
});
