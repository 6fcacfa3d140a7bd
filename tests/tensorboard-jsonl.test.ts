import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { JsonlLogger } from '../engine/logging/jsonl.ts';
import { LossAverage } from '../engine/logging/loss-average.ts';
import { JSONL_NAME, TAGS, TrainingLogger, memoryMiB, stepScalars } from '../engine/logging/training-logger.ts';

const lines = (p: string): Record<string, unknown>[] =>
  readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);

test('JSONL: one object per line with step, wall_time and the scalars; NaN as null; reopening appends', () => {
  const p = join(mkdtempSync(join(tmpdir(), 'jl-')), 'sub', 'm.jsonl');
  const a = JsonlLogger.open(p, { now: () => 1_700_000_000_500 });
  a.log(1, { 'loss/current': 0.5, 'lr/unet': 1e-4 });
  a.log(2, { 'loss/current': NaN, grad_norm: Infinity }, 42.25);
  a.close();
  assert.throws(() => a.log(3, {}), /after close/);
  const b = JsonlLogger.open(p);
  b.log(3, { 'loss/validation': 0.3 });
  assert.throws(() => b.log(4, { step: 1 }), /reserved/);
  b.close();
  const rows = lines(p);
  assert.deepEqual(rows.slice(0, 2), [
    { step: 1, wall_time: 1700000000.5, 'loss/current': 0.5, 'lr/unet': 1e-4 },
    { step: 2, wall_time: 42.25, 'loss/current': null, grad_norm: null },
  ]);
  assert.equal(rows[2]!.step, 3);
  assert.ok(Math.abs((rows[2]!.wall_time as number) - Date.now() / 1000) < 60);
  assert.equal(rows.length, 3);
});

test('TrainingLogger writes the same scalars to TensorBoard and JSONL in <logDir>', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'tl-')), 'logs');
  let t = 1_700_000_000_000;
  const log = TrainingLogger.open(dir, { now: () => (t += 250) });
  const s = stepScalars({ loss: 0.2, lossAverage: 0.3, lrs: { unet: 1e-4, textencoder: 5e-5 }, gradNorm: 1.5, memoryMiB: 512 });
  assert.deepEqual(s, {
    'loss/current': 0.2,
    'loss/average': 0.3,
    'lr/unet': 1e-4,
    'lr/textencoder': 5e-5,
    grad_norm: 1.5,
    memory: 512,
  });
  log.scalars(1, s);
  log.scalars(2, { [TAGS.lossValidation]: 0.25 });
  await log.image('sample/0', 2, { data: new Uint8Array(2 * 2 * 3).fill(200), width: 2, height: 2, channels: 3 });
  log.close();
  const files = readdirSync(dir).sort();
  assert.equal(files.length, 2);
  assert.equal(files[1], JSONL_NAME);
  assert.match(files[0]!, /^events\.out\.tfevents\./);
  const rows = lines(join(dir, JSONL_NAME));
  assert.deepEqual(rows, [
    { step: 1, wall_time: 1700000000.5, ...s },
    { step: 2, wall_time: 1700000000.75, 'loss/validation': 0.25 },
  ]);
  // Every tag appears in the event file, as UTF-8 inside the records, with the image as a PNG.
  const ev = readFileSync(join(dir, files[0]!));
  for (const tag of [...Object.keys(s), 'loss/validation', 'sample/0', 'brain.Event:2']) assert.ok(ev.includes(tag), tag);
  assert.ok(ev.includes(Buffer.from([0x89, 0x50, 0x4e, 0x47])));
  assert.ok(memoryMiB() > 1);
});

test("loss/average is kohya's moving average over the last epoch's steps", () => {
  const avg = new LossAverage();
  assert.ok(Number.isNaN(avg.average));
  assert.equal(avg.add(0, 0, 1), 1);
  assert.equal(avg.add(0, 1, 3), 2);
  assert.equal(avg.add(0, 2, 5), 3);
  // Epoch 1 replaces slot by slot: [7, 3, 5] then [7, 9, 5].
  assert.equal(avg.add(1, 0, 7), 5);
  assert.equal(avg.add(1, 1, 9), 7);
});
