import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { SafetensorsFile, writeSafetensors } from '../engine/safetensors/index.ts';
import { loadLora } from '../engine/lora/load.ts';
import { kohyaMetadata, writeKohyaLora, writePeftLora } from '../engine/lora/write.ts';
import { convertLora } from '../engine/lora/convert.ts';
import { addnetHash } from '../engine/lora/hash.ts';
import { describeLora } from '../engine/lora/describe.ts';
import type { F32Tensor, LoraModule } from '../engine/lora/types.ts';

const sd = join(fixturesDir, 'sd-tiny');
const kohyaA = join(sd, 'lora-kohya/lora_a.safetensors');
const peftA = join(sd, 'lora-diffusers/lora_a/pytorch_lora_weights.safetensors');

async function tensorsOf(path: string): Promise<Map<string, { dtype: string; shape: number[]; bytes: Buffer }>> {
  const f = await SafetensorsFile.open(path);
  const out = new Map<string, { dtype: string; shape: number[]; bytes: Buffer }>();
  for (const [n, i] of f.tensors) out.set(n, { dtype: i.dtype, shape: i.shape, bytes: await f.readBytes(n) });
  await f.close();
  return out;
}

function assertSameTensors(a: Map<string, { dtype: string; shape: number[]; bytes: Buffer }>, b: typeof a, what: string): void {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${what}: key sets`);
  for (const [k, t] of a) {
    const u = b.get(k)!;
    assert.equal(t.dtype, u.dtype, `${what}: ${k} dtype`);
    assert.deepEqual(t.shape, u.shape, `${what}: ${k} shape`);
    assert.ok(t.bytes.equals(u.bytes), `${what}: ${k} values`);
  }
}

/** A PEFT file's `lora_adapter_metadata` (its LoraConfig as JSON); a file without it fails the test. */
async function adapterMetadata(path: string): Promise<Record<string, unknown>> {
  const f = await SafetensorsFile.open(path);
  await f.close();
  const text = f.metadata['lora_adapter_metadata'];
  assert.ok(text !== undefined, `${path} has no lora_adapter_metadata`);
  return JSON.parse(text) as Record<string, unknown>;
}

async function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'lora-write-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('kohya fixture → PEFT equals the fixture PEFT file (keys, values, rank/alpha metadata); and back bit-exact', () =>
  withTmp(async (dir) => {
    const peft = await convertLora({ input: kohyaA, output: join(dir, 'peft') });
    assert.equal(peft.to, 'peft');
    assertSameTensors(await tensorsOf(peft.file), await tensorsOf(peftA), 'kohya→peft');
    const ours = await adapterMetadata(peft.file);
    const theirs = await adapterMetadata(peftA);
    for (const k of ['unet.r', 'unet.lora_alpha', 'text_encoder.r', 'text_encoder.lora_alpha']) assert.equal(ours[k], theirs[k], k);

    const back = await convertLora({ input: peft.file, output: join(dir, 'back.safetensors') });
    assert.equal(back.to, 'kohya');
    assertSameTensors(await tensorsOf(back.file), await tensorsOf(kohyaA), 'peft→kohya');
    // The diffusers fixture itself converts to the kohya fixture too.
    const direct = await convertLora({ input: join(sd, 'lora-diffusers/lora_a'), output: join(dir, 'direct.safetensors'), to: 'kohya' });
    assertSameTensors(await tensorsOf(direct.file), await tensorsOf(kohyaA), 'fixture peft→kohya');
  }));

let seed = 7;
function rand(shape: number[]): F32Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    data[i] = seed / 2147483648 - 0.5;
  }
  return { shape, data };
}

function mod(part: LoraModule['part'], path: string, down: F32Tensor, up: F32Tensor, alpha: number, extra: Partial<LoraModule> = {}): LoraModule {
  const rank = down.shape[0]!;
  return { name: '', part, path, kind: down.shape.length === 4 && down.shape[2]! > 1 ? 'locon' : 'lora', tensors: { down, up }, rank, alpha, scale: alpha / rank, ...extra };
}

test('modules we write (Linear, 1x1 and 3x3 conv, mixed ranks, DoRA) read back identically in both formats', () =>
  withTmp(async (dir) => {
    const modules = [
      mod('unet', 'down_blocks.0.attentions.0.proj_in', rand([4, 32, 1, 1]), rand([32, 4, 1, 1]), 2),
      mod('unet', 'down_blocks.0.resnets.0.conv1', rand([8, 32, 3, 3]), rand([32, 8, 1, 1]), 8),
      mod('unet', 'mid_block.attentions.0.transformer_blocks.0.attn2.to_k', rand([4, 32]), rand([64, 4]), 1.5),
      mod('te', 'text_model.encoder.layers.1.mlp.fc1', rand([4, 32]), rand([37, 4]), 4),
    ];
    const withDora = [...modules, mod('te', 'text_model.encoder.layers.0.self_attn.q_proj', rand([4, 32]), rand([32, 4]), 4, { dora: { magnitude: rand([1, 32]), axis: 'in' } })];
    const k = join(dir, 'k.safetensors');
    await writeKohyaLora(k, withDora, kohyaMetadata({ outputName: 'k', networkDim: 4, networkAlpha: 4, baseModelVersion: 'sd_v1' }));
    const rk = await loadLora(k);
    assert.equal(rk.format, 'kohya');
    assert.deepEqual(rk.unknownKeys, []);
    const byPath = new Map(rk.modules.map((m) => [m.path, m]));
    for (const m of withDora) {
      const r = byPath.get(m.path)!;
      assert.ok(r, m.path);
      assert.equal(r.part, m.part);
      assert.equal(r.scale, m.scale, `${m.path} scale`);
      assert.deepEqual(r.tensors.down, m.tensors.down);
      assert.deepEqual(r.tensors.up, m.tensors.up);
      assert.deepEqual(r.dora, m.dora);
    }
    const p = join(dir, 'p.safetensors');
    await writePeftLora(p, modules);
    const rp = await loadLora(p);
    assert.equal(rp.format, 'peft');
    for (const m of modules) {
      const r = rp.modules.find((x) => x.path === m.path)!;
      assert.equal(r.scale, m.scale, `${m.path} peft scale (rank_pattern/alpha_pattern)`);
      assert.deepEqual(r.tensors.down, m.tensors.down);
    }
    await assert.rejects(writePeftLora(join(dir, 'x.safetensors'), withDora), /dora_scale/);
    // F16 output halves the bytes and rounds values to F16.
    const h = join(dir, 'h.safetensors');
    await writeKohyaLora(h, modules, {}, { dtype: 'F16' });
    const rh = await loadLora(h);
    const d0 = rh.modules.find((x) => x.path === modules[0]!.path)!.tensors.down!.data;
    assert.ok(d0.every((v, i) => Math.abs(v - modules[0]!.tensors.down!.data[i]!) <= 1e-3));
    assert.ok(d0.some((v, i) => v !== modules[0]!.tensors.down!.data[i]!));
  }));

test('kohya metadata is all strings in sd-scripts form; sshs hashes are those kohya defines', () =>
  withTmp(async (dir) => {
    const md = kohyaMetadata({
      outputName: 'style',
      networkDim: 32,
      networkAlpha: 16,
      baseModelVersion: 'sd_v1',
      tagFrequency: { '10_style': { cat: 3, 'a dog': 1 } },
      trainingStartedAt: 1700000000.25,
      trainingFinishedAt: 1700000100,
      extra: { ss_num_epochs: 10, ss_learning_rate: 0.0001, ss_cache_latents: true, ss_noise_offset: null },
    });
    assert.deepEqual(
      { dim: md.ss_network_dim, alpha: md.ss_network_alpha, v2: md.ss_v2, start: md.ss_training_started_at, end: md.ss_training_finished_at, lr: md.ss_learning_rate, cache: md.ss_cache_latents, no: md.ss_noise_offset, mod: md.ss_network_module },
      { dim: '32', alpha: '16.0', v2: 'False', start: '1700000000.25', end: '1700000100.0', lr: '0.0001', cache: 'True', no: 'None', mod: 'networks.lora' },
    );
    assert.deepEqual(JSON.parse(md.ss_tag_frequency!), { '10_style': { cat: 3, 'a dog': 1 } });

    // Large enough that the legacy window (64 KiB at 1 MiB) lies inside the tensor data.
    const modules = [mod('unet', 'mid_block.attentions.0.proj_out', rand([48, 4096]), rand([4096, 48]), 16)];
    const file = join(dir, 'style.safetensors');
    const hashes = await writeKohyaLora(file, modules, { ...md, not_ss: 'x' });
    const f = await SafetensorsFile.open(file);
    const stored = f.metadata;
    const order = [...f.tensors.values()].sort((a, b) => a.offset - b.offset).map((t) => t.name);
    const tensors = new Map();
    for (const n of order) tensors.set(n, { dtype: f.info(n).dtype, shape: f.info(n).shape, data: await f.readBytes(n) });
    await f.close();
    assert.equal(stored.sshs_model_hash, hashes.sshs_model_hash);
    assert.equal(stored.sshs_model_hash, await addnetHash(file));
    // kohya: legacy hash of the in-memory save that keeps only ss_* metadata.
    const ssOnly = join(dir, 'ss-only.safetensors');
    await writeSafetensors(ssOnly, tensors, Object.fromEntries(Object.entries(md)));
    const bytes = await readFile(ssOnly);
    assert.ok(bytes.length > 0x110000);
    assert.equal(stored.sshs_legacy_hash, createHash('sha256').update(bytes.subarray(0x100000, 0x110000)).digest('hex').slice(0, 8));
    assert.equal(stored.not_ss, 'x');
    const desc = await describeLora(file);
    assert.equal(desc.sdVersion, 'SD1');
    assert.deepEqual(desc.ranks, [48]);
    assert.deepEqual(desc.alphas, [16]);
    assert.equal(desc.hash, hashes.sshs_model_hash);
    assert.equal(desc.shortHash, hashes.sshs_model_hash.slice(0, 12));
    assert.equal(desc.targets[0]!.name, 'lora_unet_mid_block_attentions_0_proj_out');
  }));

test('describeLora on the fixtures: parts, rank, alpha and format agree with the raw files', async () => {
  // Expected values straight from the files: module counts by prefix, ranks from lora_down shapes, alphas from tensors.
  const raw = await tensorsOf(kohyaA);
  const downs = [...raw.entries()].filter(([k]) => k.endsWith('.lora_down.weight'));
  const count = (prefix: string) => downs.filter(([k]) => k.startsWith(prefix)).length;
  const alphas = [...raw.entries()].filter(([k]) => k.endsWith('.alpha')).map(([, t]) => new Float32Array(t.bytes.buffer, t.bytes.byteOffset, 1)[0]!);
  const ranks = downs.map(([, t]) => t.shape[0]!);
  const a = await describeLora(kohyaA);
  assert.equal(a.format, 'kohya');
  assert.deepEqual(a.parts, { te: count('lora_te_'), unet: count('lora_unet_') });
  assert.ok(a.parts.te! > 0 && a.parts.unet! > 0);
  assert.deepEqual(a.ranks, [...new Set(ranks)].sort((x, y) => x - y));
  assert.deepEqual(a.alphas, [...new Set(alphas)].sort((x, y) => x - y));
  const alphaOf = (down: string) => {
    const t = raw.get(down.replace(/\.lora_down\.weight$/, '.alpha'))!;
    return new Float32Array(t.bytes.buffer, t.bytes.byteOffset, 1)[0]!;
  };
  assert.deepEqual(a.scales, [...new Set(downs.map(([k, t]) => alphaOf(k) / t.shape[0]!))].sort((x, y) => x - y));
  // The fixture has no sshs_model_hash: the hash is sha256 of its tensor bytes, as A1111 computes it.
  const bytes = await readFile(kohyaA);
  const body = bytes.subarray(8 + Number(bytes.readBigUInt64LE(0)));
  assert.equal(a.hash, createHash('sha256').update(body).digest('hex'));

  const peftFile = join(sd, 'lora-diffusers/lora_b/pytorch_lora_weights.safetensors');
  const praw = await tensorsOf(peftFile);
  const cfg = await adapterMetadata(peftFile);
  const p = await describeLora(join(sd, 'lora-diffusers/lora_b'));
  assert.equal(p.format, 'peft');
  assert.deepEqual(p.parts, { unet: [...praw.keys()].filter((k) => k.startsWith('unet.') && k.endsWith('.lora_A.weight')).length });
  assert.deepEqual(p.ranks, [cfg['unet.r']]);
  assert.deepEqual(p.scales, [Number(cfg['unet.lora_alpha']) / Number(cfg['unet.r'])]);
});

test('SDXL: kohya LDM-named UNet modules and te1/te2 convert to diffusers names and back to kohya LDM names', () =>
  withTmp(async (dir) => {
    const t = (s: number[]) => rand(s);
    const modules = [
      mod('unet', 'input_blocks.4.1.transformer_blocks.1.attn2.to_k', t([4, 32]), t([64, 4]), 4),
      mod('unet', 'output_blocks.2.2.conv', t([4, 64, 3, 3]), t([64, 4, 1, 1]), 4),
      mod('te', 'text_model.encoder.layers.0.self_attn.q_proj', t([4, 32]), t([32, 4]), 4),
      mod('te2', 'text_model.encoder.layers.0.mlp.fc1', t([4, 32]), t([128, 4]), 4),
    ];
    const k = join(dir, 'xl.safetensors');
    await writeKohyaLora(k, modules, kohyaMetadata({ outputName: 'xl', networkDim: 4, networkAlpha: 4, baseModelVersion: 'sdxl_base_v1-0' }));
    const names = (await loadLora(k)).modules.map((m) => m.name).sort();
    assert.deepEqual(names, [
      'lora_te1_text_model_encoder_layers_0_self_attn_q_proj',
      'lora_te2_text_model_encoder_layers_0_mlp_fc1',
      'lora_unet_input_blocks_4_1_transformer_blocks_1_attn2_to_k',
      'lora_unet_output_blocks_2_2_conv',
    ]);
    const p = await convertLora({ input: k, output: join(dir, 'xl-peft') });
    const peftNames = (await loadLora(p.file)).modules.map((m) => m.name).sort();
    assert.deepEqual(peftNames, [
      'text_encoder.text_model.encoder.layers.0.self_attn.q_proj',
      'text_encoder_2.text_model.encoder.layers.0.mlp.fc1',
      'unet.down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k',
      'unet.up_blocks.0.upsamplers.0.conv',
    ]);
    const back = await convertLora({ input: p.file, output: join(dir, 'xl-back.safetensors') });
    assertSameTensors(await tensorsOf(back.file), await tensorsOf(k), 'sdxl round trip');
  }));
