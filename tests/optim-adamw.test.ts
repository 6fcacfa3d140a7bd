import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AdamW } from '../engine/optim/adamw.ts';
import { NonFiniteError } from '../engine/optim/guard.ts';
import type { ParamGroup } from '../engine/optim/optimizer.ts';
import { fixturesDir } from './support/paths.ts';
import { rng } from './support/random.ts';

function randn(r: () => number, n: number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  return out;
}

/** torch's AdamW written out directly in float64, the independent reference. */
class RefAdamW {
  m: Float64Array;
  v: Float64Array;
  p: Float64Array;
  k = 0;
  constructor(p: Float32Array, readonly b1: number, readonly b2: number, readonly eps: number, readonly wd: number) {
    this.p = Float64Array.from(p);
    this.m = new Float64Array(p.length);
    this.v = new Float64Array(p.length);
  }
  step(g: Float32Array, lr: number): void {
    this.k++;
    for (let i = 0; i < g.length; i++) {
      this.p[i]! -= lr * this.wd * this.p[i]!;
      this.m[i] = this.b1 * this.m[i]! + (1 - this.b1) * g[i]!;
      this.v[i] = this.b2 * this.v[i]! + (1 - this.b2) * g[i]! * g[i]!;
      const mHat = this.m[i]! / (1 - this.b1 ** this.k);
      const vHat = this.v[i]! / (1 - this.b2 ** this.k);
      this.p[i]! -= (lr * mHat) / (Math.sqrt(vHat) + this.eps);
    }
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}

/** Minimal safetensors reader: 8-byte LE header length, JSON header, raw little-endian data. */
function readSafetensors(path: string): Map<string, Float32Array> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const out = new Map<string, Float32Array>();
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__' || v.dtype !== 'F32') continue;
    const [s, e] = v.data_offsets;
    const bytes = buf.subarray(8 + n + s, 8 + n + e);
    out.set(k, new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
  }
  return out;
}

/** AdamW settings as the fixture generator recorded them in the manifest's description of adamw_losses. */
function adamwSettings(manifestPath: string): { lr: number; b1: number; b2: number; eps: number; wd: number } {
  const m = JSON.parse(readFileSync(manifestPath, 'utf8')) as { tensors: { key: string; description: string }[] };
  const d = m.tensors.find((t) => t.key === 'adamw_losses')!.description;
  const num = (re: RegExp): number => Number(re.exec(d)![1]);
  const betas = /betas \(([\d.e-]+), ([\d.e-]+)\)/.exec(d)!;
  return {
    lr: num(/lr ([\d.e-]+)/),
    b1: Number(betas[1]),
    b2: Number(betas[2]),
    eps: num(/eps ([\d.e-]+)/),
    wd: num(/weight_decay ([\d.e-]+)/),
  };
}

test('AdamW matches a float64 reference over several steps, two groups with their own lr and weight decay', () => {
  const r = rng(7);
  const sizes = { a: 257, b: 64, c: 1000 };
  const params = Object.fromEntries(Object.entries(sizes).map(([k, n]) => [k, randn(r, n, 0.5)]));
  const groups: ParamGroup[] = [
    { name: 'unet', params: { a: params.a!, b: params.b! }, lr: 1e-3 },
    { name: 'textencoder', params: { c: params.c! }, lr: 3e-4, weightDecay: 0.1 },
  ];
  const opt = new AdamW(groups, { betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2 });
  const refs = {
    a: new RefAdamW(params.a!, 0.9, 0.999, 1e-8, 1e-2),
    b: new RefAdamW(params.b!, 0.9, 0.999, 1e-8, 1e-2),
    c: new RefAdamW(params.c!, 0.9, 0.999, 1e-8, 0.1),
  };
  const start = new Float32Array(params.a!);
  const scales = [1, 0.5, 0.8, 1, 0.25, 1];
  for (const s of scales) {
    const grads = Object.fromEntries(Object.entries(sizes).map(([k, n]) => [k, randn(r, n, 0.01)]));
    // Gradients near and below eps make eps's place (outside the square root) matter.
    grads.b = randn(r, sizes.b, 1e-7);
    grads.a![3] = 1e-12;
    grads.c![5] = 0;
    opt.step(grads, s);
    refs.a.step(grads.a!, 1e-3 * s);
    refs.b.step(grads.b!, 1e-3 * s);
    refs.c.step(grads.c!, 3e-4 * s);
  }
  for (const k of ['a', 'b', 'c'] as const) {
    const ours = params[k]!;
    const ref = refs[k].p;
    // float32 storage of p rounds by ≤ ½ ulp twice per step, so ≤ one ulp (≤ 2^-23·|p|) per step.
    for (let i = 0; i < ours.length; i++) {
      const tol = 1e-9 + scales.length * 2 ** -23 * Math.abs(ref[i]!);
      assert.ok(Math.abs(ours[i]! - ref[i]!) <= tol, `param ${k}[${i}]: ours ${ours[i]}, float64 ${ref[i]}`);
    }
    assert.equal(opt.stepOf(k), scales.length);
  }
  assert.ok(maxAbsDiff(params.a!, start) > 1e-3, 'parameters moved');
  assert.deepEqual(opt.lrs(0.5), { unet: 5e-4, textencoder: 1.5e-4 });
});

