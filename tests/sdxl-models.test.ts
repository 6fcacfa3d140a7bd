import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { Goldens } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { labelEmbedding, sizeConditionVector, timestepFeatures } from '../engine/models/unet.ts';
import { input } from '../engine/graph/ops-core.ts';
import { evaluate } from '../engine/runtime/session.ts';

// SDXL against diffusers: both text encoders (penultimate hidden states, pooled projection, the concatenated
// context), the size-conditioning sinusoids, UNet eps and the VAE, from the diffusers folder and the SGM
// single file (its UNet heads from the sidecar yaml beside it).

const dir = join(fixturesDir, 'sdxl-tiny');
let golden: Goldens;
let models: { name: string; m: StableDiffusion }[];

before(async () => {
  golden = await Goldens.open(dir);
  models = [
    { name: 'diffusers folder', m: await StableDiffusion.load(join(dir, 'diffusers'), { threads: 1 }) },
    { name: 'SGM single file', m: await StableDiffusion.load(join(dir, 'sdxl-tiny.safetensors'), { threads: 1 }) },
  ];
});

async function ids(key: string) {
  const t = await golden.readRaw('golden/inputs.safetensors', key);
  return { ids: t.data as BigInt64Array, batch: t.shape[0]!, tokens: t.shape[1]! };
}

test('SDXL checkpoints are recognised with both text encoders and size conditioning', () => {
  for (const { name, m } of models) {
    assert.equal(m.arch.family, 'sdxl', name);
    const te2 = m.arch.textEncoder2!;
    assert.ok(te2, `${name}: second text encoder`);
    assert.equal(m.arch.unet.contextDim, m.arch.textEncoder.width + te2.width, name);
    assert.equal(m.arch.unet.adm!.pooledDim, te2.projection!.dim, name);
    const cfg = golden.manifest.config as { vae_scaling_factor: number };
    assert.equal(m.arch.vae.scalingFactor, cfg.vae_scaling_factor, name);
  }
});

test('SDXL text encoders: penultimate hidden states, pooled projection and context match transformers', async () => {
  const a = await ids('token_ids_te1');
  const b = await ids('token_ids_te2');
  const file = 'golden/text_encoders.safetensors';
  for (const { m } of models) {
    const r = await m.encodeTextSdxl(a.ids, b.ids, a.batch, a.tokens);
    await golden.expectClose(r.hidden1, file, 'te1_penultimate');
    await golden.expectClose(r.hidden2, file, 'te2_penultimate');
    await golden.expectClose(r.pooled, file, 'text_embeds');
  }
});

test('size conditioning sinusoids and eps match diffusers', async () => {
  const timeIds = await golden.read('golden/inputs.safetensors', 'unet_time_ids');
  const [B] = timeIds.shape as [number, number];
  const m = models[0]!.m;
  const adm = m.arch.unet.adm!;
  const fourier = timestepFeatures(timeIds.data, adm.sizeEmbedDim);
  await golden.expectClose(fourier, 'golden/unet.safetensors', 'time_ids_embedding');
  const pooled = await golden.read('golden/text_encoders.safetensors', 'text_embeds');
  const y = sizeConditionVector(pooled.data, timeIds.data, adm);
  assert.equal(y.length, B * adm.inChannels);
  // The UNet's eps barely depends on this embedding in the tiny model, so it is checked on its own.
  for (const { m: model } of models) {
    const [added] = await evaluate([labelEmbedding(model.context(), input('y', 'float32', [B, adm.inChannels]))], { y }, { threads: 1 });
    await golden.expectClose(added!.data as Float32Array, 'golden/unet.safetensors', 'add_embedding');
  }

  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const ctx = await golden.read('golden/text_encoders.safetensors', 'context');
  const [batch, , height, width] = x.shape as [number, number, number, number];
  const timesteps = Array.from(t.data as BigInt64Array, Number);
  for (const { m: model } of models) {
    const eps = await model.predict(x.data, timesteps, ctx.data, { batch, height, width, tokens: ctx.shape[1]! }, { pooled: pooled.data, sizes: timeIds.data });
    await golden.expectClose(eps, 'golden/unet.safetensors', 'eps_base');
  }
});

test('SDXL VAE decode and encode match diffusers', async () => {
  const z = await golden.read('golden/inputs.safetensors', 'vae_latents');
  const image = await golden.read('golden/inputs.safetensors', 'vae_image');
  for (const { m } of models) {
    const scale = m.arch.vae.scalingFactor;
    const [batch, , height, width] = z.shape as [number, number, number, number];
    await golden.expectClose(await m.decode(z.data.map((v) => v / scale), { batch, height, width }), 'golden/vae.safetensors', 'decode');
    const [ib, , ih, iw] = image.shape as [number, number, number, number];
    await golden.expectClose(await m.encode(image.data, { batch: ib, height: ih, width: iw }), 'golden/vae.safetensors', 'encode_mean');
  }
});

