// Resume proof: a run stopped right after a saved state (as if killed) and resumed from that state ends with
// a LoRA bit-identical to a run never stopped, with the same per-step losses after the resume point.
// Exercises gradient accumulation, a schedule with warmup, caption shuffling, flips, offset noise, min-SNR
// and the text encoder trained inside the graph, all of which must line up after a resume.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { writePatternDataset, tinyConfig } from './support/train-fixture.ts';
import { train } from '../engine/train/trainer.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { isUserError } from '../engine/util/errors.ts';

async function tensors(path: string): Promise<Map<string, Buffer>> {
  const f = await SafetensorsFile.open(path);
  try {
    const out = new Map<string, Buffer>();
    for (const n of f.names()) out.set(n, Buffer.from((await f.readFloat32(n)).buffer));
    return out;
  } finally {
    await f.close();
  }
}

async function losses(logDir: string): Promise<Map<number, number>> {
  const lines = (await readFile(join(logDir, 'scalars.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
  const out = new Map<number, number>();
  for (const l of lines) {
    if (typeof l['loss/current'] === 'number') out.set(l.step, l['loss/current']);
  }
  return out;
}

test('killed after a checkpoint and resumed, the run ends bit-identical to an uninterrupted one', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-resume-'));
  try {
    await writePatternDataset(join(dir, 'data'), 6, 0, 'yellow disk, dark background, round, simple');
    const common = {
      batch_size: 1,
      gradient_accumulation_steps: 2,
      epochs: 3,
      save_steps: 4,
      lr_scheduler: 'cosine',
      lr_warmup_steps: 2,
      shuffle_caption: true,
      flip_aug: true,
      noise_offset: 0.05,
      min_snr_gamma: 5,
      train_text_encoder: true,
      text_encoder_lr: 5e-4,
      lora_rank: 2,
      lora_alpha: 1,
    };
    const full = await tinyConfig(dir, join(dir, 'data'), join(dir, 'full'), common);
    const a = await train(full, { threads: 1 });
    assert.equal(a.steps, 9);

    const partCfg = await tinyConfig(dir, join(dir, 'data'), join(dir, 'part'), common);
    const stopped = await train(partCfg, { threads: 1, stopAfterStep: 5 });
    assert.equal(stopped.steps, 5);
    assert.equal(stopped.outputPath, undefined, 'a killed run writes no final LoRA');
    const state = join(dir, 'part', 'state-00000004');
    assert.ok((await readdir(state)).includes('state.json'));

    // A state cannot be loaded into a differently shaped network.
    const wrong = await tinyConfig(dir, join(dir, 'data'), join(dir, 'part'), { ...common, lora_rank: 3, resume_from: state });
    await assert.rejects(train(wrong, { threads: 1 }), (e) => isUserError(e) && /lora_rank: 2 → 3/.test((e as Error).message));

    const resumeCfg = await tinyConfig(dir, join(dir, 'data'), join(dir, 'part'), { ...common, resume_from: state });
    const b = await train(resumeCfg, { threads: 1 });
    assert.equal(b.steps, 9);

    const ta = await tensors(a.outputPath!);
    const tb = await tensors(b.outputPath!);
    assert.ok(ta.size > 0);
    assert.deepEqual([...tb.keys()].sort(), [...ta.keys()].sort());
    for (const [k, v] of ta) assert.ok(v.equals(tb.get(k)!), `${k} differs after resume`);
    assert.ok([...ta.keys()].some((k) => k.startsWith('lora_te_')), 'text-encoder LoRA trained');

    // Same losses at every step after the resume point (the resumed run appends steps 5..9 to the part log).
    const la = await losses(a.logDir);
    const lb = await losses(b.logDir);
    for (let s = 5; s <= 9; s++) {
      assert.equal(typeof la.get(s), 'number', `step ${s} logged`);
      assert.equal(lb.get(s), la.get(s), `loss at step ${s}`);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
