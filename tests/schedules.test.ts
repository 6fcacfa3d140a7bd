import { test } from 'node:test';
import assert from 'node:assert/strict';
import { makeSchedule, resolveWarmupSteps } from '../engine/optim/schedules.ts';

const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) < 1e-12, `${what}: ${a} ≠ ${b}`);

// Hand-computed with warmup 10 and 110 total steps, so the decay phase is 100 steps long.
const W = 10;
const T = 110;

test('every schedule with warmup rises linearly from 0', () => {
  for (const name of ['constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts'] as const) {
    const f = makeSchedule({ name, warmupSteps: W, totalSteps: T });
    close(f(0), 0, `${name}(0)`);
    close(f(3), 0.3, `${name}(3)`);
    close(f(10), 1, `${name}(10)`);
  }
  const poly = makeSchedule({ name: 'polynomial', warmupSteps: W, totalSteps: T, lrInit: 1e-3 });
  close(poly(0), 0, 'polynomial(0)');
  close(poly(5), 0.5, 'polynomial(5)');
});

test('constant and constant_with_warmup', () => {
  const c = makeSchedule({ name: 'constant' });
  assert.deepEqual([c(0), c(5), c(1e6)], [1, 1, 1]);
  const cw = makeSchedule({ name: 'constant_with_warmup', warmupSteps: W });
  close(cw(9), 0.9, 'step 9');
  close(cw(500), 1, 'step 500');
  assert.throws(() => makeSchedule({ name: 'constant', warmupSteps: 5 }), /constant_with_warmup/);
});

test('linear decays to 0 at the last step and stays there', () => {
  const f = makeSchedule({ name: 'linear', warmupSteps: W, totalSteps: T });
  close(f(60), 0.5, 'midpoint');
  close(f(85), 0.25, '3/4');
  close(f(110), 0, 'end');
  close(f(150), 0, 'past the end');
  const noWarm = makeSchedule({ name: 'linear', totalSteps: 4 });
  assert.deepEqual([0, 1, 2, 3, 4].map(noWarm), [1, 0.75, 0.5, 0.25, 0]);
});

test('cosine is half a cosine wave (num_cycles 0.5)', () => {
  const f = makeSchedule({ name: 'cosine', warmupSteps: W, totalSteps: T });
  close(f(35), 0.5 * (1 + Math.SQRT1_2), 'quarter');
  close(f(60), 0.5, 'half');
  close(f(85), 0.5 * (1 - Math.SQRT1_2), '3/4');
  close(f(110), 0, 'end');
});

test('cosine_with_restarts restarts num_cycles times and is 0 after the end', () => {
  const f = makeSchedule({ name: 'cosine_with_restarts', warmupSteps: W, totalSteps: T, numCycles: 2 });
  close(f(35), 0.5, 'middle of cycle 1');
  close(f(59), 0.5 * (1 + Math.cos(Math.PI * 0.98)), 'end of cycle 1');
  close(f(60), 1, 'restart');
  close(f(85), 0.5, 'middle of cycle 2');
  close(f(110), 0, 'end');
  const one = makeSchedule({ name: 'cosine_with_restarts', totalSteps: 100 });
  close(one(50), 0.5, 'default num_cycles 1');
});

test('polynomial uses power and lr_end relative to the base lr', () => {
  const f = makeSchedule({ name: 'polynomial', warmupSteps: W, totalSteps: T, power: 2, lrEnd: 1e-5, lrInit: 1e-3 });
  close(f(10), 1, 'start of decay');
  close(f(60), ((1e-3 - 1e-5) * 0.25 + 1e-5) / 1e-3, 'midpoint');
  close(f(110), 0.01, 'end');
  close(f(1000), 0.01, 'past the end');
  const lin = makeSchedule({ name: 'polynomial', totalSteps: 100, lrInit: 1e-4 });
  close(lin(50), ((1e-4 - 1e-7) * 0.5 + 1e-7) / 1e-4, 'defaults power 1, lr_end 1e-7');
  assert.throws(() => makeSchedule({ name: 'polynomial', totalSteps: 10, lrInit: 1e-8 }), /lr_end/);
});

test('bad settings name the config field', () => {
  assert.throws(() => makeSchedule({ name: 'cosine' }), /total number of training steps/);
  assert.throws(() => makeSchedule({ name: 'linear', totalSteps: 10, warmupSteps: -1 }), /lr_warmup_steps/);
  assert.throws(() => makeSchedule({ name: 'bogus' as 'linear', totalSteps: 10 }), /lr_scheduler 'bogus'/);
});

test('warmup given as a ratio of the total steps (kohya)', () => {
  assert.equal(resolveWarmupSteps(0.1, 1600), 160);
  assert.equal(resolveWarmupSteps(0.05, 15), 0);
  assert.equal(resolveWarmupSteps(500, 1600), 500);
  assert.throws(() => resolveWarmupSteps(2.5, 100), /lr_warmup_steps/);
});