test('a checkpoint with tensors the networks would not read is refused, naming them; an fp16 file loads', async () => {
  const { mkdtemp, copyFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { SafetensorsFile, writeSafetensors } = await import('../engine/safetensors/index.ts');
  const { f32ToF16 } = await import('../engine/safetensors/float.ts');
  const tmp = await mkdtemp(join(tmpdir(), 'sdxl-extra-'));
  try {
    const src = await SafetensorsFile.open(join(dir, 'sdxl-tiny.safetensors'));
    const f32 = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
    const f16 = new Map<string, { dtype: 'F16'; shape: number[]; data: Uint16Array }>();
    for (const name of src.names()) {
      const data = await src.readFloat32(name);
      f32.set(name, { dtype: 'F32', shape: src.info(name).shape, data });
      f16.set(name, { dtype: 'F16', shape: src.info(name).shape, data: f32ToF16(data) });
    }
    await src.close();
    // A block this loader does not build (as a refiner's or a future family's would be) must not be dropped silently.
    f32.set('model.diffusion_model.extra_embed.weight', { dtype: 'F32', shape: [4, 4], data: new Float32Array(16) });
    f32.set('conditioner.embedders.2.model.proj', { dtype: 'F32', shape: [2], data: new Float32Array(2) });
    await writeSafetensors(join(tmp, 'extra.safetensors'), f32);
    await copyFile(join(dir, 'sdxl-tiny.yaml'), join(tmp, 'extra.yaml'));
    await assert.rejects(
      StableDiffusion.load(join(tmp, 'extra.safetensors'), { threads: 1 }),
      (e: Error) => /2 tensor\(s\)/.test(e.message) && e.message.includes("'model.diffusion_model.extra_embed.weight'") && e.message.includes("'conditioner.embedders.2.model.proj'"),
    );

    await writeSafetensors(join(tmp, 'half.safetensors'), f16);
    await copyFile(join(dir, 'sdxl-tiny.yaml'), join(tmp, 'half.yaml'));
    const half = await StableDiffusion.load(join(tmp, 'half.safetensors'), { threads: 1 });
    assert.equal(half.arch.family, 'sdxl');
    const a = await ids('token_ids_te1');
    const b = await ids('token_ids_te2');
    const r = await half.encodeTextSdxl(a.ids, b.ids, a.batch, a.tokens);
    // float16 weights: the golden within a loose bound (rounding of the weights, not the maths, differs).
    const ref = await golden.read('golden/text_encoders.safetensors', 'text_embeds');
    let worst = 0;
    for (let i = 0; i < ref.data.length; i++) worst = Math.max(worst, Math.abs(r.pooled[i]! - ref.data[i]!));
    assert.ok(worst < 2e-2, `fp16 pooled embedding off by ${worst}`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test('a separate VAE file with diffusers names (as the SDXL fp16-fix VAE is published) replaces the checkpoint\'s own', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { SafetensorsFile, writeSafetensors } = await import('../engine/safetensors/index.ts');
  const src = await SafetensorsFile.open(join(dir, 'diffusers', 'vae', 'diffusion_pytorch_model.safetensors'));
  const vae = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
  for (const name of src.names()) {
    const data = await src.readFloat32(name);
    // Marks this file's decoder: its output moves by exactly 1.
    if (name === 'decoder.conv_out.bias') for (let i = 0; i < data.length; i++) data[i] = data[i]! + 1;
    vae.set(name, { dtype: 'F32', shape: src.info(name).shape, data });
  }
  await src.close();
  const tmp = await mkdtemp(join(tmpdir(), 'sdxl-vae-'));
  try {
    const path = join(tmp, 'sdxl_vae.safetensors');
    await writeSafetensors(path, vae);
    const m = await StableDiffusion.load(join(dir, 'sdxl-tiny.safetensors'), { threads: 1, vae: path });
    assert.equal(m.arch.vae.scalingFactor, (golden.manifest.config as { vae_scaling_factor: number }).vae_scaling_factor);
    const z = await golden.read('golden/inputs.safetensors', 'vae_latents');
    const [batch, , height, width] = z.shape as [number, number, number, number];
    const img = await m.decode(z.data.map((v) => v / m.arch.vae.scalingFactor), { batch, height, width });
    const ref = await golden.read('golden/vae.safetensors', 'decode');
    assertCloseShift(img, ref.data, 1);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

function assertCloseShift(a: Float32Array, b: Float32Array, shift: number): void {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]! - shift));
  assert.ok(worst < 1e-4, `decoded image is not the golden moved by ${shift}: off by ${worst}`);
}
