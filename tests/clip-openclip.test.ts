import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openClipArch } from '../engine/clip/arch.ts';
import { ClipModel } from '../engine/clip/model.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../engine/safetensors/index.ts';
import { Goldens } from './support/golden.ts';
import { fixturesDir } from './support/paths.ts';

// The OpenCLIP single-file layout (what laion's ViT-H/14 and ViT-bigG/14 ship, and SD 2 / SDXL were trained
// with): clip-tiny's weights renamed to OpenCLIP's keys here (q/k/v fused into in_proj, projections stored
// transposed), so both towers must still reproduce the transformers goldens.

const dir = join(fixturesDir, 'clip-tiny');
let tmp: string;
let file: string;
let cfg: { text: { num_attention_heads: number; hidden_size: number }; vision: { num_attention_heads: number; hidden_size: number } };

function transpose(t: { shape: number[]; data: Float32Array }): TensorToWrite {
  const [r, c] = t.shape as [number, number];
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = t.data[i * c + j]!;
  return { dtype: 'F32', shape: [c, r], data: out };
}

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'openclip-'));
  cfg = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).config;
  const f = await SafetensorsFile.open(join(dir, 'model/model.safetensors'));
  const hf = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const k of f.names()) hf.set(k, { shape: [...f.info(k).shape], data: await f.readFloat32(k) });
  await f.close();
  const out = new Map<string, TensorToWrite>();
  const put = (to: string, from: string) => out.set(to, { dtype: 'F32', shape: hf.get(from)!.shape, data: hf.get(from)!.data });
  const tower = (oc: string, h: string) => {
    for (let i = 0; hf.has(`${h}encoder.layers.${i}.layer_norm1.weight`); i++) {
      const L = `${h}encoder.layers.${i}.`;
      const R = `${oc}transformer.resblocks.${i}.`;
      for (const [a, b] of [['ln_1', 'layer_norm1'], ['ln_2', 'layer_norm2'], ['attn.out_proj', 'self_attn.out_proj'], ['mlp.c_fc', 'mlp.fc1'], ['mlp.c_proj', 'mlp.fc2']]) {
        put(`${R}${a}.weight`, `${L}${b}.weight`);
        put(`${R}${a}.bias`, `${L}${b}.bias`);
      }
      const cat = (suffix: string) => {
        const parts = ['q_proj', 'k_proj', 'v_proj'].map((p) => hf.get(`${L}self_attn.${p}.${suffix}`)!);
        const data = new Float32Array(parts.reduce((n, p) => n + p.data.length, 0));
        parts.reduce((o, p) => (data.set(p.data, o), o + p.data.length), 0);
        return { dtype: 'F32' as const, shape: [parts[0]!.shape[0]! * 3, ...parts[0]!.shape.slice(1)], data };
      };
      out.set(`${R}attn.in_proj_weight`, cat('weight'));
      out.set(`${R}attn.in_proj_bias`, cat('bias'));
    }
  };
  put('token_embedding.weight', 'text_model.embeddings.token_embedding.weight');
  put('positional_embedding', 'text_model.embeddings.position_embedding.weight');
  tower('', 'text_model.');
  put('ln_final.weight', 'text_model.final_layer_norm.weight');
  put('ln_final.bias', 'text_model.final_layer_norm.bias');
  out.set('text_projection', transpose(hf.get('text_projection.weight')!));
  put('visual.class_embedding', 'vision_model.embeddings.class_embedding');
  put('visual.positional_embedding', 'vision_model.embeddings.position_embedding.weight');
  put('visual.conv1.weight', 'vision_model.embeddings.patch_embedding.weight');
  for (const [a, b] of [['visual.ln_pre', 'vision_model.pre_layrnorm'], ['visual.ln_post', 'vision_model.post_layernorm']]) {
    put(`${a}.weight`, `${b}.weight`);
    put(`${a}.bias`, `${b}.bias`);
  }
  tower('visual.', 'vision_model.');
  out.set('visual.proj', transpose(hf.get('visual_projection.weight')!));
  put('logit_scale', 'logit_scale');
  file = join(tmp, 'open_clip_model.safetensors');
  await writeSafetensors(file, out);
});
after(() => rm(tmp, { recursive: true, force: true }));

test('an OpenCLIP single file reproduces the transformers embeddings (heads from open_clip_config.json)', async () => {
  // Without a config the 64-wide family rule cannot split these tiny towers: the error says what to add.
  await assert.rejects(ClipModel.load(file, { tokenizer: join(fixturesDir, 'clip-bpe') }), /open_clip_config\.json/);
  const modelCfg = {
    quick_gelu: true,
    vision_cfg: { head_width: cfg.vision.hidden_size / cfg.vision.num_attention_heads },
    text_cfg: { heads: cfg.text.num_attention_heads },
  };
  await writeFile(join(tmp, 'open_clip_config.json'), JSON.stringify({ model_cfg: modelCfg }));
  const model = await ClipModel.load(file, { tokenizer: join(fixturesDir, 'clip-bpe'), threads: 1 });
  assert.equal(model.arch.source, 'openclip');
  const g = await Goldens.open(dir);
  const px = await g.read('golden/inputs.safetensors', 'pixel_values');
  await g.expectClose(await model.imageEmbeds(px.data, px.shape[0]!), 'golden/vision.safetensors', 'image_embeds');
  const phrases = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')).phrases as string[];
  await g.expectClose(await model.textEmbeds(phrases), 'golden/text.safetensors', 'text_embeds');
});

test("OpenCLIP head counts follow the family's configs: ViT-H/14 and ViT-bigG/14", () => {
  const shapes = (vw: number, vl: number, tw: number, tl: number): Record<string, number[]> => {
    const s: Record<string, number[]> = {
      'token_embedding.weight': [49408, tw],
      positional_embedding: [77, tw],
      'transformer.resblocks.0.mlp.c_fc.weight': [4 * tw, tw],
      'visual.conv1.weight': [vw, 3, 14, 14],
      'visual.positional_embedding': [257, vw],
      'visual.proj': [vw, 1024],
    };
    for (let i = 0; i < tl; i++) s[`transformer.resblocks.${i}.ln_1.weight`] = [tw];
    for (let i = 0; i < vl; i++) s[`visual.transformer.resblocks.${i}.ln_1.weight`] = [vw];
    return s;
  };
  const arch = (s: Record<string, number[]>) => openClipArch((k) => s[k], '', 'test');
  const h = arch(shapes(1280, 32, 1024, 24));
  assert.deepEqual([h.vision.heads, h.vision.layers, h.vision.imageSize, h.text.heads, h.text.layers, h.text.activation], [16, 32, 224, 16, 24, 'gelu']);
  const g = arch(shapes(1664, 48, 1280, 32));
  assert.deepEqual([g.vision.heads, g.text.heads], [16, 20]);
  const l = arch(shapes(1024, 24, 768, 12));
  assert.deepEqual([l.vision.heads, l.text.heads], [16, 12]);
});
