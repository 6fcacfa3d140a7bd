import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as g from '../engine/graph/index.ts';
import { compile, evaluate } from '../engine/runtime/session.ts';
import { lower } from '../engine/onnx/lower.ts';
import { UserError } from '../engine/util/errors.ts';

process.env['LORA_SCRIPTS_QUIET'] = '1';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}
const rand = (n: number, seed = 1) => {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2);
};

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol = 1e-5, what = '') {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    assert.ok(Math.abs(a - e) <= tol * (1 + Math.abs(e)), `${what}[${i}]: ${a} vs ${e}`);
  }
}

async function run1(t: g.Tensor, feeds: Record<string, Float32Array | { data: Float32Array | BigInt64Array; shape: number[] }> = {}) {
  const [r] = await evaluate([t], feeds);
  return r!;
}

test('elementwise ops and broadcasting match JS math', async () => {
  const xa = rand(6, 2);
  const x = g.constant(xa, [2, 3]);
  const row = g.constant([1, 2, 3], [3]);
  const cases: [g.Tensor, (v: number, i: number) => number][] = [
    [g.add(x, row), (v, i) => v + [1, 2, 3][i % 3]!],
    [g.mul(x, 3), (v) => v * 3],
    [g.div(1, g.add(g.abs(x), 1)), (v) => 1 / (Math.abs(v) + 1)],
    [g.exp(x), Math.exp],
    [g.log(g.add(g.abs(x), 0.5)), (v) => Math.log(Math.abs(v) + 0.5)],
    [g.rsqrt(g.add(g.abs(x), 0.5)), (v) => 1 / Math.sqrt(Math.abs(v) + 0.5)],
    [g.tanh(x), Math.tanh],
    [g.sigmoid(x), (v) => 1 / (1 + Math.exp(-v))],
    [g.neg(x), (v) => -v],
    [g.sin(x), Math.sin],
    [g.cos(x), Math.cos],
    [g.clamp(x, -0.2, 0.3), (v) => Math.min(Math.max(v, -0.2), 0.3)],
    [g.add(x, g.ones([2, 3])), (v) => v + 1],
    [g.pow(g.abs(x), 1.5), (v) => Math.abs(v) ** 1.5],
    [g.maximum(x, 0.1), (v) => Math.max(v, 0.1)],
    [g.minimum(x, 0.1), (v) => Math.min(v, 0.1)],
    [g.where(g.less(x, 0), 0, x), (v) => (v < 0 ? 0 : v)],
    [g.silu(x), (v) => v / (1 + Math.exp(-v))],
    [g.quickGelu(x), (v) => v / (1 + Math.exp(-1.702 * v))],
    [g.gelu(x, 'tanh'), (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3)))],
  ];
  const outs = await evaluate(cases.map((c) => c[0]));
  outs.forEach((o, k) => close(o.data as Float32Array, Array.from(xa, (v, i) => cases[k]![1](Math.fround(v), i)), 1e-5, `case ${k}`));
  // erf-based GELU against a known value: gelu(1) = 0.8413447...
  const [ge] = await evaluate([g.gelu(g.constant([1, -1], [2]))]);
  close(ge!.data as Float32Array, [0.8413447460685429, -0.15865525393145707], 1e-6, 'gelu');
});

test('matmul broadcasts batch dims and linear uses [out, in] weights', async () => {
  const a = g.constant(rand(2 * 3 * 4, 3), [2, 3, 4]);
  const b = g.constant(rand(4 * 5, 4), [4, 5]);
  const r = await run1(g.matmul(a, b));
  assert.deepEqual(r.shape, [2, 3, 5]);
  const A = a.value as Float32Array;
  const B = b.value as Float32Array;
  const exp: number[] = [];
  for (let n = 0; n < 2; n++)
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 5; j++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += A[n * 12 + i * 4 + k]! * B[k * 5 + j]!;
        exp.push(s);
      }
  close(r.data as Float32Array, exp, 1e-5, 'matmul');
  const w = g.param('w', [5, 4], rand(20, 5));
  const lin = await run1(g.linear(a, w));
  const viaT = await run1(g.matmul(a, g.transpose(g.constant(w.value!, [5, 4]), [1, 0])));
  close(lin.data as Float32Array, viaT.data as Float32Array, 1e-6, 'linear');
  assert.throws(() => g.linear(a, g.param('bad', [5, 3])), UserError);
});

