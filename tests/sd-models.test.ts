import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { Goldens } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';

const dir = join(fixturesDir, 'sd-tiny');
let golden: Goldens;
let single: StableDiffusion;
let folder: StableDiffusion;

before(async () => {
  golden = await Goldens.open(dir);
  single = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
  folder = await StableDiffusion.load(join(dir, 'diffusers'), { threads: 1 });
});

async function tokenIds() {
  const t = await golden.readRaw('golden/inputs.safetensors', 'token_ids');
  return { ids: t.data as BigInt64Array, batch: t.shape[0]!, tokens: t.shape[1]! };
}

test('text encoder matches transformers at clip skip 1 and 2 (single file and diffusers folder)', async () => {
  const { ids, batch, tokens } = await tokenIds();
  for (const m of [single, folder]) {
    await golden.expectClose(await m.encodeText(ids, batch, tokens, 1), 'golden/text_encoder.safetensors', 'last_hidden_state');
    await golden.expectClose(await m.encodeText(ids, batch, tokens, 2), 'golden/text_encoder.safetensors', 'clip_skip_2');
  }
});

test('UNet eps matches diffusers', async () => {
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const ctx = await golden.read('golden/text_encoder.safetensors', 'last_hidden_state');
  const [batch, , height, width] = x.shape as [number, number, number, number];
  const timesteps = Array.from(t.data as BigInt64Array, Number);
  for (const m of [single, folder]) {
    const eps = await m.predict(x.data, timesteps, ctx.data, { batch, height, width, tokens: ctx.shape[1]! });
    await golden.expectClose(eps, 'golden/unet.safetensors', 'eps_base');
  }
});

test('VAE decode and encode match diffusers', async () => {
  const z = await golden.read('golden/inputs.safetensors', 'vae_latents');
  const scale = single.arch.vae.scalingFactor;
  const [batch, , height, width] = z.shape as [number, number, number, number];
  const img = await single.decode(z.data.map((v) => v / scale), { batch, height, width });
  await golden.expectClose(img, 'golden/vae.safetensors', 'decode');
  const image = await golden.read('golden/inputs.safetensors', 'vae_image');
  const [ib, , ih, iw] = image.shape as [number, number, number, number];
  const mean = await single.encode(image.data, { batch: ib, height: ih, width: iw });
  await golden.expectClose(mean, 'golden/vae.safetensors', 'encode_mean');
});

test('clip skip beyond the layer count is a clear error', async () => {
  const { ids, batch, tokens } = await tokenIds();
  await assert.rejects(single.encodeText(ids, batch, tokens, single.arch.textEncoder.layers + 1), /clip skip must be/);
});

test('tiling makes the UNet equivariant to circular shifts (seamless textures)', async () => {
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const ctx = await golden.read('golden/text_encoder.safetensors', 'last_hidden_state');
  const [B, C, H, W] = x.shape as [number, number, number, number];
  // Shift by a multiple of the UNet's total downsampling so every level sees a whole-pixel shift.
  const shift = 2 ** (single.arch.unet.channelMult.length - 1);
  const roll = (a: Float32Array) => {
    const out = new Float32Array(a.length);
    for (let bc = 0; bc < B * C; bc++)
      for (let y = 0; y < H; y++) for (let xx = 0; xx < W; xx++) out[bc * H * W + y * W + ((xx + shift) % W)] = a[bc * H * W + y * W + xx]!;
    return out;
  };
  const dims = { batch: B, height: H, width: W, tokens: ctx.shape[1]! };
  const t = [500, 500];
  const tiled = await single.predict(x.data, t, ctx.data, { ...dims, tiling: true });
  const tiledShifted = await single.predict(roll(x.data), t, ctx.data, { ...dims, tiling: true });
  const rolled = roll(tiled);
  assert.ok(tiledShifted.every((v, i) => Math.abs(v - rolled[i]!) < 1e-4), 'tiled UNet is not shift-equivariant');
  const plain = await single.predict(x.data, t, ctx.data, dims);
  const plainShifted = await single.predict(roll(x.data), t, ctx.data, dims);
  const rolledPlain = roll(plain);
  assert.ok(plainShifted.some((v, i) => Math.abs(v - rolledPlain[i]!) > 1e-3), 'zero padding should break equivariance');
});

test('a separate VAE file (bare LDM keys) replaces the checkpoint\'s own', async () => {
  const { mkdtemp } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { SafetensorsFile, writeSafetensors } = await import('../engine/safetensors/index.ts');
  const src = await SafetensorsFile.open(join(dir, 'sd-tiny.safetensors'));
  const vae = new Map<string, { dtype: 'F16'; shape: number[]; data: Uint16Array }>();
  const { f32ToF16 } = await import('../engine/safetensors/float.ts');
  for (const name of src.names().filter((n) => n.startsWith('first_stage_model.'))) {
    const data = await src.readFloat32(name);
    // Shift the decoder's output bias by exactly 1 (exact in float16 for these magnitudes? no: compare loosely).
    if (name === 'first_stage_model.decoder.conv_out.bias') for (let i = 0; i < data.length; i++) data[i] = data[i]! + 1;
    vae.set(name.slice('first_stage_model.'.length), { dtype: 'F16', shape: src.info(name).shape, data: f32ToF16(data) });
  }
  await src.close();
  const path = join(await mkdtemp(join(tmpdir(), 'vae-')), 'shifted.vae.safetensors');
  await writeSafetensors(path, vae);
  const withVae = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, vae: path, ...(await sdTinySingleFileOptions()) });
  const z = await golden.read('golden/inputs.safetensors', 'vae_latents');
  const [batch, , height, width] = z.shape as [number, number, number, number];
  const scale = withVae.arch.vae.scalingFactor;
  const img = await withVae.decode(z.data.map((v) => v / scale), { batch, height, width });
  const ref = await golden.read('golden/vae.safetensors', 'decode');
  // The VAE came from the separate file: float16 storage rounds the weights, the shifted bias adds 1.
  let meanShift = 0;
  for (let i = 0; i < img.length; i++) meanShift += img[i]! - ref.data[i]!;
  meanShift /= img.length;
  assert.ok(Math.abs(meanShift - 1) < 0.02, `mean shift ${meanShift}`);
});