for (const fx of [
  { dir: 'llama-tiny', golden: 'golden/golden.safetensors', lora: 'lora/adapter_model.safetensors' },
  { dir: 'sd-tiny', golden: 'golden/lora_train_step_unet_te.safetensors', lora: 'lora-kohya/lora_a.safetensors' },
]) {
  test(`AdamW first step on the ${fx.dir} golden gradients: torch semantics, and the direction of the golden 3-step result`, () => {
    const hp = adamwSettings(join(fixturesDir, fx.dir, 'manifest.json'));
    const golden = readSafetensors(join(fixturesDir, fx.dir, fx.golden));
    const lora = readSafetensors(join(fixturesDir, fx.dir, fx.lora));
    const params = new Map<string, Float32Array>();
    const grads = new Map<string, Float32Array>();
    for (const [k, g] of golden) {
      if (!k.startsWith('grad/')) continue;
      const name = k.slice(5);
      const p = lora.get(name);
      assert.ok(p, `LoRA file has ${name}`);
      params.set(name, new Float32Array(p));
      grads.set(name, g);
    }
    assert.ok(params.size > 0);
    const opt = new AdamW([{ name: 'lora', params, lr: hp.lr }], { betas: [hp.b1, hp.b2], eps: hp.eps, weightDecay: hp.wd });
    opt.step(grads);
    let agree = 0;
    let big = 0;
    for (const [name, p] of params) {
      const p0 = lora.get(name)!;
      const g = grads.get(name)!;
      const ref = new RefAdamW(p0, hp.b1, hp.b2, hp.eps, hp.wd);
      ref.step(g, hp.lr);
      assert.ok(maxAbsDiff(p, ref.p) < 1e-7, `${name}: differs from the float64 reference`);
      const after = golden.get(`after_adamw/${name}`)!;
      for (let i = 0; i < p.length; i++) {
        // Step 1 has m̂ = g and v̂ = g², so the move is −lr·g/(|g|+eps) on top of the decay −lr·wd·p.
        const expected = -hp.lr * hp.wd * p0[i]! - (hp.lr * g[i]!) / (Math.abs(g[i]!) + hp.eps);
        assert.ok(Math.abs(p[i]! - p0[i]! - expected) < 2e-7, `${name}[${i}]: first-step move`);
        if (Math.abs(g[i]!) > 1e-5) {
          big++;
          if (Math.sign(after[i]! - p0[i]!) === Math.sign(p[i]! - p0[i]!)) agree++;
        }
      }
    }
    // Later golden steps recompute the gradient, so only the direction can be compared with step 1.
    assert.ok(agree / big > 0.98, `direction agrees for ${agree} of ${big} elements`);
  });
}