type Nchw = [number, number, number, number];

function convRef(x: Float32Array, [N, C, H, W]: Nchw, w: Float32Array, [O, I, kh, kw]: Nchw, s: number, p: number, groups: number, circular = false) {
  const oh = Math.floor((H + 2 * p - kh) / s) + 1;
  const ow = Math.floor((W + 2 * p - kw) / s) + 1;
  const out = new Float64Array(N * O * oh * ow);
  const og = O / groups;
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++)
      for (let y = 0; y < oh; y++)
        for (let xx = 0; xx < ow; xx++) {
          let acc = 0;
          const gi = Math.floor(o / og);
          for (let i = 0; i < I; i++)
            for (let ky = 0; ky < kh; ky++)
              for (let kx = 0; kx < kw; kx++) {
                let iy = y * s + ky - p;
                let ix = xx * s + kx - p;
                if (circular) {
                  iy = (iy + H) % H;
                  ix = (ix + W) % W;
                } else if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                acc += x[((n * C + gi * I + i) * H + iy) * W + ix]! * w[((o * I + i) * kh + ky) * kw + kx]!;
              }
          out[((n * O + o) * oh + y) * ow + xx] = acc;
        }
  return out;
}

test('conv2d: stride, zero and circular padding, groups match a direct convolution', async () => {
  const xs: Nchw = [2, 4, 7, 6];
  const xd = rand(2 * 4 * 7 * 6, 7);
  const x = g.input('x', 'float32', xs);
  for (const [s, p, groups, circular] of [
    [1, 1, 1, false],
    [2, 1, 1, false],
    [1, 1, 2, false],
    [1, 1, 1, true],
    [2, 0, 4, false],
  ] as const) {
    const ws: Nchw = [4, 4 / groups, 3, 3];
    const wd = rand(ws.reduce((a, b) => a * b), 11 + s + p + groups);
    const w = g.param('w', ws, wd);
    const y = g.conv2d(x, w, undefined, { stride: s, padding: p, groups, paddingMode: circular ? 'circular' : 'zeros' });
    const r = await run1(y, { x: xd });
    close(r.data as Float32Array, convRef(xd, xs, wd, ws, s, p, groups, circular), 1e-5, `conv s${s} p${p} g${groups} c${circular}`);
    assert.deepEqual(r.shape, y.shape);
  }
});

test('group_norm, layer_norm and rms_norm match their definitions', async () => {
  const N = 2, C = 6, L = 5, G = 3;
  const xd = rand(N * C * L, 9);
  const x = g.input('x', 'float32', [N, C, L]);
  const gamma = g.param('gamma', [C], rand(C, 10));
  const beta = g.param('beta', [C], rand(C, 12));
  const gn = await run1(g.groupNorm(x, G, gamma, beta, 1e-5), { x: xd });
  const exp: number[] = new Array(N * C * L);
  for (let n = 0; n < N; n++)
    for (let gi = 0; gi < G; gi++) {
      const idx: number[] = [];
      for (let c = (gi * C) / G; c < ((gi + 1) * C) / G; c++) for (let l = 0; l < L; l++) idx.push((n * C + c) * L + l);
      const m = idx.reduce((a, i) => a + xd[i]!, 0) / idx.length;
      const v = idx.reduce((a, i) => a + (xd[i]! - m) ** 2, 0) / idx.length;
      for (const i of idx) {
        const c = Math.floor(i / L) % C;
        exp[i] = ((xd[i]! - m) / Math.sqrt(v + 1e-5)) * (gamma.value as Float32Array)[c]! + (beta.value as Float32Array)[c]!;
      }
    }
  close(gn.data as Float32Array, exp, 1e-5, 'group_norm');
  const ln = await run1(g.layerNorm(x, g.param('lg', [L], rand(L, 3)), undefined, 1e-5), { x: xd });
  const rms = await run1(g.rmsNorm(x, undefined, 1e-6), { x: xd });
  for (let r = 0; r < N * C; r++) {
    const row = Array.from(xd.subarray(r * L, r * L + L));
    const m = row.reduce((a, b) => a + b, 0) / L;
    const v = row.reduce((a, b) => a + (b - m) ** 2, 0) / L;
    const ms = row.reduce((a, b) => a + b * b, 0) / L;
    const lg = rand(L, 3);
    close((ln.data as Float32Array).subarray(r * L, r * L + L), row.map((b, i) => ((b - m) / Math.sqrt(v + 1e-5)) * lg[i]!), 1e-5, 'layer_norm');
    close((rms.data as Float32Array).subarray(r * L, r * L + L), row.map((b) => b / Math.sqrt(ms + 1e-6)), 1e-5, 'rms_norm');
  }
});

