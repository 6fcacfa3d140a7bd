/**
 * The shape of a CLIP model (both towers and the projections), from one of:
 * - a Hugging Face folder (`config.json` + `model.safetensors`, as openai/clip-vit-large-patch14 and
 *   -base-patch32 ship): head counts and activations from the config, every size from the tensors;
 * - an OpenCLIP single file (`visual.*`, `transformer.*`, `text_projection`, as laion's ViT-H/14 and ViT-bigG/14
 *   that SD 2 and SDXL were trained with): no config, so head counts follow the family rule below, or an
 *   `open_clip_config.json` beside the file when there is one.
 */
import type { ClipTextArch } from '../sd/arch.ts';
import type { ClipVisionArch } from '../models/clip-vision.ts';
import { UserError } from '../util/errors.ts';

export interface ClipArch {
  source: 'hf' | 'openclip';
  /** With its key prefix and its projection (`text_projection.weight` [D, W], or OpenCLIP's [W, D] applied as x @ P). */
  text: ClipTextArch;
  vision: ClipVisionArch;
  projectionDim: number;
  logitScaleKey: string | null;
}

export type ShapeOf = (key: string) => number[] | undefined;

function need(shapeOf: ShapeOf, key: string, file: string): number[] {
  const s = shapeOf(key);
  if (!s) throw new UserError(`${file} has no tensor '${key}': not a CLIP model of the expected layout`);
  return s;
}

function countLayers(shapeOf: ShapeOf, prefix: (i: number) => string): number {
  let n = 0;
  while (shapeOf(prefix(n))) n++;
  return n;
}

type Json = Record<string, unknown>;
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const act = (v: unknown, where: string): 'quick_gelu' | 'gelu' => {
  if (v === undefined || v === 'quick_gelu') return 'quick_gelu';
  if (v === 'gelu') return 'gelu';
  throw new UserError(`${where}: hidden_act '${String(v)}' is not supported (quick_gelu or gelu)`);
};

/** A Hugging Face `CLIPModel` folder's arch: `config` is its config.json, `shapeOf` its tensors. */
export function hfClipArch(config: Json, shapeOf: ShapeOf, where: string): ClipArch {
  const tc = (config['text_config'] ?? {}) as Json;
  const vc = (config['vision_config'] ?? {}) as Json;
  const T = 'text_model.';
  const V = 'vision_model.';
  const [vocabSize, width] = need(shapeOf, `${T}embeddings.token_embedding.weight`, where) as [number, number];
  const [, , patch] = need(shapeOf, `${V}embeddings.patch_embedding.weight`, where) as [number, number, number, number];
  const vWidth = need(shapeOf, `${V}embeddings.class_embedding`, where)[0]!;
  const positions = need(shapeOf, `${V}embeddings.position_embedding.weight`, where)[0]!;
  const grid = Math.round(Math.sqrt(positions - 1));
  if (grid * grid !== positions - 1) throw new UserError(`${where}: vision position embedding has ${positions} rows, not 1 + a square number of patches`);
  const projDim = need(shapeOf, 'visual_projection.weight', where)[0]!;
  const textHeads = num(tc['num_attention_heads']) ?? 8;
  const visionHeads = num(vc['num_attention_heads']) ?? 12;
  if (width % textHeads) throw new UserError(`${where}: text_config.num_attention_heads ${textHeads} does not divide the text width ${width}`);
  if (vWidth % visionHeads) throw new UserError(`${where}: vision_config.num_attention_heads ${visionHeads} does not divide the vision width ${vWidth}`);
  return {
    source: 'hf',
    text: {
      layout: 'hf',
      vocabSize,
      maxPositions: need(shapeOf, `${T}embeddings.position_embedding.weight`, where)[0]!,
      width,
      layers: countLayers(shapeOf, (i) => `${T}encoder.layers.${i}.layer_norm1.weight`),
      heads: textHeads,
      intermediate: need(shapeOf, `${T}encoder.layers.0.mlp.fc1.weight`, where)[0]!,
      activation: act(tc['hidden_act'], `${where} text_config`),
      layerNormEps: num(tc['layer_norm_eps']) ?? 1e-5,
      skipLastLayer: false,
      prefix: T,
      projection: { key: 'text_projection.weight', transposed: false, dim: projDim },
    },
    vision: {
      layout: 'hf',
      prefix: V,
      projectionKey: 'visual_projection.weight',
      imageSize: grid * patch,
      patchSize: patch,
      width: vWidth,
      layers: countLayers(shapeOf, (i) => `${V}encoder.layers.${i}.layer_norm1.weight`),
      heads: visionHeads,
      activation: act(vc['hidden_act'], `${where} vision_config`),
      layerNormEps: num(vc['layer_norm_eps']) ?? 1e-5,
      projectionDim: projDim,
    },
    projectionDim: projDim,
    logitScaleKey: shapeOf('logit_scale') ? 'logit_scale' : null,
  };
}

