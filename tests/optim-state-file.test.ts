import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTrainingStepper, type OptimConfig } from '../engine/optim/from-config.ts';
import { loadOptimizerState, saveOptimizerState } from '../engine/optim/state-file.ts';
import { isUserError } from '../engine/util/errors.ts';
import { fixturesDir } from './support/paths.ts';
import { rng, uniform } from './support/random.ts';


const cfg: OptimConfig = {
  optimizer: 'adamw',
  learning_rate: 1e-3,
  text_encoder_lr: 2e-4,
  weight_decay: 0.01,
  max_grad_norm: 0.05,
  lr_scheduler: 'cosine_with_restarts',
  lr_warmup_steps: 0.2,
  gradient_accumulation_steps: 2,
  mixed_precision: 'fp16',
};

for (const optimizer of ['adamw', 'sgd'] as const) {
  test(`${optimizer}: config → stepper; state saved to a safetensors file and loaded resumes bit-exactly`, async () => {
    const c = { ...cfg, optimizer };
    const r = rng(8);
    const u0 = uniform(r, 96);
    const t0 = uniform(r, 32);
    const micro = Array.from({ length: 20 }, () => ({ u: uniform(r, 96, 0.02), t: uniform(r, 32, 0.02) }));
    const run = (u: Float32Array, t: Float32Array) => createTrainingStepper(c, { unet: { u }, textencoder: { t } }, 10);
    const feed = (st: ReturnType<typeof run>, from: number, to: number) => {
      for (let i = from; i < to; i++) st.microBatch(0.5, { u: micro[i]!.u.map((x) => x * st.lossScale), t: micro[i]!.t.map((x) => x * st.lossScale) });
    };
    const uw = new Float32Array(u0);
    const tw = new Float32Array(t0);
    const whole = run(uw, tw);
    assert.equal(whole.lossScale, 65536, 'fp16 turns on loss scaling');
    assert.deepEqual(whole.nextLrs(), { unet: 0, textencoder: 0 }, 'warmup 0.2 of 10 steps starts at 0');
    feed(whole, 0, 20);

    const ua = new Float32Array(u0);
    const ta = new Float32Array(t0);
    const a = run(ua, ta);
    feed(a, 0, 8);
    const file = join(mkdtempSync(join(tmpdir(), 'opt-')), 'state', 'optimizer.safetensors');
    await saveOptimizerState(file, a.state());
    const loaded = await loadOptimizerState(file);
    const b = run(new Float32Array(ua), new Float32Array(ta));
    const ub = b.optimizer.params().get('u')!;
    const tb = b.optimizer.params().get('t')!;
    b.load(loaded);
    assert.equal(b.globalStep, 4);
    feed(b, 8, 20);
    assert.deepEqual(Buffer.from(ub.buffer), Buffer.from(uw.buffer));
    assert.deepEqual(Buffer.from(tb.buffer), Buffer.from(tw.buffer));
    assert.deepEqual(b.nextLrs(), whole.nextLrs());
  });
}

test('no text-encoder parameters: one group, logged as lr/unet only', () => {
  const st = createTrainingStepper({ ...cfg, mixed_precision: 'no', lr_scheduler: 'linear' }, { unet: { u: new Float32Array(3) }, textencoder: {} }, 5);
  assert.deepEqual(st.optimizer.groupNames, ['unet']);
  assert.equal(st.lossScale, 1);
});

test('loading a file that is not an optimizer state names the file', async () => {
  const lora = join(fixturesDir, 'sd-tiny/lora-kohya/lora_a.safetensors');
  await assert.rejects(loadOptimizerState(lora), (e: unknown) => isUserError(e) && e.message.includes(lora) && /not an optimizer state/.test(e.message));
});
