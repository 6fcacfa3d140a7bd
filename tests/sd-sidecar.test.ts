import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { fixturesDir } from './support/paths.ts';
import { Checkpoint } from '../engine/sd/checkpoint.ts';
import { unetHeadsAt } from '../engine/sd/arch.ts';
import { parseSidecar, readSidecar, sidecarNativeSize, sidecarYamlPath } from '../engine/sd/sidecar.ts';
import { UserError } from '../engine/util/errors.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { Goldens } from './support/golden.ts';

const sd = join(fixturesDir, 'sd-tiny');
const single = join(sd, 'sd-tiny.safetensors');

/** A copy of the fixture's single file (a link) with the given sidecar text, or none. */
async function withSidecar<T>(yaml: string | undefined, fn: (path: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-'));
  try {
    const path = join(dir, 'model.safetensors');
    await symlink(single, path);
    if (yaml !== undefined) await writeFile(sidecarYamlPath(path), yaml);
    return await fn(path);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const fixtureYaml = () => readFile(sidecarYamlPath(single), 'utf8');

test("the fixture's LDM sidecar gives the UNet the diffusers folder's head count at every level", async () => {
  const cfg = await readSidecar(single);
  assert.ok(cfg, 'sd-tiny ships a sidecar yaml');
  assert.equal(cfg.form, 'ldm');
  const one = await Checkpoint.open(single);
  const folder = await Checkpoint.open(join(sd, 'diffusers'));
  try {
    const levels = one.arch.unet.channelMult.length;
    const heads = (a: typeof one.arch) => Array.from({ length: levels }, (_, l) => unetHeadsAt(a.unet, l));
    assert.deepEqual(heads(one.arch), heads(folder.arch));
    // Sizes the yaml states agree with the tensors (else opening would have failed).
    assert.equal(cfg.unet.modelChannels, one.arch.unet.modelChannels);
    assert.deepEqual(cfg.unet.channelMult, one.arch.unet.channelMult);
    assert.equal(cfg.unet.contextDim, one.arch.unet.contextDim);
    assert.equal(one.arch.vae.scalingFactor, cfg.scaleFactor ?? one.arch.vae.scalingFactor);
  } finally {
    await one.close();
    await folder.close();
  }
});

test("the sidecar's head count is what the UNet runs with: the fixture's yaml matches the diffusers eps, another count does not", async () => {
  const golden = await Goldens.open(sd);
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const ctx = await golden.read('golden/text_encoder.safetensors', 'last_hidden_state');
  const [batch, , height, width] = x.shape as [number, number, number, number];
  const eps = async (yaml: string) =>
    withSidecar(yaml, async (path) => {
      const m = await StableDiffusion.load(path, { threads: 1 });
      return m.predict(x.data, Array.from(t.data as BigInt64Array, Number), ctx.data, { batch, height, width, tokens: ctx.shape[1]! });
    });
  await golden.expectClose(await eps(await fixtureYaml()), 'golden/unet.safetensors', 'eps_base');
  // Another head count at every level: one head, or two where the fixture has one everywhere (channels are
  // multiples of the 32 norm groups, so both always divide them).
  const doc = parse(await fixtureYaml());
  const unet = doc.model.params.unet_config.params;
  const folder = await Checkpoint.open(join(sd, 'diffusers'));
  const realHeads = folder.arch.unet.channelMult.map((_, l) => unetHeadsAt(folder.arch.unet, l));
  await folder.close();
  delete unet.num_head_channels;
  unet.num_heads = realHeads.every((h) => h === 1) ? 2 : 1;
  const wrong = await eps(stringify(doc));
  const ref = (await golden.read('golden/unet.safetensors', 'eps_base')).data;
  const maxDiff = wrong.reduce((m, v, i) => Math.max(m, Math.abs(v - ref[i]!)), 0);
  const tol = golden.tolerance('golden/unet.safetensors', 'eps_base');
  assert.ok(maxDiff > 100 * (tol.atol + tol.rtol), `a wrong head count changed eps by only ${maxDiff}`);
});

test('without a sidecar an SD 1.x single file gets the family rule: 8 heads at every level', async () => {
  await withSidecar(undefined, async (path) => {
    const ck = await Checkpoint.open(path);
    try {
      assert.deepEqual(ck.arch.unet.heads, { numHeads: ck.arch.unet.channelMult.map(() => 8) });
    } finally {
      await ck.close();
    }
  });
});

test('num_head_channels (fixed head width) wins over num_heads, as in ldm', async () => {
  const doc = parse(await fixtureYaml());
  const unet = doc.model.params.unet_config.params;
  const width = unet.model_channels; // level 0's channels: one head of the whole width there
  unet.num_head_channels = width;
  await withSidecar(stringify(doc), async (path) => {
    const ck = await Checkpoint.open(path);
    try {
      assert.deepEqual(ck.arch.unet.heads, { headDim: width });
      assert.equal(unetHeadsAt(ck.arch.unet, 0), 1);
    } finally {
      await ck.close();
    }
  });
});

test('a sidecar that disagrees with the tensors is refused, naming the file and the key', async () => {
  for (const [key, bump] of [
    ['model_channels', (v: number) => v * 2],
    ['context_dim', (v: number) => v + 1],
    ['num_res_blocks', (v: number) => v + 1],
  ] as const) {
    const doc = parse(await fixtureYaml());
    const unet = doc.model.params.unet_config.params;
    unet[key] = bump(unet[key]);
    await withSidecar(stringify(doc), async (path) => {
      await assert.rejects(Checkpoint.open(path), (e: unknown) =>
        e instanceof UserError && e.message.includes(sidecarYamlPath(path)) && e.message.includes(`unet_config.params.${key}`));
    });
  }
});

test('bad values name their key; python tags and alias bombs are refused as data', () => {
  assert.throws(() => parseSidecar('model:\n  params:\n    unet_config:\n      params:\n        num_heads: eight\n', 'x.yaml'),
    (e: unknown) => e instanceof UserError && /x\.yaml: model\.params\.unet_config\.params\.num_heads must be an integer/.test(e.message));
  assert.throws(() => parseSidecar('model: !!python/object/apply:os.system ["echo hi"]\n', 'x.yaml'),
    (e: unknown) => e instanceof UserError && /x\.yaml: not a plain-data YAML config.*tag/i.test(e.message));
  const bomb = ['a: &a [x,x,x,x,x,x,x,x]', ...'bcdefgh'.split('').map((c, i) => `${c}: &${c} [${Array(8).fill(`*${'abcdefgh'[i]}`).join(',')}]`), 'model: {}'].join('\n');
  assert.throws(() => parseSidecar(bomb, 'x.yaml'), (e: unknown) => e instanceof UserError && /x\.yaml/.test(e.message));
  assert.throws(() => parseSidecar('- a list\n', 'x.yaml'), (e: unknown) => e instanceof UserError && /top-level 'model'/.test(e.message));
});

test("the native size is LatentDiffusion's latent image_size times the autoencoder's factor, not the UNet's image_size", async () => {
  // The released configs' UNet image_size is 32 whatever the model's size: v1-inference says 64 / 32 (512²),
  // v2-inference-v 96 / 32 (768²).
  const ldm = (latent: number, unetSize: number, chMult: string) =>
    parseSidecar(
      [
        'model:',
        '  target: ldm.models.diffusion.ddpm.LatentDiffusion',
        '  params:',
        `    image_size: ${latent}`,
        '    unet_config:',
        '      target: ldm.modules.diffusionmodules.openaimodel.UNetModel',
        `      params: {image_size: ${unetSize}, model_channels: 320, num_heads: 8}`,
        '    first_stage_config:',
        '      target: ldm.models.autoencoder.AutoencoderKL',
        `      params: {embed_dim: 4, ddconfig: {z_channels: 4, ch: 128, ch_mult: ${chMult}, num_res_blocks: 2}}`,
      ].join('\n'),
      'v.yaml',
    );
  assert.equal(sidecarNativeSize(ldm(64, 32, '[1, 2, 4, 4]')), 512);
  assert.equal(sidecarNativeSize(ldm(96, 32, '[1, 2, 4, 4]')), 768);
  assert.equal(sidecarNativeSize(ldm(16, 32, '[1, 2]')), 32);
  const fixture = parse(await fixtureYaml()) as { model: { params: { image_size?: number; first_stage_config: { params: { ddconfig: { ch_mult: number[] } } } } } };
  const p = fixture.model.params;
  const expected = p.image_size === undefined ? undefined : p.image_size * 2 ** (p.first_stage_config.params.ddconfig.ch_mult.length - 1);
  assert.equal(sidecarNativeSize(parseSidecar(await fixtureYaml(), 'fixture.yaml')), expected);
  assert.equal(sidecarNativeSize(parseSidecar('model:\n  target: sgm.models.diffusion.DiffusionEngine\n  params: {}\n', 'sdxl.yaml')), undefined);
});

test('SGM form (SDXL): per-level depth with the middle taking the last, head width, adm channels, conditioner layers', () => {
  const cfg = parseSidecar(
    [
      'model:',
      '  target: sgm.models.diffusion.DiffusionEngine',
      '  params:',
      '    scale_factor: 0.13025',
      '    denoiser_config:',
      '      target: sgm.modules.diffusionmodules.denoiser.DiscreteDenoiser',
      '      params:',
      '        num_idx: 1000',
      '        scaling_config: {target: sgm.modules.diffusionmodules.denoiser_scaling.VScaling}',
      '    network_config:',
      '      target: sgm.modules.diffusionmodules.openaimodel.UNetModel',
      '      params: {adm_in_channels: 2816, num_classes: sequential, model_channels: 320, channel_mult: [1, 2, 4],',
      '               attention_resolutions: [4, 2], num_res_blocks: 2, num_head_channels: 64, num_heads: -1,',
      '               use_linear_in_transformer: true, transformer_depth: [0, 2, 10], context_dim: 2048}',
      '    conditioner_config:',
      '      target: sgm.modules.GeneralConditioner',
      '      params:',
      '        emb_models:',
      '        - {input_key: txt, target: sgm.modules.encoders.modules.FrozenCLIPEmbedder, params: {layer: hidden, layer_idx: 11}}',
      '        - {input_key: txt, target: sgm.modules.encoders.modules.FrozenOpenCLIPEmbedder2, params: {layer: penultimate, always_return_pooled: true, legacy: false}}',
      '        - {input_key: original_size_as_tuple, target: sgm.modules.encoders.modules.ConcatTimestepEmbedderND, params: {outdim: 256}}',
    ].join('\n'),
    'sdxl.yaml',
  );
  assert.equal(cfg.form, 'sgm');
  assert.equal(cfg.prediction, 'v_prediction');
  assert.equal(cfg.schedule.timesteps, 1000);
  assert.deepEqual(cfg.unet.heads, { headDim: 64 });
  assert.deepEqual(cfg.unet.transformerDepth, [0, 2, 10]);
  assert.equal(cfg.unet.transformerDepthMiddle, 10);
  assert.equal(cfg.unet.admInChannels, 2816);
  assert.equal(cfg.unet.numClasses, 'sequential');
  assert.equal(cfg.unet.useLinearInTransformer, true);
  assert.deepEqual(cfg.textEncoders.map((e) => [e.inputKey, e.layer, e.layerIdx, e.outdim]), [
    ['txt', 'hidden', 11, undefined],
    ['txt', 'penultimate', undefined, undefined],
    ['original_size_as_tuple', undefined, undefined, 256],
  ]);
});
