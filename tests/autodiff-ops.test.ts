import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { evaluate } from '../engine/runtime/session.ts';
import { gradCheck } from './autodiff-gradcheck.ts';

process.env['LORA_SCRIPTS_QUIET'] = '1';

// Inputs kept away from kinks (0 for abs/relu, ties for max) and from domain edges (log, sqrt near 0).
const positive = (_i: number, n: number, r: () => number) => Array.from({ length: n }, () => 0.5 + r());
const awayFromZero = (_i: number, n: number, r: () => number) => Array.from({ length: n }, () => (r() < 0.5 ? -1 : 1) * (0.3 + r()));
const distinct = (i: number, n: number, r: () => number) => Array.from({ length: n }, (_, k) => ((k * 7919 + i * 31) % (n * 3)) / n - 1 + r() * 1e-3);

// float64: ORT CPU has float64 kernels for all of these, so finite differences are checked to ~1e-6 relative.
const f64: [string, number[][], (p: g.Tensor[]) => g.Tensor, Parameters<typeof gradCheck>[2]?][] = [
  ['add (broadcast)', [[2, 3], [3]], ([a, b]) => g.add(a!, b!)],
  ['sub (broadcast both)', [[2, 1], [1, 3]], ([a, b]) => g.sub(a!, b!)],
  ['mul (broadcast)', [[2, 3, 4], [3, 1]], ([a, b]) => g.mul(a!, b!)],
  ['div', [[2, 3], [2, 3]], ([a, b]) => g.div(a!, b!), { init: (i, n, r) => (i === 1 ? positive(i, n, r) : awayFromZero(i, n, r)) }],
  ['pow (tensor exponent)', [[2, 3], [2, 3]], ([a, b]) => g.pow(a!, b!), { init: positive }],
  ['pow (constant exponent)', [[5]], ([a]) => g.pow(a!, 2.5), { init: positive }],
  ['maximum / minimum', [[3, 4], [4]], ([a, b]) => g.add(g.maximum(a!, b!), g.mul(g.minimum(a!, b!), 3)), { init: distinct }],
  ['exp', [[6]], ([a]) => g.exp(a!)],
  ['log', [[6]], ([a]) => g.log(a!), { init: positive }],
  ['sqrt', [[6]], ([a]) => g.sqrt(a!), { init: positive }],
  ['rsqrt', [[6]], ([a]) => g.rsqrt(a!), { init: positive }],
  ['reciprocal', [[6]], ([a]) => g.reciprocal(a!), { init: awayFromZero }],
  ['tanh', [[6]], ([a]) => g.tanh(a!)],
  ['sigmoid', [[6]], ([a]) => g.sigmoid(a!)],
  ['neg', [[6]], ([a]) => g.neg(a!)],
  ['sin / cos', [[6]], ([a]) => g.add(g.sin(a!), g.mul(g.cos(a!), 2))],
  ['clamp', [[8]], ([a]) => g.clamp(a!, -0.5, 0.5), { init: (_i, n, r) => Array.from({ length: n }, (_, k) => (k % 2 ? 0.3 : 0.9) * (k % 4 < 2 ? 1 : -1) + r() * 0.05) }],
  ['abs', [[6]], ([a]) => g.abs(a!), { init: awayFromZero }],
  ['relu', [[6]], ([a]) => g.relu(a!), { init: awayFromZero }],
  ['where', [[2, 3], [3]], ([a, b]) => g.where(g.less(a!, 0), a!, b!), { init: awayFromZero }],
  ['matmul (batched)', [[2, 3, 4], [2, 4, 5]], ([a, b]) => g.matmul(a!, b!)],
  ['matmul (shared weight)', [[2, 3, 4], [4, 5]], ([a, b]) => g.matmul(a!, b!)],
  ['matmul (broadcast batch)', [[2, 1, 3, 4], [3, 4, 2]], ([a, b]) => g.matmul(a!, b!)],
  ['linear', [[2, 3, 4], [5, 4], [5]], ([x, w, b]) => g.linear(x!, w!, b!)],
  ['sum / mean', [[2, 3, 4]], ([a]) => g.add(g.sum(a!, [0, 2], true), g.mul(g.mean(a!, -1, true), 2))],
  ['max reduction', [[3, 4]], ([a]) => g.max(a!, 1), { init: distinct }],
  ['reshape / transpose', [[2, 3, 4]], ([a]) => g.transpose(g.reshape(a!, [4, 6]), [1, 0])],
  ['concat / split', [[2, 3], [2, 2]], ([a, b]) => g.mul(g.concat([b!, a!], 1), g.concat(g.split(g.concat([a!, b!], 1), [2, 3], 1).reverse(), 1))],
  ['slice (offset, strided)', [[3, 7]], ([a]) => g.add(g.slice(a!, 1, 1, 6, 2), g.slice(a!, 1, 4))],
  ['pad', [[2, 3]], ([a]) => g.pad(a!, [1, 0, 0, 2])],
  ['flip (two axes)', [[2, 3, 4]], ([a]) => g.mul(g.flip(a!, [0, 2]), a!)],
  ['after (an ordering edge only)', [[2, 3], [2]], ([a, b]) => g.mul(g.after(a!, g.reshape(g.slice(b!, 0, -1), [])), a!)],
  ['expand', [[3, 1]], ([a]) => g.expand(a!, [2, 3, 4])],
  ['gather (repeated rows)', [[5, 3]], ([t]) => g.embedding(t!, g.constant([4, 0, 4, 2], [2, 2], 'int64'))],
  ['layer_norm (fused affine)', [[2, 3, 5], [5], [5]], ([x, w, b]) => g.layerNorm(x!, w!, b!, 1e-5)],
  ['layer_norm (scale only)', [[2, 3, 5], [5]], ([x, w]) => g.layerNorm(x!, w!, undefined, 1e-5)],
  ['normalize (two axes)', [[2, 3, 5]], ([x]) => g.layerNorm(x!, undefined, undefined, 1e-5, 2)],
  ['group_norm', [[2, 4, 3, 2], [4], [4]], ([x, w, b]) => g.groupNorm(x!, 2, w!, b!, 1e-5)],
  ['rms_norm', [[2, 3, 5], [5]], ([x, w]) => g.rmsNorm(x!, w!, 1e-6)],
  ['softmax', [[3, 5]], ([a]) => g.softmax(a!, -1)],
  ['log_softmax / cross-entropy', [[3, 5], [3, 5]], ([a, t]) => g.crossEntropy(a!, g.softmax(t!))],
  ['cross-entropy with ids (ignore_index)', [[2, 3, 5]], ([a]) => g.crossEntropyWithIds(a!, g.constant([4, 0, -100, 2, 2, 1], [2, 3], 'int64'))],
  ['attention (causal)', [[1, 2, 4, 3], [1, 2, 4, 3], [1, 2, 4, 3]], ([q, k, v]) => g.attention(q!, k!, v!, { causal: true })],
  ['attention (causal, query chunks of 3, cross lengths)', [[1, 7, 3], [1, 9, 3], [1, 9, 2]], ([q, k, v]) => g.attention(q!, k!, v!, { causal: true, queryChunk: 3 })],
  ['multi-head attention (causal)', [[2, 4, 6], [2, 4, 6], [2, 4, 4]], ([q, k, v]) => g.multiHeadAttention(q!, k!, v!, 2, { causal: true })],
  ['multi-head attention (cross, 3 heads)', [[1, 3, 6], [1, 5, 6], [1, 5, 3]], ([q, k, v]) => g.multiHeadAttention(q!, k!, v!, 3)],
  // T * S above MHA_BACKWARD_CHUNK_ELEMENTS: the backward walks query-row chunks (causal offsets per chunk).
  ['multi-head attention (chunked backward, causal, T != S)', [[1, 1030, 2], [1, 1040, 2], [1, 1040, 2]], ([q, k, v]) => g.multiHeadAttention(q!, k!, v!, 1, { causal: true }), { maxElements: 6 }],
  ['attention (additive mask)', [[1, 3, 2], [1, 4, 2], [1, 4, 2]], ([q, k, v]) => g.attention(q!, k!, v!, { mask: g.constant([0, -1e9, 0, 0], [4], 'float64') })],
  ['rotary', [[1, 3, 4]], ([x]) => {
    const { cos, sin } = g.ropeTables(3, 4, 10000, 'float64');
    return g.rotary(x!, cos, sin);
  }],
  ['gelu (tanh) / quick_gelu / silu', [[8]], ([a]) => g.add(g.add(g.gelu(a!, 'tanh'), g.quickGelu(a!)), g.silu(a!))],
];