/**
 * OpenCLIP's vision head counts by tower width, as its model configs set them (head_width 64 except ViT-H/14's
 * 80 and ViT-bigG/14's 104); text towers use 64-wide heads throughout.
 */
const OPENCLIP_VISION_HEADS: Record<number, number> = { 1280: 16, 1664: 16 };

/** Key prefix in front of `visual.conv1.weight` in an OpenCLIP state dict (often empty), or undefined. */
export function openClipPrefix(keys: Iterable<string>): string | undefined {
  for (const k of keys) if (k.endsWith('visual.conv1.weight')) return k.slice(0, -'visual.conv1.weight'.length);
  return undefined;
}

/** An OpenCLIP single file's arch; `cfg` is `open_clip_config.json`'s `model_cfg` when present. */
export function openClipArch(shapeOf: ShapeOf, prefix: string, where: string, cfg?: Json): ClipArch {
  const P = prefix;
  const V = `${P}visual.`;
  const [vocabSize, width] = need(shapeOf, `${P}token_embedding.weight`, where) as [number, number];
  const [vWidth, , patch] = need(shapeOf, `${V}conv1.weight`, where) as [number, number, number, number];
  const positions = need(shapeOf, `${V}positional_embedding`, where)[0]!;
  const grid = Math.round(Math.sqrt(positions - 1));
  if (grid * grid !== positions - 1) throw new UserError(`${where}: visual.positional_embedding has ${positions} rows, not 1 + a square number of patches`);
  const [, projDim] = need(shapeOf, `${V}proj`, where) as [number, number];
  const vcfg = (cfg?.['vision_cfg'] ?? {}) as Json;
  const tcfg = (cfg?.['text_cfg'] ?? {}) as Json;
  const headWidth = num(vcfg['head_width']);
  const visionHeads = headWidth ? vWidth / headWidth : (OPENCLIP_VISION_HEADS[vWidth] ?? vWidth / 64);
  const textHeads = num(tcfg['heads']) ?? width / 64;
  if (!Number.isInteger(visionHeads) || !Number.isInteger(textHeads))
    throw new UserError(`${where}: cannot tell the attention head counts (vision width ${vWidth}, text width ${width}); put the model's open_clip_config.json beside the file`);
  // OpenAI's own weights in OpenCLIP form use QuickGELU; LAION's models (ViT-H, bigG) use exact GELU.
  const activation = cfg?.['quick_gelu'] === true ? 'quick_gelu' : 'gelu';
  return {
    source: 'openclip',
    text: {
      layout: 'openclip',
      vocabSize,
      maxPositions: need(shapeOf, `${P}positional_embedding`, where)[0]!,
      width,
      layers: countLayers(shapeOf, (i) => `${P}transformer.resblocks.${i}.ln_1.weight`),
      heads: textHeads,
      intermediate: need(shapeOf, `${P}transformer.resblocks.0.mlp.c_fc.weight`, where)[0]!,
      activation,
      layerNormEps: 1e-5,
      skipLastLayer: false,
      prefix: P,
      projection: { key: `${P}text_projection`, transposed: true, dim: projDim },
    },
    vision: {
      layout: 'openclip',
      prefix: V,
      projectionKey: `${V}proj`,
      imageSize: grid * patch,
      patchSize: patch,
      width: vWidth,
      layers: countLayers(shapeOf, (i) => `${V}transformer.resblocks.${i}.ln_1.weight`),
      heads: visionHeads,
      activation,
      layerNormEps: 1e-5,
      projectionDim: projDim,
    },
    projectionDim: projDim,
    logitScaleKey: shapeOf(`${P}logit_scale`) ? `${P}logit_scale` : null,
  };
}
