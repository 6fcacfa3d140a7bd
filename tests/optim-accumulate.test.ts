import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GradAccumulator } from '../engine/optim/accumulate.ts';
import { SGD } from '../engine/optim/sgd.ts';
import { TrainingStepper } from '../engine/optim/stepper.ts';
import { rng } from './support/random.ts';


/** Least squares: loss = mean_i (x_i·w − y_i)², gradient (2/n)·Xᵀ(Xw − y), in closed form (float64). */
function lsq(X: number[][], y: number[], w: ArrayLike<number>): { loss: number; grad: Float32Array } {
  const d = w.length;
  const g = new Float64Array(d);
  let loss = 0;
  X.forEach((x, i) => {
    let r = -y[i]!;
    for (let j = 0; j < d; j++) r += x[j]! * w[j]!;
    loss += r * r;
    for (let j = 0; j < d; j++) g[j]! += 2 * r * x[j]!;
  });
  return { loss: loss / X.length, grad: Float32Array.from(g, (v) => v / X.length) };
}

function problem(n: number, d: number): { X: number[][]; y: number[] } {
  const r = rng(99);
  const X = Array.from({ length: n }, () => Array.from({ length: d }, () => 2 * r() - 1));
  const y = X.map((x) => x.reduce((s, v, j) => s + v * (j + 1), 0) + 0.1 * (r() - 0.5));
  return { X, y };
}

test('mean of micro-batch gradients weighted by size equals the one-big-batch gradient', () => {
  const { X, y } = problem(30, 5);
  const w = [0.3, -0.2, 0.1, 0.5, -0.4];
  const full = lsq(X, y, w).grad;
  for (const cuts of [[10, 20], [7, 19, 23], [1, 2, 3, 29]]) {
    const acc = new GradAccumulator();
    let start = 0;
    for (const end of [...cuts, 30]) {
      acc.add({ w: lsq(X.slice(start, end), y.slice(start, end), w).grad }, end - start);
      start = end;
    }
    assert.equal(acc.count, cuts.length + 1);
    const got = acc.result().get('w')!;
    for (let j = 0; j < 5; j++) assert.ok(Math.abs(got[j]! - full[j]!) < 1e-5 * (1 + Math.abs(full[j]!)), `cuts ${cuts}: w[${j}]`);
    assert.equal(acc.count, 0);
  }
  const sum = new GradAccumulator({ mode: 'sum' });
  sum.add({ w: new Float32Array([1, 2]) });
  sum.add({ w: new Float32Array([3, 4]) }, 0.5);
  assert.deepEqual([...sum.result().get('w')!], [2.5, 4]);
});

test('training with 4 micro-batches of 8 follows training with batches of 32', () => {
  const { X, y } = problem(32, 4);
  const wBig = new Float32Array(4);
  const wAcc = new Float32Array(4);
  const big = new TrainingStepper({ optimizer: new SGD([{ name: 'g', params: { w: wBig }, lr: 0.1 }], { momentum: 0.5 }) });
  const acc = new TrainingStepper({
    optimizer: new SGD([{ name: 'g', params: { w: wAcc }, lr: 0.1 }], { momentum: 0.5 }),
    accumulationSteps: 4,
  });
  for (let step = 0; step < 20; step++) {
    const full = lsq(X, y, wBig);
    const rb = big.microBatch(full.loss, { w: full.grad });
    let ra;
    for (let k = 0; k < 4; k++) {
      const part = lsq(X.slice(8 * k, 8 * k + 8), y.slice(8 * k, 8 * k + 8), wAcc);
      ra = acc.microBatch(part.loss, { w: part.grad });
      if (k < 3) assert.equal(ra, undefined, 'no step before the 4th micro-batch');
    }
    assert.ok(ra && rb && ra.step === rb.step);
    assert.ok(Math.abs(ra.loss - rb.loss) < 1e-4 * rb.loss, `step ${step}: loss ${ra.loss} vs ${rb.loss}`);
  }
  for (let j = 0; j < 4; j++) assert.ok(Math.abs(wAcc[j]! - wBig[j]!) < 1e-4, `w[${j}] ${wAcc[j]} vs ${wBig[j]}`);
  // It actually learnt the generating weights (1, 2, 3, 4), so the comparison is not between two idle runs.
  assert.ok(Math.abs(wBig[3]! - 4) < 0.5, `w = ${[...wBig]}`);
});

test('a partial accumulation at the end of an epoch steps on the mean of what it has', () => {
  const w = new Float32Array([0]);
  const st = new TrainingStepper({ optimizer: new SGD([{ name: 'g', params: { w }, lr: 1 }]), accumulationSteps: 4 });
  assert.equal(st.flush(), undefined);
  st.microBatch(1, { w: new Float32Array([2]) });
  st.microBatch(3, { w: new Float32Array([4]) });
  assert.equal(st.pendingMicroBatches, 2);
  const r = st.flush()!;
  assert.equal(r.loss, 2);
  assert.equal(w[0], -3);
  assert.equal(st.globalStep, 1);
});

test('micro-batches with different gradient names are refused', () => {
  const acc = new GradAccumulator();
  acc.add({ a: new Float32Array(2) });
  assert.throws(() => acc.add({ b: new Float32Array(2) }), /gradient 'b'/);
});