for (const [name, shapes, f, opts] of f64) test(`grad ${name} (float64)`, () => gradCheck(shapes, f, { dtype: 'float64', ...opts }));

// float32: ORT CPU lacks float64 Conv, ConvTranspose, Resize and Erf. Conv, ConvTranspose and the nearest
// upsample are linear in each input, so central differences have no truncation error and h = 0.1 keeps
// rounding (about 6e-8 * sqrt(taps) * |y| / h per element) near 1e-5; erf is smooth with |f'''| <= 2.3,
// so h = 1e-2 gives truncation h^2/6 * 2.3 < 4e-5. Hence atol 1e-3 and rtol 1e-3.
const linearInit = { dtype: 'float32' as const, h: 0.1 };
const f32: [string, number[][], (p: g.Tensor[]) => g.Tensor, Parameters<typeof gradCheck>[2]?][] = [
  ['erf / gelu (exact)', [[8]], ([a]) => g.add(g.erf(a!), g.gelu(a!)), { dtype: 'float32', h: 1e-2 }],
  ['conv2d (padding 1, bias)', [[2, 3, 5, 5], [4, 3, 3, 3], [4]], ([x, w, b]) => g.conv2d(x!, w!, b!, { padding: 1 }), linearInit],
  ['conv2d (stride 2, asymmetric padding, odd size)', [[1, 2, 6, 7], [3, 2, 3, 3]], ([x, w]) => g.conv2d(x!, w!, undefined, { stride: 2, padding: [1, 0, 0, 1] }), linearInit],
  ['conv2d (groups 2, dilation 2)', [[1, 4, 7, 7], [6, 2, 3, 3]], ([x, w]) => g.conv2d(x!, w!, undefined, { groups: 2, dilation: 2, padding: 2 }), linearInit],
  ['conv2d (circular)', [[1, 2, 4, 5], [2, 2, 3, 3]], ([x, w]) => g.conv2d(x!, w!, undefined, { padding: 1, paddingMode: 'circular' }), linearInit],
  ['conv2d (1x1)', [[2, 3, 4, 4], [5, 3, 1, 1]], ([x, w]) => g.conv2d(x!, w!), linearInit],
  ['conv_transpose2d (input)', [[1, 2, 3, 3]], ([x]) => g.convTranspose2d(x!, g.constant(Float32Array.from({ length: 2 * 3 * 9 }, (_, i) => Math.sin(i)), [2, 3, 3, 3]), { stride: 2, pads: [1, 1, 1, 1] }), linearInit],
  // The forward here is ORT's fused MultiHeadAttention kernel, so this checks our rule against its semantics.
  ['multi-head attention (fused kernel)', [[1, 4, 6], [1, 4, 6], [1, 4, 6]], ([q, k, v]) => g.multiHeadAttention(q!, k!, v!, 2, { causal: true }), { dtype: 'float32', h: 1e-2 }],
  ['upsample_nearest', [[1, 2, 3, 2]], ([x]) => g.upsampleNearest(x!, 2), linearInit],
  ['cast float32 -> float64', [[5]], ([x]) => g.mul(g.cast(x!, 'float64'), 3), linearInit],
];

