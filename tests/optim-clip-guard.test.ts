import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AdamW } from '../engine/optim/adamw.ts';
import { clipByGlobalNorm, globalNorm } from '../engine/optim/clip.ts';
import { NonFiniteError, findNonFinite } from '../engine/optim/guard.ts';
import { TrainingStepper } from '../engine/optim/stepper.ts';
import { isUserError } from '../engine/util/errors.ts';

test('global norm spans all tensors; clipping scales every gradient by max/(norm+1e-6) and returns the pre-clip norm', () => {
  const g = new Map([
    ['a', new Float32Array([3, 0])],
    ['b', new Float32Array([0, 0, 4])],
  ]);
  assert.equal(globalNorm(g), 5);
  assert.equal(clipByGlobalNorm(g, 10), 5);
  assert.deepEqual([...g.get('a')!, ...g.get('b')!], [3, 0, 0, 0, 4]);
  assert.equal(clipByGlobalNorm(g, 1), 5);
  const c = Math.fround(1 / (5 + 1e-6));
  assert.deepEqual([...g.get('a')!], [Math.fround(3 * c), 0]);
  assert.deepEqual([...g.get('b')!], [0, 0, Math.fround(4 * c)]);
  assert.ok(Math.abs(globalNorm(g) - 1) < 1e-6);
  assert.equal(clipByGlobalNorm(g, 0), globalNorm(g), 'max_grad_norm 0 only measures');
});

test('findNonFinite reports the first NaN/inf element', () => {
  assert.equal(findNonFinite(new Map([['a', new Float32Array([1, -2, 3e38])]])), undefined);
  assert.deepEqual(findNonFinite(new Map([['a', new Float32Array([1])], ['b', new Float32Array([0, NaN, Infinity])]])), {
    name: 'b',
    index: 1,
    value: NaN,
  });
  assert.equal(findNonFinite(new Map([['a', new Float32Array([-Infinity])]]))?.value, -Infinity);
});

function setup(accumulationSteps = 1) {
  const p = { x: new Float32Array([1, 2, 3]), y: new Float32Array([4]) };
  const stepper = new TrainingStepper({ optimizer: new AdamW([{ name: 'unet', params: p, lr: 0.1 }]), accumulationSteps });
  return { p, stepper };
}

test('a NaN loss stops training with the step number before any weight changes', () => {
  const { p, stepper } = setup();
  stepper.microBatch(0.5, { x: new Float32Array([1, 1, 1]), y: new Float32Array([1]) });
  const after1 = [...p.x, ...p.y];
  assert.throws(
    () => stepper.microBatch(NaN, { x: new Float32Array([1, 1, 1]), y: new Float32Array([1]) }),
    (e: unknown) =>
      e instanceof NonFiniteError && isUserError(e) && e.step === 2 && e.tensor === 'loss' && /Loss is NaN at optimizer step 2/.test(e.message),
  );
  assert.deepEqual([...p.x, ...p.y], after1);
});

test('an inf gradient names the step, micro-batch and parameter, and nothing is updated', () => {
  const { p, stepper } = setup(2);
  stepper.microBatch(0.5, { x: new Float32Array([1, 1, 1]), y: new Float32Array([1]) });
  assert.throws(
    () => stepper.microBatch(0.7, { x: new Float32Array([1, 1, 1]), y: new Float32Array([-Infinity]) }),
    (e: unknown) =>
      e instanceof NonFiniteError &&
      e.tensor === 'y' &&
      e.index === 0 &&
      /parameter 'y' is -Infinity at element 0, optimizer step 1 \(micro-batch 2 of 2\) \(loss 0\.7\)/.test(e.message) &&
      /No weights were changed/.test(e.message),
  );
  assert.deepEqual([...p.x, ...p.y], [1, 2, 3, 4]);
  assert.equal(stepper.optimizer.stepOf('x'), 0);
});
