import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { repoRoot } from './support/paths.ts';
import * as g from '../engine/graph/index.ts';
import { grad } from '../engine/autodiff/grad.ts';
import { checkpoint } from '../engine/autodiff/checkpoint.ts';

const run = promisify(execFile);

async function child(mode: string) {
  // Arena off (in the child) and a low mmap threshold make freed tensors leave the RSS, so peak RSS tracks live tensors.
  const { stdout } = await run(process.execPath, ['--import', 'tsx', join(repoRoot, 'tests/runtime-checkpoint-child.ts'), mode], {
    cwd: repoRoot,
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: '65536' },
    maxBuffer: 1 << 20,
  });
  return JSON.parse(stdout) as { loss: number; maxRssBeforeKb: number; maxRssKb: number; digest: number[][] };
}

test('checkpointed blocks give identical gradients with a lower peak memory', async () => {
  const [plain, ckpt] = await Promise.all([child('plain'), child('checkpoint')]);
  assert.equal(ckpt.loss, plain.loss);
  assert.deepEqual(ckpt.digest, plain.digest);
  const grow = (r: typeof plain) => r.maxRssKb - r.maxRssBeforeKb;
  // 8 blocks keep about 6 activations of 1 MiB each without checkpointing; with it, block outputs only.
  assert.ok(grow(ckpt) < 0.7 * grow(plain), `peak growth ${grow(ckpt)} KB (checkpoint) vs ${grow(plain)} KB (plain)`);
});

test('checkpoint recomputes the segment in the backward graph instead of reading its activations', () => {
  const x = g.param('x', [4, 4], new Float32Array(16).fill(0.5));
  const seg = checkpoint(() => g.tanh(g.exp(x)));
  const loss = g.sum(g.mul(seg, seg));
  const [dx] = grad(loss, [x]);
  const back = g.topoSort([dx!]);
  const exps = back.filter((t) => t.op === 'exp');
  const tanhs = back.filter((t) => t.op === 'tanh');
  // The backward reads a recomputed exp/tanh (no segment tag, fed through the gate), not the forward nodes.
  assert.ok(exps.some((t) => t.segment === undefined), 'exp recomputed');
  assert.ok(tanhs.some((t) => t.segment === undefined), 'tanh recomputed');
  assert.equal(exps.length, 2, 'the forward exp (read by the un-gated first use) and its recomputed copy');
});
