import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clipTextEncoder, clipUsedLayers } from '../engine/models/clip-text.ts';
import { weightContext } from '../engine/models/layers.ts';
import { evaluate } from '../engine/runtime/session.ts';
import { Checkpoint, type WeightMap } from '../engine/sd/checkpoint.ts';
import type { ClipTextArch } from '../engine/sd/arch.ts';
import { tinySd2Config, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';

// The OpenCLIP layout (fused in_proj, resblocks, ln_final) against the transformers layout built from the
// very same random numbers with q, k and v cut out of in_proj by hand: both graphs must agree, and the
// OpenCLIP tower must stop at its penultimate block as SD2's config does.

let dir: string;
let arch: ClipTextArch;
let open: WeightMap;
const T = 77;
const B = 2;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sd2-te-'));
  const path = join(dir, 'sd2.safetensors');
  await writeSyntheticCheckpoint(path, tinySd2Config({ vocab: 300, textWidth: 128, textLayers: 4 }), { seed: 5, dtype: 'F32' });
  const ck = await Checkpoint.open(path);
  arch = ck.arch.textEncoder;
  open = await ck.readAll(['cond_stage_model.']);
  await ck.close();
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** The same weights under transformers' CLIPTextModel names, keeping the first `layers` blocks. */
function asHf(w: WeightMap, width: number, layers: number): WeightMap {
  const O = 'cond_stage_model.model.';
  const H = 'cond_stage_model.transformer.text_model.';
  const out: WeightMap = new Map();
  const put = (k: string, from: string) => out.set(H + k, w.get(O + from)!);
  put('embeddings.token_embedding.weight', 'token_embedding.weight');
  put('embeddings.position_embedding.weight', 'positional_embedding');
  put('final_layer_norm.weight', 'ln_final.weight');
  put('final_layer_norm.bias', 'ln_final.bias');
  for (let i = 0; i < layers; i++) {
    const o = `transformer.resblocks.${i}.`;
    const h = `encoder.layers.${i}.`;
    for (const [a, b] of [['layer_norm1', 'ln_1'], ['layer_norm2', 'ln_2'], ['self_attn.out_proj', 'attn.out_proj'], ['mlp.fc1', 'mlp.c_fc'], ['mlp.fc2', 'mlp.c_proj']]) {
      put(`${h}${a}.weight`, `${o}${b}.weight`);
      put(`${h}${a}.bias`, `${o}${b}.bias`);
    }
    const wq = w.get(`${O}${o}attn.in_proj_weight`)!.data;
    const bq = w.get(`${O}${o}attn.in_proj_bias`)!.data;
    ['q_proj', 'k_proj', 'v_proj'].forEach((name, j) => {
      out.set(`${H}${h}self_attn.${name}.weight`, { shape: [width, width], data: wq.slice(j * width * width, (j + 1) * width * width) });
      out.set(`${H}${h}self_attn.${name}.bias`, { shape: [width], data: bq.slice(j * width, (j + 1) * width) });
    });
  }
  return out;
}

async function run(w: WeightMap, a: ClipTextArch, ids: BigInt64Array, clipSkip: number): Promise<Float32Array> {
  const ctx = weightContext({ shape: (k) => w.get(k)?.shape, data: (k) => w.get(k)!.data });
  const { hidden } = clipTextEncoder(ctx, a, { batch: B, tokens: T, clipSkip });
  const [out] = await evaluate([hidden], { input_ids: ids }, { threads: 1 });
  return out!.data as Float32Array;
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function randomIds(vocab: number, seed: number): BigInt64Array {
  let s = seed;
  return BigInt64Array.from({ length: B * T }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return BigInt(s % vocab);
  });
}

test('the tiny SD2 tower is read as OpenCLIP: fused qkv, gelu, SD2 family width and heads', () => {
  assert.equal(arch.layout, 'openclip');
  assert.equal(arch.activation, 'gelu');
  assert.equal(arch.width, open.get('cond_stage_model.model.ln_final.weight')!.shape[0]);
  assert.equal(arch.layers, 4);
  assert.equal(clipUsedLayers(arch), arch.layers - 1);
  assert.ok(arch.heads > 1, 'the check needs several heads to catch a wrong q/k/v split');
});

test('OpenCLIP fused-qkv hidden states equal the transformers layout with q/k/v split out (penultimate block, ln_final)', async () => {
  const ids = randomIds(arch.vocabSize, 11);
  const used = clipUsedLayers(arch);
  // diffusers' SD2 text encoder: the penultimate block is its last one.
  const hfArch: ClipTextArch = { ...arch, layout: 'hf', layers: used, skipLastLayer: false };
  const ours = await run(open, arch, ids, 1);
  const ref = await run(asHf(open, arch.width, used), hfArch, ids, 1);
  let scale = 0;
  for (const v of ref) scale = Math.max(scale, Math.abs(v));
  assert.ok(scale > 0.5, `reference states are not trivially small (${scale})`);
  assert.ok(maxDiff(ours, ref) < 1e-4, `openclip vs hf: ${maxDiff(ours, ref)}`);

  // Running every block (no penultimate rule) gives other states: the rule is observable.
  const all = await run(asHf(open, arch.width, arch.layers), { ...arch, layout: 'hf', skipLastLayer: false }, ids, 1);
  assert.ok(maxDiff(all, ours) > 1e-2, 'the last resblock must not run');
});

test('clip skip counts from the penultimate block in the OpenCLIP layout', async () => {
  const ids = randomIds(arch.vocabSize, 12);
  const used = clipUsedLayers(arch);
  const skip2 = await run(open, arch, ids, 2);
  const ref = await run(asHf(open, arch.width, used - 1), { ...arch, layout: 'hf', layers: used - 1, skipLastLayer: false }, ids, 1);
  assert.ok(maxDiff(skip2, ref) < 1e-4, `clip skip 2: ${maxDiff(skip2, ref)}`);
  assert.ok(maxDiff(skip2, await run(open, arch, ids, 1)) > 1e-2, 'clip skip 2 must change the states');
  await assert.rejects(run(open, arch, ids, used + 1), /clip skip must be an integer between 1 and 3/);
});