test('reductions, shape ops, gather and upsample', async () => {
  const xd = Float32Array.from({ length: 24 }, (_, i) => i);
  const x = g.constant(xd, [2, 3, 4]);
  const outs = await evaluate([
    g.sum(x, 1),
    g.mean(x, [0, 2], true),
    g.max(x, -1),
    g.transpose(x, [2, 0, 1]),
    g.concat(g.split(x, [1, 3], 2).reverse(), 2),
    g.slice(x, 2, 1, 4, 2),
    g.gather(g.constant(xd, [6, 4]), g.constant([5, 0, 5], [3], 'int64')),
    g.upsampleNearest(g.constant([1, 2, 3, 4], [1, 1, 2, 2]), 2),
    g.expand(g.constant([1, 2], [2, 1]), [2, 3]),
    g.pad(g.constant([1, 2], [1, 2]), [0, 1, 0, 0]),
    g.flip(x, [0, 2]),
    g.cast(g.after(g.cast(x, 'float16'), g.scalar(Number.NaN)), 'float32'),
  ]);
  close(outs[0]!.data as Float32Array, [12, 15, 18, 21, 48, 51, 54, 57], 0, 'sum');
  close(outs[1]!.data as Float32Array, [7.5, 11.5, 15.5], 1e-6, 'mean');
  close(outs[2]!.data as Float32Array, [3, 7, 11, 15, 19, 23], 0, 'max');
  assert.deepEqual(outs[3]!.shape, [4, 2, 3]);
  assert.equal(outs[3]!.data[1], 4);
  close(Array.from(outs[4]!.data as Float32Array).slice(0, 4), [1, 2, 3, 0], 0, 'split/concat');
  close(Array.from(outs[5]!.data as Float32Array).slice(0, 4), [1, 3, 5, 7], 0, 'strided slice');
  close(outs[6]!.data as Float32Array, [20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23], 0, 'gather');
  close(outs[7]!.data as Float32Array, [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4], 0, 'upsample');
  close(outs[8]!.data as Float32Array, [1, 1, 1, 2, 2, 2], 0, 'expand');
  close(outs[9]!.data as Float32Array, [0, 1, 2], 0, 'pad');
  // flip: x[1 - i][j][3 - k]
  close(outs[10]!.data as Float32Array, Array.from({ length: 24 }, (_, n) => xd[(1 - Math.floor(n / 12)) * 12 + (Math.floor(n / 4) % 3) * 4 + (3 - (n % 4))]!), 0, 'flip');
  assert.deepEqual(outs[10]!.shape, [2, 3, 4]);
  // after: the values and shape of its input whatever the gate holds (NaN here).
  close(outs[11]!.data as Float32Array, xd, 0, 'after');
  assert.deepEqual(outs[11]!.shape, [2, 3, 4]);
});

