import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as g from '../engine/graph/index.ts';
import { compile, clearSessionCache } from '../engine/runtime/session.ts';
import { executionProviders, supportedBackends } from '../engine/runtime/providers.ts';
import { UserError } from '../engine/util/errors.ts';

process.env['LORA_SCRIPTS_QUIET'] = '1';

test('device strings map to ORT execution providers; unknown or missing ones are user errors', () => {
  assert.deepEqual(executionProviders('cpu'), ['cpu']);
  assert.ok(supportedBackends().includes('cpu'));
  assert.throws(() => executionProviders('tpu' as never), UserError);
  for (const d of ['dml', 'coreml'] as const) {
    if (supportedBackends().includes(d)) assert.deepEqual(executionProviders(d), [d, 'cpu']);
    else assert.throws(() => executionProviders(d), /not available in this onnxruntime-node build/);
  }
});

test('sessions are cached by graph bytes and options, and released on clear', async () => {
  const mk = () => g.exp(g.input('x', 'float32', [3]));
  const a = await compile([mk()]);
  const b = await compile([mk()]);
  assert.equal(a.session, b.session);
  const c = await compile([mk()], { threads: 1 });
  assert.notEqual(a.session, c.session);
  await clearSessionCache();
  const d = await compile([mk()]);
  assert.notEqual(a.session, d.session);
  const [r] = await d.run({ x: new Float32Array([0, 1, 2]) });
  assert.ok(Math.abs((r!.data as Float32Array)[2]! - Math.exp(2)) < 1e-5);
});

test('float16 inference precision falls back to float32 on CPU', async () => {
  const x = g.input('x', 'float32', [2]);
  const c = await compile([g.mul(x, 1 / 3)], { precision: 'float16' });
  const [r] = await c.run({ x: new Float32Array([1, 2]) });
  // Exactly the float32 result: a float16 graph would round 1/3 to 0.33325.
  assert.equal((r!.data as Float32Array)[0], Math.fround(1 / 3));
});

test('a profiled session reports kernel time per op', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { summarizeProfile } = await import('../engine/runtime/profile.ts');
  const dir = await mkdtemp(join(tmpdir(), 'ortprof-'));
  try {
    const x = g.input('x', 'float32', [64, 64]);
    const c = await compile([g.softmax(g.matmul(x, x))], { profile: join(dir, 'p') });
    for (let i = 0; i < 2; i++) await c.run({ x: new Float32Array(4096).fill(0.01) });
    c.endProfiling();
    const ops = await summarizeProfile(join(dir, 'p'));
    const names = ops.map((o) => o.op);
    assert.ok(names.includes('MatMul') && names.includes('Softmax'), names.join());
    assert.equal(ops.find((o) => o.op === 'MatMul')!.calls, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