test('AdamW state save/restore is bit-exact: N steps, restore into a fresh optimizer, M more', () => {
  const r = rng(11);
  const init = { x: randn(r, 300), y: randn(r, 17) };
  const gradSeq = Array.from({ length: 9 }, () => ({ x: randn(r, 300, 0.1), y: randn(r, 17, 0.1) }));
  const make = (): { p: { x: Float32Array; y: Float32Array }; opt: AdamW } => {
    const p = { x: new Float32Array(init.x), y: new Float32Array(init.y) };
    const opt = new AdamW([{ name: 'g', params: p, lr: 1e-2 }], { weightDecay: 0.05 });
    return { p, opt };
  };
  const whole = make();
  for (const g of gradSeq) whole.opt.step(g, 0.9);

  const first = make();
  for (const g of gradSeq.slice(0, 4)) first.opt.step(g, 0.9);
  const saved = first.opt.state();
  // The parameters themselves are saved with the LoRA file; keep a copy of them alongside the state.
  const savedParams = { x: new Float32Array(first.p.x), y: new Float32Array(first.p.y) };
  // Round-trip through JSON and raw bytes, as a state file would.
  const header = JSON.parse(JSON.stringify(saved.header));
  const tensors = new Map([...saved.tensors].map(([k, v]) => [k, new Float32Array(v.buffer.slice(0))]));
  assert.deepEqual([...tensors.keys()].sort(), ['exp_avg/x', 'exp_avg/y', 'exp_avg_sq/x', 'exp_avg_sq/y']);
  first.opt.step(gradSeq[4]!); // later steps must not leak into the saved copy
  const second = make();
  second.p.x.set(savedParams.x);
  second.p.y.set(savedParams.y);
  second.opt.load({ header, tensors });
  assert.equal(second.opt.stepOf('x'), 4);
  for (const g of gradSeq.slice(4)) second.opt.step(g, 0.9);
  assert.deepEqual(Buffer.from(second.p.x.buffer), Buffer.from(whole.p.x.buffer));
  assert.deepEqual(Buffer.from(second.p.y.buffer), Buffer.from(whole.p.y.buffer));
  const a = second.opt.state().tensors;
  const b = whole.opt.state().tensors;
  for (const [k, v] of b) assert.deepEqual(Buffer.from(a.get(k)!.buffer), Buffer.from(v.buffer), k);
});

test('AdamW load rejects a state for other parameters or another optimizer, leaving itself unchanged', () => {
  const p = { w: new Float32Array([1, 2, 3]) };
  const opt = new AdamW([{ name: 'g', params: p, lr: 1e-3 }]);
  opt.step({ w: new Float32Array([0.1, 0.2, 0.3]) });
  const st = opt.state();
  const other = new AdamW([{ name: 'g', params: { w: new Float32Array(4) }, lr: 1e-3 }]);
  assert.throws(() => other.load(st), /'w' has 3 elements saved, 4 now/);
  assert.equal(other.stepOf('w'), 0);
  const renamed = new AdamW([{ name: 'g', params: { v: new Float32Array(3) }, lr: 1e-3 }]);
  assert.throws(() => renamed.load(st), /no entry for parameter 'v'/);
  assert.throws(() => opt.load({ ...st, header: { ...st.header, kind: 'sgd' } }), /saved for optimizer 'sgd'/);
});

test('AdamW refuses NaN/inf gradients before changing any parameter', () => {
  const p = { a: new Float32Array([1, 2]), b: new Float32Array([3, 4]) };
  const opt = new AdamW([{ name: 'g', params: p, lr: 1e-1 }]);
  assert.throws(
    () => opt.step({ a: new Float32Array([0.5, 0.5]), b: new Float32Array([0.5, Infinity]) }),
    (e: unknown) => e instanceof NonFiniteError && e.tensor === 'b' && e.index === 1 && /parameter 'b'/.test(e.message),
  );
  assert.deepEqual([...p.a, ...p.b], [1, 2, 3, 4]);
  assert.equal(opt.stepOf('a'), 0);
});

test('AdamW rejects bad hyper-parameters with the field name', () => {
  const params = { w: new Float32Array(2) };
  assert.throws(() => new AdamW([{ name: 'g', params, lr: 1e-3 }], { betas: [1, 0.999] }), /AdamW betas\[0\]/);
  assert.throws(() => new AdamW([{ name: 'g', params, lr: -1 }]), /learning rate of group 'g'/);
  assert.throws(
    () => new AdamW([{ name: 'a', params, lr: 1 }, { name: 'b', params, lr: 1 }]),
    /'w' is in two groups/,
  );
});