for (const [name, shapes, f, opts] of f32) test(`grad ${name} (float32)`, () => gradCheck(shapes, f, opts));

test('grad dropout: the gradient passes exactly where the forward kept, scaled by 1/(1-p)', async () => {
  const p = g.param('x', [4000], new Float32Array(4000).fill(1));
  const y = g.dropout(p, 0.3, true);
  const R = g.constant(Float32Array.from({ length: 4000 }, (_, i) => (i % 7) - 3), [4000]);
  const [dx] = grad(g.sum(g.mul(y, R)), [p]);
  const [yv, dv] = await evaluate([y, dx!]);
  const kept = yv!.data as Float32Array;
  const d = dv!.data as Float32Array;
  let zeros = 0;
  for (let i = 0; i < 4000; i++) {
    const expected = kept[i] === 0 ? 0 : ((i % 7) - 3) / 0.7;
    assert.ok(Math.abs(d[i]! - expected) < 1e-5, `element ${i}`);
    if (kept[i] === 0) zeros++;
  }
  assert.ok(zeros > 1000 && zeros < 1400, `dropped ${zeros}`);
});

test('grad builds only the paths to the requested parameters', () => {
  const x = g.input('x', 'float32', [2, 4]);
  const frozen = g.param('frozen', [4, 4], new Float32Array(16));
  const lora = g.param('lora', [4, 4], new Float32Array(16));
  const h = g.matmul(g.tanh(g.matmul(x, lora)), frozen);
  const loss = g.sum(g.matmul(h, frozen));
  const [dl] = grad(loss, [lora]);
  // The backward graph may read the frozen weight (activation gradients) but never computes its gradient:
  // no node multiplies the transposed activations by the upstream gradient into a [4, 4] weight-shaped product
  // except the one for `lora`.
  const ops = g.topoSort([dl!]);
  const weightGrads = ops.filter((t) => t.op === 'matmul' && t.shape.join() === '4,4');
  assert.equal(weightGrads.length, 1);
  assert.ok(ops.includes(frozen));
  const [dboth] = grad(loss, [frozen]);
  assert.ok(g.topoSort([dboth!]).some((t) => t.op === 'matmul' && t.shape.join() === '4,4'));
});