test('attention with causal mask equals a masked softmax by hand; rotary rotates pairs', async () => {
  const T = 4, D = 2;
  const qd = rand(T * D, 21), kd = rand(T * D, 22), vd = rand(T * D, 23);
  const q = g.constant(qd, [1, T, D]), k = g.constant(kd, [1, T, D]), v = g.constant(vd, [1, T, D]);
  const [att] = await evaluate([g.attention(q, k, v, { causal: true })]);
  for (let i = 0; i < T; i++) {
    const sc: number[] = [];
    for (let j = 0; j <= i; j++) sc.push((qd[i * D]! * kd[j * D]! + qd[i * D + 1]! * kd[j * D + 1]!) / Math.sqrt(D));
    const mx = Math.max(...sc);
    const e = sc.map((s) => Math.exp(s - mx));
    const z = e.reduce((a, b) => a + b, 0);
    for (let d = 0; d < D; d++) {
      const ref = e.reduce((a, p, j) => a + (p / z) * vd[j * D + d]!, 0);
      assert.ok(Math.abs((att!.data as Float32Array)[i * D + d]! - ref) < 1e-5, `attention row ${i}`);
    }
  }
  // Query chunking gives the same result (causal offsets carried per chunk, keys longer than queries).
  const q2 = g.constant(rand(2 * 5 * 3, 24), [2, 5, 3]);
  const k2 = g.constant(rand(2 * 7 * 3, 25), [2, 7, 3]);
  const v2 = g.constant(rand(2 * 7 * 4, 26), [2, 7, 4]);
  const [whole, chunked] = await evaluate([g.attention(q2, k2, v2, { causal: true }), g.attention(q2, k2, v2, { causal: true, queryChunk: 2 })]);
  close(chunked!.data as Float32Array, whole!.data as Float32Array, 1e-6, 'chunked attention');
  const { cos, sin } = g.ropeTables(3, 4, 10000);
  const x = g.constant(Float32Array.from({ length: 12 }, () => 1), [3, 4]);
  const [rot] = await evaluate([g.rotary(x, cos, sin)]);
  // position 2, frequency 0: (x1, x3) = (1, 1) rotated by angle 2 -> (cos2 - sin2, sin2 + cos2)
  const r = rot!.data as Float32Array;
  assert.ok(Math.abs(r[8]! - (Math.cos(2) - Math.sin(2))) < 1e-5);
  assert.ok(Math.abs(r[10]! - (Math.sin(2) + Math.cos(2))) < 1e-5);
});

test('dropout keeps about 1-p of the elements, scaled, and is identity at inference', async () => {
  const x = g.constant(new Float32Array(20000).fill(1), [20000]);
  const [d] = await evaluate([g.dropout(x, 0.25, true)]);
  const kept = Array.from(d!.data as Float32Array).filter((v) => v !== 0);
  assert.ok(Math.abs(kept.length / 20000 - 0.75) < 0.02, `kept ${kept.length}`);
  assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6));
  assert.equal(g.dropout(x, 0.25, false), x);
});

test('dynamic named dims: one session serves several batch sizes; feeds are validated', async () => {
  const x = g.input('x', 'float32', ['B', 'T', 4]);
  const y = g.reshape(g.sum(g.reshape(x, [-1, 2]), 1), ['B', 'T', 2]);
  const c = await compile([y]);
  for (const B of [1, 3]) {
    const [r] = await c.run({ x: { data: Float32Array.from({ length: B * 2 * 4 }, (_, i) => i), shape: [B, 2, 4] } });
    assert.deepEqual(r!.shape, [B, 2, 2]);
    assert.equal((r!.data as Float32Array)[1], 5);
  }
  await assert.rejects(c.run({ x: { data: new Float32Array(8), shape: [1, 2, 3] } }), UserError);
  await assert.rejects(c.run({}), /input x: missing/);
  // int64 inputs accept Int32Array token ids.
  const ids = g.input('ids', 'int64', ['N']);
  const [emb] = await evaluate([g.embedding(g.constant([0, 1, 10, 11, 20, 21], [3, 2]), ids)], { ids: { data: new Int32Array([2, 0]), shape: [2] } });
  assert.deepEqual(Array.from(emb!.data as Float32Array), [20, 21, 0, 1]);
  const causal = g.causalMask(g.input('s', 'float32', ['T', 'T']));
  const [m] = await evaluate([causal], { s: { data: new Float32Array(9), shape: [3, 3] } });
  assert.deepEqual(Array.from(m!.data as Float32Array).map((v) => v === -Infinity), [false, true, true, false, false, true, false, false, false]);
});

test('lowering is deterministic and weights can be inputs or initializers', async () => {
  const build = () => {
    const x = g.input('x', 'float32', [2, 3]);
    const w = g.param('w', [3, 3], rand(9, 4));
    return g.tanh(g.matmul(x, w));
  };
  const a = lower([build()]);
  const b = lower([build()]);
  assert.equal(a.key, b.key);
  assert.deepEqual(a.bytes, b.bytes);
  const y = build();
  const xd = rand(6, 5);
  const [r1] = await (await compile([y], { weights: 'inputs' })).run({ x: xd });
  const [r2] = await (await compile([y], { weights: 'initializers' })).run({ x: xd });
  close(r1!.data as Float32Array, r2!.data as Float32Array, 0, 'inputs vs initializers');
  // Parameters are read at each run, so in-place updates are seen without recompiling.
  const c = await compile([y]);
  const w = y.inputs[0]!.inputs[1]!;
  const before = (await c.run({ x: xd }))[0]!.data[0];
  (w.value as Float32Array).fill(0);
  assert.notEqual(before, 0);
  assert.equal((await c.run({ x: xd }))[0]!.data[0], 0);
  assert.throws(() => g.param('p', [2, 2], new Float32Array(3)), /weight p: expected 4 elements/);
});

