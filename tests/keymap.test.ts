import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import {
  diffusersToLdm,
  diffusersToLdmTarget,
  inferUnetLayout,
  inferVaeLayout,
  ldmToDiffusers,
  type ModelPart,
} from '../engine/sd/keymap.ts';

const keymap = JSON.parse(readFileSync(join(fixturesDir, 'sd-tiny/keymap.json'), 'utf8')) as {
  diffusers_to_ldm: Record<string, string>;
  kohya_lora_module_to_ldm_weight: Record<string, string>;
};
const entries = Object.entries(keymap.diffusers_to_ldm);
const partOf = (k: string) => k.slice(0, k.indexOf('.')) as ModelPart;
const diffusersKeys = (part: ModelPart) => entries.filter(([k]) => partOf(k) === part).map(([k]) => k);
const ldmKeys = (part: ModelPart) => entries.filter(([k]) => partOf(k) === part).map(([, v]) => v);

test('layout inferred from LDM keys equals the one inferred from diffusers keys', () => {
  const a = inferUnetLayout(ldmKeys('unet'));
  const b = inferUnetLayout(diffusersKeys('unet'));
  assert.deepEqual(a, b);
  const config = JSON.parse(readFileSync(join(fixturesDir, 'sd-tiny/diffusers/unet/config.json'), 'utf8'));
  assert.equal(a.levels, config.block_out_channels.length);
  assert.equal(a.layersPerBlock, config.layers_per_block);
  assert.deepEqual(a.attention, config.down_block_types.map((t: string) => t.startsWith('CrossAttn')));
  const vaeConfig = JSON.parse(readFileSync(join(fixturesDir, 'sd-tiny/diffusers/vae/config.json'), 'utf8'));
  assert.equal(inferVaeLayout(ldmKeys('vae')).levels, vaeConfig.block_out_channels.length);
  assert.deepEqual(inferVaeLayout(ldmKeys('vae')), inferVaeLayout(diffusersKeys('vae')));
});

test('every diffusers_to_ldm entry maps both ways', () => {
  const layouts = { unet: inferUnetLayout(ldmKeys('unet')), vae: inferVaeLayout(ldmKeys('vae')) };
  const wrong: string[] = [];
  for (const [full, ldm] of entries) {
    const part = partOf(full);
    const arch = part === 'unet' ? layouts.unet : part === 'vae' ? layouts.vae : undefined;
    const bare = full.slice(part.length + 1);
    if (diffusersToLdm(part, bare, arch) !== ldm) wrong.push(`${full} -> ${diffusersToLdm(part, bare, arch)} (want ${ldm})`);
    if (diffusersToLdm(part, full, arch) !== ldm) wrong.push(`prefixed ${full}`);
    const back = ldmToDiffusers(ldm, layouts);
    if (back?.part !== part || back.name !== bare) wrong.push(`${ldm} <- ${JSON.stringify(back)} (want ${bare})`);
  }
  assert.deepEqual(wrong, []);
  assert.equal(entries.length > 0, true);
});

test('every kohya_lora_module_to_ldm_weight entry, from the module name alone', async () => {
  const { loraModuleToLdmKey } = await import('../engine/lora/names.ts');
  const unet = inferUnetLayout(ldmKeys('unet'));
  const wrong = Object.entries(keymap.kohya_lora_module_to_ldm_weight).filter(([m, ldm]) => loraModuleToLdmKey(m, unet) !== ldm);
  assert.deepEqual(wrong, []);
  assert.ok(Object.keys(keymap.kohya_lora_module_to_ldm_weight).length > 0);
});

test('VAE attention q/k/v/proj_out weights are flagged for the Linear <-> 1x1 conv reshape, nothing else is', () => {
  const vae = inferVaeLayout(ldmKeys('vae'));
  const flagged = diffusersKeys('vae').filter((k) => diffusersToLdmTarget('vae', k, vae)?.conv1x1);
  assert.deepEqual(
    flagged.sort(),
    diffusersKeys('vae').filter((k) => /mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(k)).sort(),
  );
  assert.ok(flagged.length > 0);
});

test('names outside the model give undefined', () => {
  const unet = inferUnetLayout(ldmKeys('unet'));
  assert.equal(diffusersToLdm('unet', `down_blocks.${unet.levels}.resnets.0.conv1.weight`, unet), undefined);
  assert.equal(diffusersToLdm('unet', 'down_blocks.0.resnets.9.conv1.weight', unet), undefined);
  assert.equal(diffusersToLdm('unet', 'something.else', unet), undefined);
  const noAttn = unet.attention.indexOf(false);
  assert.equal(diffusersToLdm('unet', `down_blocks.${noAttn}.attentions.0.proj_in.weight`, unet), undefined);
  assert.equal(diffusersToLdm('text_encoder', 'logit_scale', undefined), undefined);
});