test('the chunked attention backward is used at that size', async () => {
  const { MHA_BACKWARD_CHUNK_ELEMENTS } = await import('../engine/autodiff/rules.ts');
  assert.ok(1030 * 1040 > MHA_BACKWARD_CHUNK_ELEMENTS && 1030 * 1040 < 2 * MHA_BACKWARD_CHUNK_ELEMENTS);
  const q = g.param('q', [1, 1030, 2], new Float32Array(2060));
  const kv = g.param('kv', [1, 1040, 2], new Float32Array(2080));
  const [dq] = grad(g.sum(g.multiHeadAttention(q, kv, kv, 1, { causal: true })), [q]);
  assert.equal(g.topoSort([dq!]).filter((t) => t.op === 'softmax').length, 2);
});

test('grad works w.r.t. graph inputs and intermediate tensors too', async () => {
  const x = g.input('x', 'float32', [3]);
  const h = g.exp(x);
  const loss = g.sum(g.mul(h, h));
  const [dx, dh] = grad(loss, [x, h]);
  const [a, b] = await evaluate([dx!, dh!], { x: new Float32Array([0, 0.5, 1]) });
  [0, 0.5, 1].forEach((v, i) => {
    assert.ok(Math.abs((b!.data as Float32Array)[i]! - 2 * Math.exp(v)) < 1e-5, 'dL/dh = 2h');
    assert.ok(Math.abs((a!.data as Float32Array)[i]! - 2 * Math.exp(2 * v)) < 1e-4, 'dL/dx = 2h^2');
  });
});

test('every primitive that lowers to ONNX has a gradient rule', async () => {
  const { LOWERERS } = await import('../engine/onnx/lower.ts');
  const { VJP_RULES } = await import('../engine/autodiff/rules.ts');
  const missing = Object.keys(LOWERERS).filter((op) => !(op in VJP_RULES));
  assert.deepEqual(missing, []);
});
