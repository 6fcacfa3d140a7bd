import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW } from '../engine/optim/adamw.ts';
import { NonFiniteError } from '../engine/optim/guard.ts';
import { DynamicLossScaler } from '../engine/optim/loss-scale.ts';
import { makeSchedule } from '../engine/optim/schedules.ts';
import { TrainingStepper } from '../engine/optim/stepper.ts';
import { rng, uniform } from './support/random.ts';

const scaled = (g: Float32Array, s: number): Float32Array => g.map((v) => v * s);

test('loss scaling: overflow skips the step and halves the scale, clean steps grow it, updates equal unscaled training', () => {
  const r = rng(1);
  const init = uniform(r, 50);
  const grads = Array.from({ length: 8 }, () => uniform(r, 50, 1e-3));
  const pRef = new Float32Array(init);
  const ref = new TrainingStepper({
    optimizer: new AdamW([{ name: 'unet', params: { w: pRef }, lr: 1e-2 }]),
    schedule: makeSchedule({ name: 'linear', totalSteps: 10 }),
    maxGradNorm: 0.02,
  });
  const p = new Float32Array(init);
  const scaler = new DynamicLossScaler({ initScale: 1024, growthInterval: 3 });
  const st = new TrainingStepper({
    optimizer: new AdamW([{ name: 'unet', params: { w: p }, lr: 1e-2 }]),
    schedule: makeSchedule({ name: 'linear', totalSteps: 10 }),
    maxGradNorm: 0.02,
    lossScaler: scaler,
  });
  // Steps 1–3 clean → scale doubles to 2048; step 4 overflows → 1024 and skipped; 5–8 clean.
  const scales: number[] = [];
  let k = 0;
  for (let step = 1; step <= 9; step++) {
    scales.push(st.lossScale);
    if (step === 4) {
      const bad = scaled(grads[k]!, st.lossScale);
      bad[7] = Infinity;
      const before = new Float32Array(p);
      const rep = st.microBatch(0.3, { w: bad })!;
      assert.equal(rep.applied, false);
      assert.deepEqual(rep.overflow, { name: 'w', index: 7, value: Infinity });
      assert.deepEqual(p, before, 'skipped step leaves the weights alone');
      continue;
    }
    const rep = st.microBatch(0.3, { w: scaled(grads[k]!, st.lossScale) })!;
    const repRef = ref.microBatch(0.3, { w: new Float32Array(grads[k]!) })!;
    k++;
    assert.equal(rep.applied, true);
    assert.deepEqual(rep.lrs, repRef.lrs, 'a skipped step does not advance the schedule');
    assert.equal(rep.gradNorm, repRef.gradNorm);
  }
  assert.deepEqual(scales, [1024, 1024, 1024, 2048, 1024, 1024, 1024, 2048, 2048]);
  assert.equal(st.globalStep, 9);
  assert.equal(st.schedulerStep, 8);
  // Power-of-two scaling is exact, so the weights match training without scaling bit for bit.
  assert.deepEqual(Buffer.from(p.buffer), Buffer.from(pRef.buffer));
});

test('loss scaling gives up with a clear error after too many overflows in a row', () => {
  const st = new TrainingStepper({
    optimizer: new AdamW([{ name: 'unet', params: { w: new Float32Array(2) }, lr: 1e-3 }]),
    lossScaler: new DynamicLossScaler(),
    maxConsecutiveSkips: 5,
  });
  for (let i = 0; i < 4; i++) assert.equal(st.microBatch(1, { w: new Float32Array([NaN, 0]) })!.applied, false);
  assert.throws(() => st.microBatch(1, { w: new Float32Array([NaN, 0]) }), (e: unknown) => e instanceof NonFiniteError && /5 optimizer steps in a row overflowed/.test(e.message) && /loss scale now 2048/.test(e.message));
});

test('stepper state (AdamW, schedule index, loss scale) resumes bit-exactly', () => {
  const r = rng(2);
  const initA = uniform(r, 40);
  const initB = uniform(r, 12);
  const micro = Array.from({ length: 24 }, () => ({ a: uniform(r, 40, 0.01), b: uniform(r, 12, 0.01) }));
  const make = (a: Float32Array, b: Float32Array) =>
    new TrainingStepper({
      optimizer: new AdamW([
        { name: 'unet', params: { a }, lr: 1e-3 },
        { name: 'textencoder', params: { b }, lr: 5e-4 },
      ]),
      schedule: makeSchedule({ name: 'cosine', warmupSteps: 2, totalSteps: 12 }),
      accumulationSteps: 2,
      maxGradNorm: 0.01,
      lossScaler: new DynamicLossScaler({ initScale: 256, growthInterval: 2 }),
    });
  const feed = (st: TrainingStepper, from: number, to: number): void => {
    for (let i = from; i < to; i++) {
      const s = st.lossScale;
      st.microBatch(0.1, { a: scaled(micro[i]!.a, s), b: scaled(micro[i]!.b, s) });
    }
  };
  const a1 = new Float32Array(initA);
  const b1 = new Float32Array(initB);
  const whole = make(a1, b1);
  feed(whole, 0, 24);

  const a2 = new Float32Array(initA);
  const b2 = new Float32Array(initB);
  const first = make(a2, b2);
  feed(first, 0, 10);
  const saved = first.state();
  // The weights themselves are saved with the LoRA file; the state carries everything else.
  const a3 = new Float32Array(a2);
  const b3 = new Float32Array(b2);
  first.microBatch(0.1, { a: micro[10]!.a, b: micro[10]!.b });
  assert.throws(() => first.state(), /middle of gradient accumulation/);
  const header = JSON.parse(JSON.stringify(saved.header));
  const second = make(a3, b3);
  second.load({ header, tensors: saved.tensors });
  assert.equal(second.globalStep, 5);
  assert.equal(second.schedulerStep, 5);
  assert.equal(second.lossScale, 1024, '256 doubled after steps 2 and 4');
  feed(second, 10, 24);
  assert.deepEqual(Buffer.from(a3.buffer), Buffer.from(a1.buffer));
  assert.deepEqual(Buffer.from(b3.buffer), Buffer.from(b1.buffer));
  assert.equal(second.lossScale, whole.lossScale);
  assert.deepEqual(second.nextLrs(), whole.nextLrs());
});
