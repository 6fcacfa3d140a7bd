// The trainer as a server drives it: TrainingJob progress events and cancel (with a state to resume from),
// the diffusers/PEFT output format, and init_lora (incremental training from an existing LoRA).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { writePatternDataset, tinyConfig } from './support/train-fixture.ts';
import { TrainingJob, train, type TrainProgress } from '../engine/train/trainer.ts';
import { loadLora } from '../engine/lora/load.ts';
import { isUserError } from '../engine/util/errors.ts';

test('TrainingJob reports progress and cancels into a resumable state', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-job-'));
  try {
    await writePatternDataset(join(dir, 'data'), 4);
    const config = await tinyConfig(dir, join(dir, 'data'), join(dir, 'out'), { batch_size: 1, epochs: 3 });
    const job = TrainingJob.start(config, { threads: 1 });
    const seen: TrainProgress[] = [];
    const logs: string[] = [];
    job.on('log', (m: string) => logs.push(m));
    job.on('progress', (p: TrainProgress) => {
      seen.push(p);
      if (p.phase === 'training' && p.step === 2) job.cancel();
    });
    const r = await job.done;
    assert.equal(job.status, 'cancelled');
    assert.equal(r.cancelled, true);
    assert.equal(r.steps, 2);
    assert.equal(r.totalSteps, 12);
    assert.equal(r.outputPath, undefined);
    assert.equal(r.statePath, join(dir, 'out', 'state-00000002'));
    assert.ok((await readdir(r.statePath)).includes('optimizer.safetensors'));
    const phases = [...new Set(seen.map((p) => p.phase))];
    assert.deepEqual(phases, ['caching', 'training', 'cancelled']);
    const steps = seen.filter((p) => p.phase === 'training' && p.step > 0);
    assert.deepEqual(steps.map((p) => p.step), [1, 2]);
    for (const p of steps) {
      assert.ok(Number.isFinite(p.loss) && p.loss! > 0);
      assert.equal(p.lrs?.unet, 1e-3);
      assert.ok(p.itPerSec! > 0 && p.etaSeconds! > 0);
      assert.equal(p.epochs, 3);
    }
    assert.ok(logs.some((l) => l.includes('tensorboard --logdir')));
    assert.equal(job.progress.phase, 'cancelled');

    // The cancelled run continues from its state to the end.
    const resumed = await train({ ...config, resume_from: r.statePath }, { threads: 1 });
    assert.equal(resumed.steps, 12);
    assert.ok(resumed.outputPath);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('cancelling while latents are cached ends the job as cancelled, with nothing trained', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-job-cache-'));
  try {
    await writePatternDataset(join(dir, 'data'), 4);
    const job = TrainingJob.start(await tinyConfig(dir, join(dir, 'data'), join(dir, 'out')), { threads: 1 });
    job.on('progress', (p: TrainProgress) => {
      if (p.phase === 'caching') job.cancel();
    });
    const r = await job.done;
    assert.equal(job.status, 'cancelled');
    assert.equal(r.steps, 0);
    assert.equal(r.statePath, undefined);
    assert.ok(!(await readdir(join(dir, 'out'))).some((n) => n.endsWith('.safetensors') || n.startsWith('state-')));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('diffusers output format, and init_lora continues from a LoRA file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-init-'));
  try {
    await writePatternDataset(join(dir, 'data'), 4);
    const first = await train(await tinyConfig(dir, join(dir, 'data'), join(dir, 'a'), { epochs: 1, lora_alpha: 2 }), { threads: 1, saveFormat: 'diffusers' });
    const peft = await loadLora(first.outputPath!);
    assert.equal(peft.format, 'peft');
    assert.ok(peft.modules.every((m) => m.part === 'unet' && m.alpha === 2 && m.rank === 4));
    assert.ok(peft.modules.some((m) => m.tensors.up!.data.some((v) => v !== 0)), 'the first run trained');

    // A learning rate too small to move float32 weights: the result must be the init_lora's values.
    const second = await train(
      await tinyConfig(dir, join(dir, 'data'), join(dir, 'b'), { epochs: 1, init_lora: first.outputPath, learning_rate: 1e-30, weight_decay: 0 }),
      { threads: 1 },
    );
    const kohya = await loadLora(second.outputPath!);
    assert.equal(kohya.format, 'kohya');
    assert.equal(kohya.modules.length, peft.modules.length);
    const byPath = new Map(peft.modules.map((m) => [m.path, m]));
    for (const m of kohya.modules) {
      const src = byPath.get(m.path)!;
      assert.ok(src, m.name);
      assert.equal(m.alpha, 2, 'alpha comes from the init LoRA');
      assert.deepEqual(m.tensors.down!.data, src.tensors.down!.data);
      assert.deepEqual(m.tensors.up!.data, src.tensors.up!.data);
    }

    // Another rank does not fit the file.
    const wrong = await tinyConfig(dir, join(dir, 'data'), join(dir, 'c'), { epochs: 1, init_lora: first.outputPath, lora_rank: 8 });
    await assert.rejects(train(wrong, { threads: 1 }), (e) => isUserError(e) && /lora_rank 8/.test((e as Error).message));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
