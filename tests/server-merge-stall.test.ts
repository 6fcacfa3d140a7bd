/**
 * Merging a LoRA stack into a checkpoint is seconds of CPU work (GEMMs, which ONNX Runtime runs on the
 * calling thread, and JS loops for LoHa); it runs on a worker thread, so a server in the same process keeps
 * answering. Measured here on SD 1.5-shaped weights (its layout at a narrower width, so the test stays
 * under a GiB): the event-loop stall during the merge, and /sdapi/v1/progress polled throughout. The merged
 * weights must equal the same arithmetic done on this thread, bit for bit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { SD15, syntheticShapes, uniformFill as fill } from '../engine/sd/synthetic.ts';
import { LDM_PREFIX, inferUnetLayout, ldmToDiffusers } from '../engine/sd/keymap.ts';
import { LoraMerger } from '../engine/lora/merge.ts';
import { TargetIndex, resolveTargets } from '../engine/lora/targets.ts';
import { kohyaModuleName } from '../engine/lora/names.ts';
import { kohyaMetadata, writeKohyaLora } from '../engine/lora/write.ts';
import { loadLora } from '../engine/lora/load.ts';
import { mergeTarget } from '../engine/lora/merge-target.ts';
import { writeSafetensors, type TensorToWrite } from '../engine/safetensors/index.ts';
import type { LoraModule, WeightMap } from '../engine/lora/types.ts';
import { FixtureBackend, startTestServer } from './server-fixture-backend.ts';


const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

test('a LoRA stack merges on a worker thread: the loop stays free, /sdapi/v1/progress answers, the bits match', async () => {
  // SD 1.5's UNet layout at 128 channels instead of 320: every kind of layer, 1/6 of the values.
  const shapes = syntheticShapes({ ...SD15, unet: { ...SD15.unet, modelChannels: 128 } });
  const unet = [...shapes].filter(([k]) => k.startsWith(LDM_PREFIX.unet));
  const layout = inferUnetLayout(unet.map(([k]) => k));
  // kohya's default targets: Linear and 1×1 conv layers inside the transformers.
  const targets = unet.filter(([k]) => /\.1\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))\.weight$/.test(k));
  // The largest weights (the GEGLU projections of the widest attention level) get a LoHa as well.
  const ff = targets.filter(([k]) => k.includes('ff.net.0.proj'));
  const widest = Math.max(...ff.map(([, s]) => numel(s)));
  const big = ff.filter(([, s]) => numel(s) === widest).slice(0, 3);
  assert.ok(targets.length > 100 && big.length > 0);
  const pathOf = (key: string) => ldmToDiffusers(key, { unet: layout })!.name.slice(0, -'.weight'.length);
  const weights: WeightMap = new Map(targets.map(([k, s], i) => [k, { shape: s, data: fill(numel(s), 1000 + i, 0.05) }]));
  const values = [...weights.values()].reduce((n, w) => n + w.data.length, 0);
  const original = new Map([...weights].map(([k, w]) => [k, w.data.slice()]));

  const dir = await mkdtemp(join(tmpdir(), 'merge-stall-'));
  const t = await startTestServer({ withModel: true, backend: new FixtureBackend() });
  try {
    // A plain rank-32 LoRA on every target (ONNX Runtime GEMMs) and a rank-32 LoHa on three of the largest
    // (the JS reference: two products the size of the weight each, a few hundred ms per weight in one piece).
    const R = 32;
    const plain: LoraModule[] = targets.map(([key, shape], i) => ({
      name: '', part: 'unet', path: pathOf(key), kind: 'lora', rank: R, alpha: 16, scale: 0.5,
      tensors: {
        down: { shape: [R, ...shape.slice(1)], data: fill(R * numel(shape.slice(1)), i + 1, 0.1) },
        up: { shape: [shape[0]!, R, ...shape.slice(2).map(() => 1)], data: fill(shape[0]! * R, i + 7, 0.1) },
      },
    }));
    await writeKohyaLora(join(dir, 'plain.safetensors'), plain, kohyaMetadata({ outputName: 'plain', networkDim: R, networkAlpha: 16, baseModelVersion: 'sd_v1' }), { dtype: 'F16' });
    const loha = new Map<string, TensorToWrite>();
    big.forEach(([key, [out, inn]], i) => {
      const name = kohyaModuleName({ part: 'unet', path: pathOf(key) });
      const t2 = (rows: number, cols: number, seed: number): TensorToWrite => ({ dtype: 'F32', shape: [rows, cols], data: fill(rows * cols, seed, 0.1) });
      loha.set(`${name}.hada_w1_a`, t2(out!, R, 3 * i + 1));
      loha.set(`${name}.hada_w1_b`, t2(R, inn!, 3 * i + 2));
      loha.set(`${name}.hada_w2_a`, t2(out!, R, 3 * i + 3));
      loha.set(`${name}.hada_w2_b`, t2(R, inn!, 3 * i + 4));
      loha.set(`${name}.alpha`, { dtype: 'F32', shape: [], data: new Float32Array([R]) });
    });
    await writeSafetensors(join(dir, 'loha.safetensors'), loha);
    const stack = [
      { path: join(dir, 'plain.safetensors'), te: 1, unet: 0.8 },
      { path: join(dir, 'loha.safetensors'), te: 1, unet: 0.6 },
    ];

    // The index sees the whole UNet, as a loaded model's would; only the targets hold values.
    const shapeOf = new Map(unet);
    const merger = new LoraMerger(weights, { index: new TargetIndex(shapeOf.keys(), (k) => shapeOf.get(k)), log: () => {} });
    await t.get('/sdapi/v1/progress');
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const t0 = performance.now();
    let merging = true;
    const merge = merger.apply(stack).finally(() => (merging = false));
    const latencies: number[] = [];
    while (merging) {
      const s = performance.now();
      const r = await t.get('/sdapi/v1/progress');
      assert.equal(r.status, 200);
      latencies.push(performance.now() - s);
      await new Promise((r) => setTimeout(r, 20));
    }
    const result = await merge;
    const seconds = (performance.now() - t0) / 1000;
    loop.disable();
    const stallMs = loop.max / 1e6;
    const worst = Math.max(...latencies);
    console.log(
      `merge stall: ${targets.length} targets (${(values / 1e6).toFixed(0)} M values) merged in ${seconds.toFixed(1)} s; ` +
        `longest event-loop stall ${stallMs.toFixed(0)} ms (p99 ${(loop.percentile(99) / 1e6).toFixed(0)} ms); ` +
        `/sdapi/v1/progress answered ${latencies.length} times, slowest ${worst.toFixed(0)} ms`,
    );
    assert.deepEqual(result.loras.map((l) => [l.applied, l.unmatched.length, l.errors.length]), [[targets.length, 0, 0], [big.length, 0, 0]]);
    assert.ok(latencies.length >= 3, `progress answered only ${latencies.length} times during the merge`);
    // A merge on this thread holds the loop for a whole LoHa product or GEMM (1–2 s under load); slices of
    // copying are all that is left here, and a loaded machine's scheduling.
    assert.ok(stallMs < 600, `the event loop stalled for ${stallMs.toFixed(0)} ms during the merge`);
    assert.ok(worst < 1500, `/sdapi/v1/progress took ${worst.toFixed(0)} ms during the merge`);

    // The worker's result is the arithmetic of this thread, bit for bit: one plain-only and one LoHa target.
    const [plainLora, lohaLora] = await Promise.all(stack.map((s) => loadLora(s.path)));
    const index = new TargetIndex(shapeOf.keys(), (k) => shapeOf.get(k));
    const jobsFor = (key: string) => [
      ...resolveTargets(plainLora!, index).matched.filter((m) => m.target!.key === key).map((m) => ({ m, mult: 0.8 })),
      ...resolveTargets(lohaLora!, index).matched.filter((m) => m.target!.key === key).map((m) => ({ m, mult: 0.6 })),
    ];
    for (const key of [targets.find(([k]) => !big.some(([b]) => b === k))![0], big[0]![0]]) {
      const w = weights.get(key)!;
      const expected = (await mergeTarget(original.get(key)!.slice(), w.shape, jobsFor(key), 65536)).data;
      assert.ok(Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength).equals(Buffer.from(expected.buffer)), `${key} differs from the same merge on this thread`);
    }
    // Restoring the base is bit-exact.
    await merger.apply([]);
    for (const [k, w] of weights) assert.ok(Buffer.from(w.data.buffer).equals(Buffer.from(original.get(k)!.buffer)), `${k} not restored`);
  } finally {
    await t.close();
    await rm(dir, { recursive: true, force: true });
  }
});