test('SD1.5 layout reproduces the reference table, incl. upsamplers and SDXL-style attention', () => {
  const sd15 = { levels: 4, layersPerBlock: 2, attention: [true, true, true, false], midAttention: true };
  const P = 'model.diffusion_model.';
  const cases: [string, string][] = [
    ['down_blocks.1.attentions.1.proj_in.weight', 'input_blocks.5.1.proj_in.weight'],
    ['down_blocks.0.resnets.0.conv1.weight', 'input_blocks.1.0.in_layers.2.weight'],
    ['down_blocks.1.resnets.0.conv_shortcut.weight', 'input_blocks.4.0.skip_connection.weight'],
    ['down_blocks.0.downsamplers.0.conv.weight', 'input_blocks.3.0.op.weight'],
    ['up_blocks.0.upsamplers.0.conv.weight', 'output_blocks.2.1.conv.weight'],
    ['up_blocks.1.upsamplers.0.conv.weight', 'output_blocks.5.2.conv.weight'],
    ['mid_block.resnets.1.time_emb_proj.weight', 'middle_block.2.emb_layers.1.weight'],
    ['up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_out.0.weight', 'output_blocks.11.1.transformer_blocks.0.attn1.to_out.0.weight'],
  ];
  for (const [d, l] of cases) {
    assert.equal(diffusersToLdm('unet', d, sd15), P + l);
    assert.equal(ldmToDiffusers(P + l, { unet: sd15 })?.name, d);
  }
  const sdxl = { levels: 3, layersPerBlock: 2, attention: [false, true, true], midAttention: true };
  assert.equal(diffusersToLdm('unet', 'up_blocks.0.upsamplers.0.conv.weight', sdxl), P + 'output_blocks.2.2.conv.weight');
  assert.equal(diffusersToLdm('unet', 'down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight', sdxl), P + 'input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight');
  assert.equal(diffusersToLdm('unet', 'add_embedding.linear_2.bias', sdxl), P + 'label_emb.0.2.bias');
  assert.deepEqual(inferUnetLayout(['input_blocks.4.1.proj_in.weight', 'input_blocks.3.0.op.weight', 'input_blocks.8.1.norm.weight', 'output_blocks.0.1.norm.weight', 'middle_block.1.norm.weight']), sdxl);
});

test('SD2 OpenCLIP text encoder: q/k/v are row slices of the fused in_proj', () => {
  const t = diffusersToLdmTarget('text_encoder', 'text_model.encoder.layers.3.self_attn.k_proj.weight', { kind: 'openclip', width: 1024 });
  assert.deepEqual(t, { key: 'cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight', rows: [1024, 2048] });
  assert.equal(diffusersToLdm('text_encoder', 'encoder.layers.3.mlp.fc2.bias', { kind: 'openclip', width: 1024 }), 'cond_stage_model.model.transformer.resblocks.3.mlp.c_proj.bias');
  // transformers 5 saves CLIPTextModel without the text_model. prefix.
  assert.equal(diffusersToLdm('text_encoder', 'encoder.layers.0.mlp.fc1.weight', undefined), 'cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight');
});

test('SD 1.5 shapes: kohya default targets (192 UNet + 72 TE modules) all resolve, LoCon names included', async () => {
  const { SD15, syntheticShapes } = await import('../engine/sd/synthetic.ts');
  const { TargetIndex } = await import('../engine/lora/targets.ts');
  const { kohyaModuleName, moduleForLdmKey, parseModuleName } = await import('../engine/lora/names.ts');
  const shapes = syntheticShapes(SD15);
  const index = new TargetIndex(shapes.keys(), (k) => shapes.get(k));
  const layout = index.unetLayout!;
  assert.deepEqual(layout, { levels: 4, layersPerBlock: 2, attention: [true, true, true, false], midAttention: true });
  const unet = [...shapes.keys()].filter((k) => /\.1\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))\.weight$/.test(k));
  const te = [...shapes.keys()].filter((k) => /self_attn\.(q|k|v|out)_proj\.weight$|mlp\.fc[12]\.weight$/.test(k));
  assert.equal(unet.length, 192);
  assert.equal(te.length, 72);
  for (const key of [...unet, ...te]) {
    const name = kohyaModuleName(moduleForLdmKey(key, layout)!);
    const m = parseModuleName(name)!;
    assert.equal(index.resolve(m.part, m.path)?.key, key, name);
  }
  const P = 'model.diffusion_model.';
  const locon: [string, string][] = [
    ['lora_unet_down_blocks_0_resnets_0_conv1', 'input_blocks.1.0.in_layers.2.weight'],
    ['lora_unet_down_blocks_1_resnets_0_conv_shortcut', 'input_blocks.4.0.skip_connection.weight'],
    ['lora_unet_down_blocks_0_downsamplers_0_conv', 'input_blocks.3.0.op.weight'],
    ['lora_unet_up_blocks_0_upsamplers_0_conv', 'output_blocks.2.1.conv.weight'],
    ['lora_unet_up_blocks_1_upsamplers_0_conv', 'output_blocks.5.2.conv.weight'],
    ['lora_unet_mid_block_resnets_1_time_emb_proj', 'middle_block.2.emb_layers.1.weight'],
    ['lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_ff_net_0_proj', 'output_blocks.3.1.transformer_blocks.0.ff.net.0.proj.weight'],
  ];
  for (const [name, ldm] of locon) {
    const m = parseModuleName(name)!;
    assert.equal(index.resolve(m.part, m.path)?.key, P + ldm, name);
  }
});
