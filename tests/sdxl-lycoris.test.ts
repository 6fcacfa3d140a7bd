// LyCORIS files for SDXL (LoHa on both text encoders, LoKr on the UNet, kohya-style SDXL names) merge through
// the same code as SD 1.x, into the diffusers folder and into the SGM single file alike: the OpenCLIP tower's
// q projection is a row slice of its fused in_proj there, and must receive exactly the folder's update.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { assertClose } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraMerger } from '../engine/lora/merge.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { rng, uniform } from './support/random.ts';

const dir = join(fixturesDir, 'sdxl-tiny');
let folder: StableDiffusion;
let single: StableDiffusion;
let tmp: string;

before(async () => {
  folder = await StableDiffusion.load(join(dir, 'diffusers'), { threads: 1 });
  single = await StableDiffusion.load(join(dir, 'sdxl-tiny.safetensors'), { threads: 1 });
  tmp = await mkdtemp(join(tmpdir(), 'sdxl-lycoris-'));
});

const r0 = rng(1);
const randn = (n: number, _label: string, scale: number): Float32Array => uniform(r0, n, scale);

function matmul(a: Float32Array, b: Float32Array, m: number, k: number, n: number): Float32Array {
  const out = new Float32Array(m * n);
  for (let i = 0; i < m; i++) for (let p = 0; p < k; p++) for (let j = 0; j < n; j++) out[i * n + j]! += a[i * k + p]! * b[p * n + j]!;
  return out;
}

test('SDXL LoHa (te1, te2) and LoKr (UNet) merge identically into the diffusers folder and the SGM single file', async () => {
  const te2 = folder.arch.textEncoder2!;
  const W = te2.width;
  const r = 2;
  const alpha = 1;
  const hada = (prefix: string, out: number, inn: number) => ({
    [`${prefix}.hada_w1_a`]: { dtype: 'F32' as const, shape: [out, r], data: randn(out * r, `${prefix}1a`, 0.5) },
    [`${prefix}.hada_w1_b`]: { dtype: 'F32' as const, shape: [r, inn], data: randn(r * inn, `${prefix}1b`, 0.5) },
    [`${prefix}.hada_w2_a`]: { dtype: 'F32' as const, shape: [out, r], data: randn(out * r, `${prefix}2a`, 0.5) },
    [`${prefix}.hada_w2_b`]: { dtype: 'F32' as const, shape: [r, inn], data: randn(r * inn, `${prefix}2b`, 0.5) },
    [`${prefix}.alpha`]: { dtype: 'F32' as const, shape: [], data: new Float32Array([alpha]) },
  });
  const toK = 'model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight';
  const [kOut, kIn] = single.weights.get(toK)!.shape as [number, number];
  const w1 = [2, 2];
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {
    ...hada('lora_te2_text_model_encoder_layers_0_self_attn_q_proj', W, W),
    ...hada('lora_te1_text_model_encoder_layers_1_mlp_fc1', folder.arch.textEncoder.intermediate, folder.arch.textEncoder.width),
    'lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lokr_w1': { dtype: 'F32' as const, shape: w1, data: randn(4, 'k1', 1) },
    'lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lokr_w2': { dtype: 'F32' as const, shape: [kOut / w1[0]!, kIn / w1[1]!], data: randn((kOut * kIn) / 4, 'k2', 0.2) },
  };
  const path = join(tmp, 'xl_lycoris.safetensors');
  await writeSafetensors(path, tensors, { ss_base_model_version: 'sdxl_base_v1-0', ss_network_module: 'lycoris.kohya' });

  const deltas = async (m: StableDiffusion, keys: { key: string; rows?: [number, number] }[]) => {
    const before = keys.map(({ key }) => m.weights.get(key)!.data.slice());
    const res = await new LoraMerger(m.weights, { family: m.arch.family, log: () => {} }).apply([{ path, te: 1, unet: 1, name: 'lycoris' }]);
    assert.deepEqual(res.loras[0]!.unmatched, []);
    assert.deepEqual(res.loras[0]!.errors, []);
    return keys.map(({ key, rows }, i) => {
      const after = m.weights.get(key)!.data;
      const cols = m.weights.get(key)!.shape[1]!;
      const [a, b] = rows ?? [0, after.length / cols];
      return after.slice(a * cols, b * cols).map((v, j) => v - before[i]![a * cols + j]!);
    });
  };
  const [qF, fcF, kF] = await deltas(folder, [
    { key: 'conditioner.embedders.1.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight' },
    { key: 'conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc1.weight' },
    { key: toK },
  ]);
  const [qS, kvS, fcS, kS] = await deltas(single, [
    { key: 'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight', rows: [0, W] },
    { key: 'conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight', rows: [W, 3 * W] },
    { key: 'conditioner.embedders.0.transformer.text_model.encoder.layers.1.mlp.fc1.weight' },
    { key: toK },
  ]);
  // LoHa: ΔW = (w1a·w1b) ⊙ (w2a·w2b) · alpha / r.
  const p = 'lora_te2_text_model_encoder_layers_0_self_attn_q_proj';
  const a = matmul(tensors[`${p}.hada_w1_a`]!.data, tensors[`${p}.hada_w1_b`]!.data, W, r, W);
  const b = matmul(tensors[`${p}.hada_w2_a`]!.data, tensors[`${p}.hada_w2_b`]!.data, W, r, W);
  const expected = a.map((v, i) => v * b[i]! * (alpha / r));
  assertClose(qF!, expected, { atol: 1e-5, rtol: 1e-4 }, 'te2 q_proj LoHa (folder)');
  assertClose(qS!, expected, { atol: 1e-5, rtol: 1e-4 }, 'te2 in_proj q rows LoHa (single file)');
  assert.ok(kvS!.every((v) => v === 0), 'the fused k and v rows are untouched');
  assertClose(fcS!, fcF!, { atol: 1e-6, rtol: 0 }, 'te1 fc1 LoHa');
  assert.ok(fcF!.some((v) => Math.abs(v) > 1e-3));
  assertClose(kS!, kF!, { atol: 1e-6, rtol: 0 }, 'UNet to_k LoKr');
  assert.ok(kF!.some((v) => Math.abs(v) > 1e-3));
  await rm(tmp, { recursive: true, force: true });
});