test('weights baked as in-memory external data give the same result and are keyed by buffer', async () => {
  const x = g.input('x', 'float32', [1, 3, 6, 6]);
  const wd = rand(4 * 3 * 9, 31);
  const w = g.param('w', [4, 3, 3, 3], wd);
  const y = g.sum(g.silu(g.conv2d(x, w, undefined, { padding: 1 })), [2, 3]);
  const xd = rand(108, 32);
  const [a] = await (await compile([y], { weights: 'inputs' })).run({ x: xd });
  const [b] = await (await compile([y], { weights: 'external' })).run({ x: xd });
  close(b!.data as Float32Array, a!.data as Float32Array, 1e-5, 'external vs inputs');
  // A different buffer with the same graph must not reuse the first session.
  g.bind(w, new Float32Array(wd.length));
  const [c] = await (await compile([y], { weights: 'external' })).run({ x: xd });
  assert.deepEqual(Array.from(c!.data as Float32Array), [0, 0, 0, 0]);
  // Trainable parameters can stay fed while the rest are baked.
  const [d] = await (await compile([y], { weights: 'external', alwaysFeed: new Set([w]) })).run({ x: xd }, { w: wd });
  close(d!.data as Float32Array, a!.data as Float32Array, 1e-5, 'alwaysFeed');
});

test('multiHeadAttention: the fused ORT kernel, the standard lowering and per-head attention agree', async () => {
  for (const [T, S, causal] of [[5, 5, false], [6, 6, true], [4, 7, false]] as const) {
    const q = g.input('q', 'float32', ['B', T, 12]);
    const k = g.input('k', 'float32', ['B', S, 12]);
    const v = g.input('v', 'float32', ['B', S, 8]);
    const y = g.multiHeadAttention(q, k, v, 4, { causal });
    // queryChunk keeps `attention` on plain MatMul/Softmax/MatMul (no fusion): an independent reference.
    const ref = g.mergeHeads(g.attention(g.splitHeads(q, 4), g.splitHeads(k, 4), g.splitHeads(v, 4), { causal, queryChunk: 1000 }));
    // The split/merge-heads idiom folds into the same fused node.
    const idiom = g.mergeHeads(g.attention(g.splitHeads(q, 4), g.splitHeads(k, 4), g.splitHeads(v, 4), { causal }));
    assert.equal(idiom.op, 'mha');
    assert.deepEqual(idiom.inputs, [q, k, v]);
    const feeds = { q: { data: rand(2 * T * 12, 41), shape: [2, T, 12] }, k: { data: rand(2 * S * 12, 42), shape: [2, S, 12] }, v: { data: rand(2 * S * 8, 43), shape: [2, S, 8] } };
    const fused = await compile([y]);
    const standard = await compile([y], { attention: 'standard' });
    assert.notEqual(fused.session, standard.session);
    const [a] = await fused.run(feeds);
    const [b] = await standard.run(feeds);
    const [c] = await (await compile([ref])).run(feeds);
    assert.deepEqual(a!.shape, [2, T, 8]);
    close(a!.data as Float32Array, c!.data as Float32Array, 1e-5, `fused T${T} S${S} causal ${causal}`);
    close(b!.data as Float32Array, c!.data as Float32Array, 1e-6, `standard T${T} S${S} causal ${causal}`);
  }
});

test('crossEntropyWithIds equals -mean log softmax at the ids, skipping ignore_index', async () => {
  const ld = rand(2 * 4, 51);
  const [r] = await evaluate([g.crossEntropyWithIds(g.constant(ld, [2, 4]), g.constant([3, -100], [2], 'int64'))]);
  const row = Array.from(ld.subarray(0, 4));
  const lse = Math.log(row.reduce((a, b) => a + Math.exp(b), 0));
  close(r!.data as Float32Array, [lse - row[3]!], 1e-6, 'cross-entropy');
});
