import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { copyFile, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { SafetensorsFile, writeSafetensors } from '../engine/safetensors/index.ts';
import { LoraMerger } from '../engine/lora/merge.ts';
import { loadLora } from '../engine/lora/load.ts';
import { kohyaModuleName, moduleForLdmKey, parseModuleName } from '../engine/lora/names.ts';
import { TargetIndex } from '../engine/lora/targets.ts';
import { applyStack } from '../engine/lora/apply.ts';
import { parseLoraTensors } from '../engine/lora/parse.ts';
import type { WeightMap } from '../engine/lora/types.ts';

const sd = join(fixturesDir, 'sd-tiny');
const kohyaA = join(sd, 'lora-kohya/lora_a.safetensors');
const kohyaB = join(sd, 'lora-kohya/lora_b.safetensors');
const peftA = join(sd, 'lora-diffusers/lora_a/pytorch_lora_weights.safetensors');
const peftB = join(sd, 'lora-diffusers/lora_b');
const keymap = JSON.parse(readFileSync(join(sd, 'keymap.json'), 'utf8')) as { kohya_lora_module_to_ldm_weight: Record<string, string> };

async function readAll(path: string): Promise<{ tensors: WeightMap; metadata: Record<string, string> }> {
  const f = await SafetensorsFile.open(path);
  const tensors: WeightMap = new Map();
  for (const [n, info] of f.tensors) tensors.set(n, { shape: [...info.shape], data: await f.readFloat32(n) });
  const metadata = f.metadata;
  await f.close();
  return { tensors, metadata };
}

const base = await readAll(join(sd, 'sd-tiny.safetensors'));
const copyWeights = (): WeightMap => new Map([...base.tensors].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
const quiet = { log: () => {} };

/**
 * ΔW per LDM key from the raw kohya file, in float64, independent of the engine: scale from the file's own
 * alpha tensor and rank, the target from the fixture's keymap.json.
 */
async function independentDelta(file: string): Promise<Map<string, Float64Array>> {
  const { tensors } = await readAll(file);
  const out = new Map<string, Float64Array>();
  for (const [module, ldm] of Object.entries(keymap.kohya_lora_module_to_ldm_weight)) {
    const down = tensors.get(`${module}.lora_down.weight`);
    if (!down) continue;
    const up = tensors.get(`${module}.lora_up.weight`)!;
    const alpha = tensors.get(`${module}.alpha`)!.data[0]!;
    const [r, inn] = down.shape as [number, number];
    const o = up.shape[0]!;
    const d = new Float64Array(o * inn);
    for (let i = 0; i < o; i++) for (let j = 0; j < inn; j++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += up.data[i * r + k]! * down.data[k * inn + j]!;
      d[i * inn + j] = (alpha / r) * s;
    }
    out.set(ldm, d);
  }
  return out;
}

/** max |w - expected| where expected(i) = base + Σ c·Δ over the given deltas. */
function maxErr(w: WeightMap, terms: [number, Map<string, Float64Array>][]): number {
  let worst = 0;
  for (const [k, t] of w) {
    const b = base.tensors.get(k)!.data;
    const ds = terms.map(([c, m]) => [c, m.get(k)] as const).filter(([, d]) => d !== undefined);
    for (let i = 0; i < t.data.length; i++) {
      let e = b[i]!;
      for (const [c, d] of ds) e += c * d![i]!;
      worst = Math.max(worst, Math.abs(t.data[i]! - e));
    }
  }
  return worst;
}

function sameBits(a: WeightMap, b: WeightMap): string[] {
  const diff: string[] = [];
  for (const [k, t] of a) {
    const u = new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length);
    const v = new Uint32Array(b.get(k)!.data.buffer, b.get(k)!.data.byteOffset, b.get(k)!.data.length);
    if (u.length !== v.length || u.some((x, i) => x !== v[i])) diff.push(k);
  }
  return diff;
}

test('every kohya module of the fixture LoRAs resolves to the LDM weight keymap.json names', async () => {
  const index = new TargetIndex(base.tensors.keys(), (k) => base.tensors.get(k)?.shape);
  const wrong: string[] = [];
  for (const [module, ldm] of Object.entries(keymap.kohya_lora_module_to_ldm_weight)) {
    const n = parseModuleName(module)!;
    if (index.resolve(n.part, n.path)?.key !== ldm) wrong.push(module);
  }
  assert.deepEqual(wrong, []);
  // And the other way, as a trainer names what it trains: LDM key → kohya module name.
  for (const [module, ldm] of Object.entries(keymap.kohya_lora_module_to_ldm_weight)) {
    assert.equal(kohyaModuleName(moduleForLdmKey(ldm, index.unetLayout!)!), module);
  }
  for (const f of [kohyaA, kohyaB, peftA, peftB]) {
    const l = await loadLora(f);
    const unresolved = l.modules.filter((m) => !index.resolve(m.part, m.path)).map((m) => m.name);
    assert.deepEqual(unresolved, [], f);
    assert.deepEqual(l.unknownKeys, []);
  }
});

test('lora_a at 1.0: kohya and diffusers files give bit-identical weights, equal to W + (alpha/r)·up@down', async () => {
  const wk = copyWeights(), wd = copyWeights();
  const rk = await new LoraMerger(wk, quiet).apply([{ path: kohyaA, te: 1, unet: 1 }]);
  const rd = await new LoraMerger(wd, quiet).apply([{ path: join(sd, 'lora-diffusers/lora_a'), te: 1, unet: 1 }]);
  assert.deepEqual(sameBits(wk, wd), []);
  const delta = await independentDelta(kohyaA);
  assert.equal(rk.loras[0]!.applied, delta.size);
  assert.equal(rd.loras[0]!.applied, delta.size);
  assert.deepEqual(rk.changedKeys, [...delta.keys()].sort());
  const err = maxErr(wk, [[1, delta]]);
  assert.ok(err < 1e-6, `max |W' - (W + ΔW)| = ${err}`);
  // A real change happened: the LoRA moves weights by far more than the tolerance.
  assert.ok(maxErr(wk, []) > 1e-2);
});

test('A×0.8 + B×0.5 is the sum of the scaled deltas, in both formats; restore is bit-exact', async () => {
  const dA = await independentDelta(kohyaA), dB = await independentDelta(kohyaB);
  for (const [a, b] of [[kohyaA, kohyaB], [peftA, peftB]] as const) {
    const w = copyWeights();
    const m = new LoraMerger(w, quiet);
    const r = await m.apply([{ path: a, te: 0.8, unet: 0.8 }, { path: b, te: 0.5, unet: 0.5 }]);
    assert.equal(r.fromCache, false);
    const err = maxErr(w, [[0.8, dA], [0.5, dB]]);
    assert.ok(err < 1e-6, `${a}: error ${err}`);
    const changed = await m.restore();
    assert.deepEqual(changed, r.changedKeys);
    assert.deepEqual(sameBits(w, base.tensors), []);
  }
});

test('the ONNX Runtime GEMM path (used for big layers) gives the same merge as the JS path', async () => {
  const dA = await independentDelta(kohyaA), dB = await independentDelta(kohyaB);
  const stack = [{ path: kohyaA, te: 0.8, unet: 0.8 }, { path: kohyaB, te: 0.5, unet: -0.5 }];
  const viaOrt = copyWeights(), viaJs = copyWeights();
  await new LoraMerger(viaOrt, { ...quiet, ortMinElements: 0 }).apply(stack);
  await new LoraMerger(viaJs, { ...quiet, ortMinElements: Infinity }).apply(stack);
  assert.ok(maxErr(viaOrt, [[0.8, dA], [-0.5, dB]]) < 1e-6);
  assert.ok(maxErr(viaJs, [[0.8, dA], [-0.5, dB]]) < 1e-6);
});

test('separate text-encoder and UNet multipliers', async () => {
  const w = copyWeights();
  const dA = await independentDelta(kohyaA);
  const r = await new LoraMerger(w, quiet).apply([{ path: kohyaA, te: 0, unet: -0.5 }]);
  assert.ok(r.changedKeys.every((k) => k.startsWith('model.diffusion_model.')));
  assert.ok(r.changedKeys.length > 0);
  const unetOnly = new Map([...dA].filter(([k]) => k.startsWith('model.diffusion_model.')));
  assert.ok(unetOnly.size > 0 && unetOnly.size < dA.size);
  const err = maxErr(w, [[-0.5, unetOnly]]);
  assert.ok(err < 1e-6);
});

test('stack cache: repeating a stack is a copy from cache with identical bits; a changed file is re-read', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-merge-'));
  try {
    const a = join(dir, 'a.safetensors');
    await copyFile(kohyaA, a);
    const w = copyWeights();
    const m = new LoraMerger(w, quiet);
    const first = await m.apply([{ path: a, te: 1, unet: 1 }]);
    const snapshot = new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
    await m.apply([{ path: kohyaB, te: 1, unet: 1 }]);
    const again = await m.apply([{ path: a, te: 1, unet: 1 }]);
    assert.equal(first.fromCache, false);
    assert.equal(again.fromCache, true);
    assert.equal(m.stats.hits, 1);
    assert.deepEqual(sameBits(w, snapshot), []);
    const same = await m.apply([{ path: a, te: 1, unet: 1 }]);
    assert.deepEqual(same.changedKeys, []);

    // Replace a.safetensors by lora_b's content with a new mtime: the cache entry must not be used.
    await copyFile(kohyaB, a);
    await utimes(a, new Date(), new Date(Date.now() + 5000));
    const fresh = await m.apply([{ path: a, te: 1, unet: 1 }]);
    assert.equal(fresh.fromCache, false);
    const viaB = copyWeights();
    await new LoraMerger(viaB, quiet).apply([{ path: kohyaB, te: 1, unet: 1 }]);
    assert.deepEqual(sameBits(w, viaB), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('cache bounded by bytes: a zero budget caches nothing and still restores exactly', async () => {
  const w = copyWeights();
  const m = new LoraMerger(w, { ...quiet, cacheBytes: 0 });
  await m.apply([{ path: kohyaA, te: 1, unet: 1 }]);
  await m.apply([{ path: kohyaB, te: 1, unet: 1 }]);
  const again = await m.apply([{ path: kohyaA, te: 1, unet: 1 }]);
  assert.equal(again.fromCache, false);
  assert.equal(m.cache.entries, 0);
  await m.restore();
  assert.deepEqual(sameBits(w, base.tensors), []);
});

test('modules and keys that match nothing are reported by name and logged, the rest still applies', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-merge-'));
  try {
    const { tensors, metadata } = await readAll(kohyaA);
    const out = new Map([...tensors].map(([k, v]) => [k, { dtype: 'F32' as const, shape: v.shape, data: v.data }]));
    const bogus = 'lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q';
    out.set(`${bogus}.lora_down.weight`, { dtype: 'F32', shape: [4, 32], data: new Float32Array(128) });
    out.set(`${bogus}.lora_up.weight`, { dtype: 'F32', shape: [32, 4], data: new Float32Array(128) });
    out.set('something_else.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    const file = join(dir, 'odd.safetensors');
    await writeSafetensors(file, out, metadata);
    const logs: string[] = [];
    const w = copyWeights();
    const r = await new LoraMerger(w, { log: (s) => logs.push(s) }).apply([{ path: file, te: 1, unet: 1, name: 'odd' }]);
    assert.deepEqual(r.loras[0]!.unmatched.sort(), [bogus, 'something_else.weight'].sort());
    assert.equal(r.loras[0]!.applied, Object.keys(keymap.kohya_lora_module_to_ldm_weight).filter((k) => tensors.has(`${k}.alpha`)).length);
    assert.equal(logs.length, 1);
    assert.match(logs[0]!, /odd/);
    assert.match(logs[0]!, new RegExp(bogus));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a missing LoRA file is a UserError and leaves the active stack in place', async () => {
  const w = copyWeights();
  const m = new LoraMerger(w, quiet);
  await m.apply([{ path: kohyaA, te: 1, unet: 1 }]);
  const snapshot = new Map([...w].map(([k, v]) => [k, { shape: v.shape, data: v.data.slice() }]));
  await assert.rejects(m.apply([{ path: join(sd, 'nope.safetensors'), te: 1, unet: 1 }]), /nope\.safetensors/);
  assert.deepEqual(sameBits(w, snapshot), []);
  const back = await m.apply([{ path: kohyaA, te: 1, unet: 1 }]);
  assert.deepEqual(back.changedKeys, []);
});

test('DyLoRA dyn=n uses the first n ranks with the full alpha/r scale', async () => {
  const { tensors } = await readAll(kohyaB);
  const w = copyWeights();
  await new LoraMerger(w, quiet).apply([{ path: kohyaB, te: 1, unet: 1, dyn: 3 }]);
  const [module, ldm] = Object.entries(keymap.kohya_lora_module_to_ldm_weight).find(([k]) => tensors.has(`${k}.lora_down.weight`))!;
  const down = tensors.get(`${module}.lora_down.weight`)!, up = tensors.get(`${module}.lora_up.weight`)!;
  const alpha = tensors.get(`${module}.alpha`)!.data[0]!;
  const [r, inn] = down.shape as [number, number];
  const got = w.get(ldm)!.data, b = base.tensors.get(ldm)!.data;
  let worst = 0;
  for (let o = 0; o < up.shape[0]!; o++) for (let j = 0; j < inn; j++) {
    let s = 0;
    for (let k = 0; k < 3; k++) s += up.data[o * r + k]! * down.data[k * inn + j]!;
    worst = Math.max(worst, Math.abs(got[o * inn + j]! - (b[o * inn + j]! + (alpha / r) * s)));
  }
  assert.ok(r > 3 && worst < 1e-6, `worst ${worst}`);
});

test('SD2 OpenCLIP fused in_proj: q/k/v LoRAs patch their row thirds; SDXL-style LDM-named UNet modules resolve', async () => {
  const d = 8;
  const P = 'cond_stage_model.model.transformer.resblocks.0.';
  const weights: WeightMap = new Map([
    [`${P}attn.in_proj_weight`, { shape: [3 * d, d], data: new Float32Array(3 * d * d).fill(1) }],
    [`${P}attn.out_proj.weight`, { shape: [d, d], data: new Float32Array(d * d).fill(1) }],
    [`${P}mlp.c_fc.weight`, { shape: [4 * d, d], data: new Float32Array(4 * d * d).fill(1) }],
  ]);
  const one = (v: number) => ({ shape: [1, d], data: new Float32Array(d).fill(v) });
  const lora = new Map<string, { shape: number[]; data: Float32Array }>();
  const vals: Record<string, number> = { k_proj: 2, out_proj: 3 };
  for (const [name, v] of Object.entries(vals)) {
    lora.set(`lora_te_text_model_encoder_layers_0_self_attn_${name}.lora_down.weight`, one(1));
    lora.set(`lora_te_text_model_encoder_layers_0_self_attn_${name}.lora_up.weight`, { shape: [d, 1], data: new Float32Array(d).fill(v) });
  }
  const parsed = parseLoraTensors(lora, {});
  const index = new TargetIndex(weights.keys(), (k) => weights.get(k)?.shape);
  const rep = await applyStack(weights, [{ lora: parsed, te: 0.5, unet: 1 }], index);
  assert.deepEqual(rep.layers[0]!.unmatched, []);
  const inProj = weights.get(`${P}attn.in_proj_weight`)!.data;
  assert.ok(inProj.subarray(0, d * d).every((x) => x === 1), 'q rows untouched');
  assert.ok(inProj.subarray(d * d, 2 * d * d).every((x) => x === 2), 'k rows += 0.5·2');
  assert.ok(inProj.subarray(2 * d * d).every((x) => x === 1), 'v rows untouched');
  assert.ok(weights.get(`${P}attn.out_proj.weight`)!.data.every((x) => x === 2.5));

  const tiny = new TargetIndex(base.tensors.keys());
  assert.equal(
    tiny.resolve('unet', parseModuleName('lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k')!.path)?.key,
    keymap.kohya_lora_module_to_ldm_weight['lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k'],
  );
});

test('LoCon on a 3x3 conv and a LyCORIS full (diff + diff_b) module through the model index, both GEMM paths', async () => {
  const P = 'model.diffusion_model.';
  const conv = `${P}input_blocks.1.0.in_layers.2.weight`, lin = `${P}time_embed.0.weight`, bias = `${P}time_embed.0.bias`;
  const [out, inn, kh, kw] = base.tensors.get(conv)!.shape as [number, number, number, number];
  const r = 4;
  const seq = (n: number, f: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * f));
  const down = { shape: [r, inn, kh, kw], data: seq(r * inn * kh * kw, 0.37) };
  const up = { shape: [out, r, 1, 1], data: seq(out * r, 0.91) };
  const lw = base.tensors.get(lin)!;
  const diff = { shape: lw.shape, data: seq(lw.data.length, 0.13) };
  const diffB = { shape: [lw.shape[0]!], data: seq(lw.shape[0]!, 0.7) };
  const lora = parseLoraTensors(new Map([
    ['lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight', down],
    ['lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight', up],
    ['lora_unet_down_blocks_0_resnets_0_conv1.alpha', { shape: [], data: new Float32Array([2]) }],
    ['lora_unet_time_embedding_linear_1.diff', diff],
    ['lora_unet_time_embedding_linear_1.diff_b', diffB],
  ]), {});
  assert.deepEqual(lora.modules.map((m) => m.kind).sort(), ['full', 'locon']);
  const index = new TargetIndex(base.tensors.keys());
  for (const ortMinElements of [0, Infinity]) {
    const w = copyWeights();
    const rep = await applyStack(w, [{ lora, te: 1, unet: 0.5 }], index, { ortMinElements });
    assert.equal(rep.layers[0]!.applied, 2);
    assert.deepEqual([...rep.touched].sort(), [conv, bias, lin].sort());
    let worst = 0;
    const b = base.tensors.get(conv)!.data, got = w.get(conv)!.data;
    for (let o = 0; o < out; o++) for (let i = 0; i < inn * kh * kw; i++) {
      let s = 0;
      for (let k = 0; k < r; k++) s += up.data[o * r + k]! * down.data[k * inn * kh * kw + i]!;
      worst = Math.max(worst, Math.abs(got[o * inn * kh * kw + i]! - (b[o * inn * kh * kw + i]! + 0.5 * (2 / r) * s)));
    }
    const lb = lw.data, lg = w.get(lin)!.data;
    for (let i = 0; i < lb.length; i++) worst = Math.max(worst, Math.abs(lg[i]! - (lb[i]! + 0.5 * diff.data[i]!)));
    const bb = base.tensors.get(bias)!.data, bg = w.get(bias)!.data;
    for (let i = 0; i < bb.length; i++) worst = Math.max(worst, Math.abs(bg[i]! - (bb[i]! + 0.5 * diffB.data[i]!)));
    assert.ok(worst < 1e-5, `ortMinElements ${ortMinElements}: worst ${worst}`);
  }
});
