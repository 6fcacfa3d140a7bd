import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { Checkpoint } from '../engine/sd/checkpoint.ts';
import { unetHeadsAt } from '../engine/sd/arch.ts';

const sd = join(fixturesDir, 'sd-tiny');
const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));

test('single-file and diffusers folder give the same architecture, read from shapes and configs', async () => {
  // The UNet's heads come from the sidecar yaml; the text encoder's, for this custom tower, are given.
  const single = await Checkpoint.open(join(sd, 'sd-tiny.safetensors'), await sdTinySingleFileOptions());
  const folder = await Checkpoint.open(join(sd, 'diffusers'));
  const unetCfg = await readJson(join(sd, 'diffusers/unet/config.json'));
  const teCfg = await readJson(join(sd, 'diffusers/text_encoder/config.json'));
  const vaeCfg = await readJson(join(sd, 'diffusers/vae/config.json'));
  for (const ck of [single, folder]) {
    const { unet, textEncoder, vae } = ck.arch;
    assert.equal(ck.arch.family, 'sd1');
    assert.deepEqual(unet.channelMult.map((m) => m * unet.modelChannels), unetCfg.block_out_channels);
    assert.equal(unet.numResBlocks, unetCfg.layers_per_block);
    assert.equal(unet.contextDim, unetCfg.cross_attention_dim);
    assert.equal(unet.useLinearProjection, unetCfg.use_linear_projection);
    assert.deepEqual(
      unet.attentionLevels,
      unetCfg.down_block_types.map((t: string) => t.startsWith('CrossAttn')),
    );
    for (let l = 0; l < unet.channelMult.length; l++) {
      const heads = Array.isArray(unetCfg.attention_head_dim) ? unetCfg.attention_head_dim[l] : unetCfg.attention_head_dim;
      assert.equal(unetHeadsAt(unet, l), heads);
    }
    assert.equal(textEncoder.width, teCfg.hidden_size);
    assert.equal(textEncoder.layers, teCfg.num_hidden_layers);
    assert.equal(textEncoder.heads, teCfg.num_attention_heads);
    assert.equal(textEncoder.intermediate, teCfg.intermediate_size);
    assert.equal(textEncoder.vocabSize, teCfg.vocab_size);
    assert.equal(textEncoder.activation, teCfg.hidden_act);
    assert.deepEqual(vae.channelMult.map((m) => m * vae.channels), vaeCfg.block_out_channels);
    assert.equal(vae.numResBlocks, vaeCfg.layers_per_block);
    assert.equal(vae.zChannels, vaeCfg.latent_channels);
    assert.equal(vae.scalingFactor, vaeCfg.scaling_factor);
  }
  await single.close();
  await folder.close();
});

test('a diffusers folder exposes every LDM tensor of the single file, with identical values', async () => {
  const single = await Checkpoint.open(join(sd, 'sd-tiny.safetensors'));
  const folder = await Checkpoint.open(join(sd, 'diffusers'));
  const missing = single.keys().filter((k) => !folder.has(k));
  assert.deepEqual(missing, []);
  for (const k of single.keys()) {
    const a = await single.read(k);
    const b = await folder.read(k);
    assert.deepEqual(b.shape, a.shape, k);
    assert.deepEqual(b.data, a.data, k);
  }
  await single.close();
  await folder.close();
});

test('pickled checkpoints are refused with a message that says how to convert', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'ckpt-'));
  const p = join(dir, 'model.ckpt');
  await writeFile(p, 'not opened');
  await assert.rejects(Checkpoint.open(p), /pickle.*safetensors/s);
});

test('a file without SD tensors names the missing tensor', async () => {
  await assert.rejects(
    Checkpoint.open(join(fixturesDir, 'llama-tiny/model/model.safetensors')),
    /not a Stable Diffusion|no text encoder found/,
  );
});

test('OpenCLIP towers skip their last block only when the file stores the full tower', async () => {
  const { inferClipTextArch } = await import('../engine/sd/arch.ts');
  const { clipUsedLayers } = await import('../engine/models/clip-text.ts');
  const P = 'cond_stage_model.model.';
  const shapes = (layers: number, projection: boolean) => {
    const m = new Map<string, number[]>([
      [`${P}token_embedding.weight`, [49408, 1024]],
      [`${P}positional_embedding`, [77, 1024]],
    ]);
    for (let i = 0; i < layers; i++) {
      m.set(`${P}transformer.resblocks.${i}.ln_1.weight`, [1024]);
      m.set(`${P}transformer.resblocks.${i}.mlp.c_fc.weight`, [4096, 1024]);
    }
    if (projection) m.set(`${P}text_projection`, [1024, 1024]);
    return (k: string) => m.get(k);
  };
  // A released SD2 checkpoint: 24 blocks stored, the penultimate output used.
  assert.equal(clipUsedLayers(inferClipTextArch(shapes(24, true))), 23);
  // Converted from diffusers: the 23 blocks SD2 uses, no projection.
  assert.equal(clipUsedLayers(inferClipTextArch(shapes(23, false))), 23);
});
