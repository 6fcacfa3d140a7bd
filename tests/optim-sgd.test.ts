import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SGD } from '../engine/optim/sgd.ts';
import { rng, uniform } from './support/random.ts';


/** torch.optim.SGD written out in float64. */
function refSgd(
  p0: Float32Array,
  grads: Float32Array[],
  lrs: number[],
  o: { momentum: number; dampening: number; nesterov: boolean; wd: number },
): Float64Array {
  const p = Float64Array.from(p0);
  let buf: Float64Array | undefined;
  grads.forEach((g, k) => {
    const d = Float64Array.from(g, (x, i) => x + o.wd * p[i]!);
    if (o.momentum !== 0) {
      buf = buf ? buf.map((b, i) => o.momentum * b + (1 - o.dampening) * d[i]!) : Float64Array.from(d);
      for (let i = 0; i < d.length; i++) d[i] = o.nesterov ? d[i]! + o.momentum * buf[i]! : buf[i]!;
    }
    for (let i = 0; i < p.length; i++) p[i] = p[i]! - lrs[k]! * d[i]!;
  });
  return p;
}

for (const o of [
  { momentum: 0, dampening: 0, nesterov: false, wd: 0 },
  { momentum: 0.9, dampening: 0, nesterov: false, wd: 1e-2 },
  { momentum: 0.9, dampening: 0.1, nesterov: false, wd: 0 },
  { momentum: 0.8, dampening: 0, nesterov: true, wd: 5e-3 },
]) {
  test(`SGD matches a float64 reference (momentum ${o.momentum}, dampening ${o.dampening}, nesterov ${o.nesterov}, wd ${o.wd})`, () => {
    const r = rng(3);
    const p0 = uniform(r, 200);
    const grads = Array.from({ length: 6 }, () => uniform(r, 200, 0.3));
    const scales = [1, 1, 0.5, 0.25, 1, 0.1];
    const p = new Float32Array(p0);
    const opt = new SGD([{ name: 'all', params: { w: p }, lr: 0.05 }], {
      momentum: o.momentum,
      dampening: o.dampening,
      nesterov: o.nesterov,
      weightDecay: o.wd,
    });
    grads.forEach((g, k) => opt.step({ w: g }, scales[k]));
    const ref = refSgd(p0, grads, scales.map((s) => 0.05 * s), o);
    let moved = 0;
    for (let i = 0; i < p.length; i++) {
      assert.ok(Math.abs(p[i]! - ref[i]!) <= 1e-6, `w[${i}]: ${p[i]} vs ${ref[i]}`);
      moved = Math.max(moved, Math.abs(p[i]! - p0[i]!));
    }
    assert.ok(moved > 0.01);
  });
}

test('SGD momentum state save/restore is bit-exact', () => {
  const r = rng(5);
  const p0 = uniform(r, 64);
  const grads = Array.from({ length: 7 }, () => uniform(r, 64));
  const run = (gs: Float32Array[], start: Float32Array, state?: ReturnType<SGD['state']>) => {
    const p = new Float32Array(start);
    const opt = new SGD([{ name: 'g', params: { w: p }, lr: 0.01 }], { momentum: 0.9, nesterov: true });
    if (state) opt.load(state);
    for (const g of gs) opt.step({ w: g });
    return { p, opt };
  };
  const whole = run(grads, p0);
  const part = run(grads.slice(0, 3), p0);
  const rest = run(grads.slice(3), part.p, part.opt.state());
  assert.deepEqual(Buffer.from(rest.p.buffer), Buffer.from(whole.p.buffer));
  assert.equal(rest.opt.stepOf('w'), 7);
  // Without the momentum buffer the continuation differs, so the comparison above is meaningful.
  const fresh = run(grads.slice(3), part.p);
  assert.notDeepEqual(Buffer.from(fresh.p.buffer), Buffer.from(whole.p.buffer));
});

test('SGD rejects nesterov without momentum', () => {
  assert.throws(() => new SGD([{ name: 'g', params: { w: new Float32Array(1) }, lr: 1 }], { nesterov: true }), /nesterov/);
});
