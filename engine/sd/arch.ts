/**
 * Architecture of an SD 1.x / 2.x / SDXL checkpoint, inferred from its tensor names and shapes (LDM / SGM key
 * layout), so that any checkpoint loads without a config file: the shapes say channels, levels, depths and
 * widths. Only head counts are not visible in shapes; they follow the released families' rules (see `unetHeads`).
 */
import { UserError } from '../util/errors.ts';

export interface UnetArch {
  inChannels: number;
  outChannels: number;
  modelChannels: number;
  channelMult: number[];
  numResBlocks: number;
  /** Per level: whether its res blocks carry a spatial transformer. */
  attentionLevels: boolean[];
  /** Transformer blocks per spatial transformer, per level (the middle block uses the last level's). */
  transformerDepth: number[];
  contextDim: number;
  /** SD2 style Linear proj_in/proj_out instead of 1×1 convs. */
  useLinearProjection: boolean;
  /** Either a number of heads per level (SD1: 8 everywhere) or a fixed head width (SD2: 64). */
  heads: { numHeads: number[] } | { headDim: number };
  timeEmbedDim: number;
  normGroups: number;
  normEps: number;
  /**
   * SDXL's additional conditioning (`label_emb`, diffusers' `add_embedding` "text_time"): its input is the
   * pooled text embedding followed by `sizeConditions` Fourier features of `sizeEmbedDim` each.
   */
  adm?: { inChannels: number; pooledDim: number; sizeEmbedDim: number; sizeConditions: number };
}

export interface ClipTextArch {
  /** 'hf' = transformers CLIPTextModel layout (SD1); 'openclip' = OpenCLIP layout (SD2). */
  layout: 'hf' | 'openclip';
  vocabSize: number;
  maxPositions: number;
  width: number;
  layers: number;
  heads: number;
  intermediate: number;
  activation: 'quick_gelu' | 'gelu';
  layerNormEps: number;
  /**
   * SD2 conditions on the penultimate block. A full OpenCLIP tower (with `text_projection`) stores every
   * block, so the last is skipped; files converted from diffusers store only the blocks SD2 uses.
   */
  skipLastLayer: boolean;
  /** Where the tower's keys start; default `clipTextPrefix(layout)` (SD 1.x / 2.x). */
  prefix?: string;
  /**
   * SDXL's OpenCLIP tower: the pooled projection, `text_projection` [width, dim] (OpenCLIP, x @ P) or
   * `text_projection.weight` [dim, width] (transformers Linear).
   */
  projection?: { key: string; transposed: boolean; dim: number };
}

export interface VaeArch {
  channels: number;
  channelMult: number[];
  numResBlocks: number;
  zChannels: number;
  embedDim: number;
  normGroups: number;
  normEps: number;
  scalingFactor: number;
}

/** `sdxl-refiner`: SDXL's refiner (one OpenCLIP tower, aesthetic-score conditioning), run for a generation's last steps. */
export type SdFamily = 'sd1' | 'sd2' | 'sdxl' | 'sdxl-refiner';

export interface SdArch {
  family: SdFamily;
  unet: UnetArch;
  /** SD 1.x's CLIP ViT-L, SD 2.x's OpenCLIP ViT-H, SDXL's CLIP ViT-L (its `text_encoder`). */
  textEncoder: ClipTextArch;
  /** SDXL only: the OpenCLIP ViT-bigG tower (`text_encoder_2`), whose pooled output feeds `label_emb`. The refiner has only this tower, as `textEncoder`. */
  textEncoder2?: ClipTextArch;
  vae: VaeArch;
}

/** Where SGM (SDXL) single files and this loader's diffusers mapping keep SDXL's two text encoders. */
export const SDXL_TEXT = {
  /** CLIP ViT-L, transformers layout. */
  te1: 'conditioner.embedders.0.transformer.',
  /** OpenCLIP bigG as stored in SGM single files. */
  te2OpenClip: 'conditioner.embedders.1.model.',
  /** The same tower from a diffusers folder (`text_encoder_2`, CLIPTextModelWithProjection), transformers layout. */
  te2Hf: 'conditioner.embedders.1.transformer.',
} as const;

export type ShapeOf = (key: string) => number[] | undefined;

const UNET = 'model.diffusion_model.';
const VAE = 'first_stage_model.';
const LDM_TEXT_HF = 'cond_stage_model.transformer.';
const CLIP_OPEN = 'cond_stage_model.model.';

/** A weight's shape: every tensor the inference reads is a matrix or a conv kernel, so it has two leading dims. */
type WeightShape = [number, number, ...number[]];

function need(shapeOf: ShapeOf, key: string, what: string): WeightShape {
  const s = shapeOf(key);
  if (!s) throw new UserError(`not a Stable Diffusion checkpoint: tensor '${key}' (${what}) is missing`);
  const [d0, d1, ...rest] = s;
  if (d0 === undefined || d1 === undefined) throw new UserError(`not a Stable Diffusion checkpoint: tensor '${key}' (${what}) has shape [${s.join(', ')}], expected at least two dimensions`);
  return [d0, d1, ...rest];
}

function countIndices(shapeOf: ShapeOf, prefix: (i: number) => string, probe: string): number {
  let n = 0;
  while (shapeOf(prefix(n) + probe)) n++;
  return n;
}

export function inferUnetArch(shapeOf: ShapeOf, family: SdFamily): UnetArch {
  const convIn = need(shapeOf, `${UNET}input_blocks.0.0.weight`, 'UNet conv_in');
  const modelChannels = convIn[0];
  const inChannels = convIn[1];
  type ResBlock = { ch: number; attn: boolean; depth: number };
  let level: ResBlock[] = [];
  const levels: ResBlock[][] = [level];
  for (let n = 1; ; n++) {
    const p = `${UNET}input_blocks.${n}.`;
    if (shapeOf(`${p}0.op.weight`)) {
      level = [];
      levels.push(level);
      continue;
    }
    if (!shapeOf(`${p}0.in_layers.2.weight`)) break;
    const conv = need(shapeOf, `${p}0.in_layers.2.weight`, 'res block conv');
    const attn = shapeOf(`${p}1.proj_in.weight`) !== undefined;
    const depth = attn ? countIndices(shapeOf, (i) => `${p}1.transformer_blocks.${i}.`, 'norm1.weight') : 0;
    level.push({ ch: conv[0], attn, depth });
  }
  const numResBlocks = levels[0]?.length ?? 0;
  if (numResBlocks === 0) throw new UserError(`not a Stable Diffusion UNet: no res blocks under '${UNET}input_blocks'`);
  // Each level is described by its first res block; all of a level's blocks share its width and attention.
  const firsts = levels.map((l, i) => {
    const first = l[0];
    if (!first || l.length !== numResBlocks) {
      throw new UserError(`unsupported UNet: level ${i} has ${l.length} res blocks, level 0 has ${numResBlocks}`);
    }
    return first;
  });
  const proj = shapeOf(`${UNET}middle_block.1.proj_in.weight`) ?? need(shapeOf, `${UNET}input_blocks.1.1.proj_in.weight`, 'proj_in');
  const toK = findFirst(shapeOf, [`${UNET}middle_block.1.transformer_blocks.0.attn2.to_k.weight`, `${UNET}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`]);
  const useLinearProjection = proj.length === 2;
  return {
    inChannels,
    outChannels: need(shapeOf, `${UNET}out.2.weight`, 'UNet conv_out')[0],
    modelChannels,
    channelMult: firsts.map((b) => b.ch / modelChannels),
    numResBlocks,
    attentionLevels: firsts.map((b) => b.attn),
    transformerDepth: firsts.map((b) => b.depth),
    contextDim: toK[1],
    useLinearProjection,
    // SD1 configs fix 8 heads at every level; SD2 and SDXL fix a 64-wide head.
    heads: family === 'sd1' ? { numHeads: levels.map(() => 8) } : { headDim: 64 },
    timeEmbedDim: need(shapeOf, `${UNET}time_embed.0.weight`, 'time embedding')[0],
    normGroups: 32,
    normEps: 1e-5,
  };
}

function findFirst(shapeOf: ShapeOf, keys: string[]): WeightShape {
  for (const k of keys) {
    if (shapeOf(k)) return need(shapeOf, k, 'cross-attention to_k');
  }
  throw new UserError(`not a Stable Diffusion UNet: none of ${keys.map((k) => `'${k}'`).join(', ')} found`);
}

/**
 * A CLIP text tower under either prefix: transformers layout under `hfPrefix` + `text_model.`, OpenCLIP layout
 * under `openPrefix`. Defaults: where SD 1.x and SD 2.x single files keep theirs.
 */
export function inferClipTextArch(shapeOf: ShapeOf, hfPrefix: string = LDM_TEXT_HF, openPrefix: string = CLIP_OPEN): ClipTextArch {
  const H = `${hfPrefix}text_model.`;
  if (shapeOf(`${H}embeddings.token_embedding.weight`)) {
    const [vocabSize, width] = need(shapeOf, `${H}embeddings.token_embedding.weight`, 'token embedding');
    const layers = countIndices(shapeOf, (i) => `${H}encoder.layers.${i}.`, 'layer_norm1.weight');
    const proj = shapeOf(`${hfPrefix}text_projection.weight`) && need(shapeOf, `${hfPrefix}text_projection.weight`, 'text projection');
    return {
      layout: 'hf',
      vocabSize,
      maxPositions: need(shapeOf, `${H}embeddings.position_embedding.weight`, 'position embedding')[0],
      width,
      layers,
      heads: clipHeads(width),
      intermediate: need(shapeOf, `${H}encoder.layers.0.mlp.fc1.weight`, 'MLP')[0],
      activation: 'quick_gelu',
      layerNormEps: 1e-5,
      skipLastLayer: false,
      ...(hfPrefix === LDM_TEXT_HF ? {} : { prefix: H }),
      ...(proj ? { projection: { key: `${hfPrefix}text_projection.weight`, transposed: false, dim: proj[0] } } : {}),
    };
  }
  if (shapeOf(`${openPrefix}token_embedding.weight`)) {
    const [vocabSize, width] = need(shapeOf, `${openPrefix}token_embedding.weight`, 'token embedding');
    const proj = shapeOf(`${openPrefix}text_projection`) && need(shapeOf, `${openPrefix}text_projection`, 'text projection');
    return {
      layout: 'openclip',
      vocabSize,
      maxPositions: need(shapeOf, `${openPrefix}positional_embedding`, 'position embedding')[0],
      width,
      layers: countIndices(shapeOf, (i) => `${openPrefix}transformer.resblocks.${i}.`, 'ln_1.weight'),
      heads: clipHeads(width),
      intermediate: need(shapeOf, `${openPrefix}transformer.resblocks.0.mlp.c_fc.weight`, 'MLP')[0],
      activation: 'gelu',
      layerNormEps: 1e-5,
      skipLastLayer: proj !== undefined,
      ...(openPrefix === CLIP_OPEN ? {} : { prefix: openPrefix }),
      ...(proj ? { projection: { key: `${openPrefix}text_projection`, transposed: true, dim: proj[1] } } : {}),
    };
  }
  throw new UserError(`no text encoder found: expected '${H}*' (CLIP) or '${openPrefix}*' (OpenCLIP) tensors`);
}

/**
 * Every released CLIP text tower uses 64-wide heads. A custom tower whose width is no multiple of 64 gets
 * 8-wide heads where they fit, else one head — a guess that always builds; its real count comes from a
 * diffusers config or the loader's `textEncoderHeads`.
 */
export function clipHeads(width: number): number {
  if (width % 64 === 0) return width / 64;
  return width % 8 === 0 ? width / 8 : 1;
}

export function inferVaeArch(shapeOf: ShapeOf): VaeArch {
  const convIn = need(shapeOf, `${VAE}encoder.conv_in.weight`, 'VAE encoder conv_in');
  const channels = convIn[0];
  const levels = countIndices(shapeOf, (i) => `${VAE}encoder.down.${i}.`, 'block.0.conv1.weight');
  const channelMult: number[] = [];
  for (let i = 0; i < levels; i++) channelMult.push(need(shapeOf, `${VAE}encoder.down.${i}.block.0.conv1.weight`, 'VAE block')[0] / channels);
  const numResBlocks = countIndices(shapeOf, (i) => `${VAE}encoder.down.0.block.${i}.`, 'conv1.weight');
  const convOut = need(shapeOf, `${VAE}encoder.conv_out.weight`, 'VAE encoder conv_out');
  const postQuant = need(shapeOf, `${VAE}post_quant_conv.weight`, 'post_quant_conv');
  return {
    channels,
    channelMult,
    numResBlocks,
    zChannels: convOut[0] / 2,
    embedDim: postQuant[0],
    normGroups: 32,
    normEps: 1e-6,
    scalingFactor: 0.18215,
  };
}

/** Heads of the spatial transformer at `level` (the middle block uses the last level). */
export function unetHeadsAt(arch: UnetArch, level: number): number {
  const mult = arch.channelMult[level];
  if (mult === undefined) throw new UserError(`UNet level ${level} does not exist (the UNet has ${arch.channelMult.length} levels)`);
  const ch = arch.modelChannels * mult;
  const heads = 'headDim' in arch.heads ? ch / arch.heads.headDim : arch.heads.numHeads[level];
  if (heads === undefined || !Number.isInteger(heads) || heads < 1 || ch % heads !== 0) {
    throw new UserError(`UNet level ${level}: ${ch} channels do not split into ${heads} heads`);
  }
  return heads;
}

/** SDXL base: SGM's conditioner holds the two towers (the refiner has the OpenCLIP one alone). */
function isSdxl(shapeOf: ShapeOf): boolean {
  return shapeOf(`${SDXL_TEXT.te1}text_model.embeddings.token_embedding.weight`) !== undefined;
}

function inferSdxlArch(shapeOf: ShapeOf): SdArch {
  const textEncoder = inferClipTextArch(shapeOf, SDXL_TEXT.te1, '\u0000');
  const te2 = shapeOf(`${SDXL_TEXT.te2OpenClip}token_embedding.weight`)
    ? inferClipTextArch(shapeOf, '\u0000', SDXL_TEXT.te2OpenClip)
    : inferClipTextArch(shapeOf, SDXL_TEXT.te2Hf, '\u0000');
  // SDXL conditions on both towers' penultimate layers; the last block of the second still runs for the pooled output.
  te2.skipLastLayer = false;
  if (!te2.projection) throw new UserError(`SDXL checkpoint: the second text encoder has no text_projection (its pooled output feeds the UNet)`);
  const unet = inferUnetArch(shapeOf, 'sdxl');
  const label = need(shapeOf, `${UNET}label_emb.0.0.weight`, 'SDXL label_emb (size and pooled-text conditioning)');
  unet.adm = admArch(label[1], te2.projection.dim, SDXL_SIZE_CONDITIONS);
  if (unet.contextDim !== textEncoder.width + te2.width) {
    throw new UserError(`SDXL checkpoint: cross-attention width ${unet.contextDim} is not the sum of the text encoders' widths (${textEncoder.width} + ${te2.width})`);
  }
  const vae = inferVaeArch(shapeOf);
  vae.scalingFactor = SDXL_VAE_SCALE;
  return { family: 'sdxl', unet, textEncoder, textEncoder2: te2, vae };
}

/**
 * How many numbers SDXL embeds beside the pooled text: the base six (original h, w, crop top, left, target h, w),
 * the refiner five (original h, w, crop top, left, aesthetic score).
 */
export const SDXL_SIZE_CONDITIONS = 6;
export const SDXL_REFINER_SIZE_CONDITIONS = 5;

/** `label_emb`'s input split into the pooled width and `conditions` Fourier embeddings of equal, even width. */
function admArch(inChannels: number, pooledDim: number, conditions: number): NonNullable<UnetArch['adm']> {
  const sizeEmbedDim = (inChannels - pooledDim) / conditions;
  if (!Number.isInteger(sizeEmbedDim) || sizeEmbedDim <= 0 || sizeEmbedDim % 2 !== 0) {
    throw new UserError(`unsupported SDXL UNet: label_emb takes ${inChannels} features, which is not the pooled width ${pooledDim} + ${conditions} equal size embeddings`);
  }
  return { inChannels, pooledDim, sizeEmbedDim, sizeConditions: conditions };
}

/** Where SGM's refiner keeps its one text tower (OpenCLIP ViT-bigG, with `text_projection`). */
export const SDXL_REFINER_TEXT = 'conditioner.embedders.0.model.';

/**
 * SDXL's refiner (sd_xl_refiner.yaml): the OpenCLIP bigG tower alone (penultimate layer as context, pooled
 * projection), `label_emb` over pooled + 5 Fourier features (original size, crop, aesthetic score), the SDXL VAE.
 */
function inferSdxlRefinerArch(shapeOf: ShapeOf): SdArch {
  const textEncoder = inferClipTextArch(shapeOf, '\u0000', SDXL_REFINER_TEXT);
  textEncoder.skipLastLayer = false;
  if (!textEncoder.projection) throw new UserError('SDXL refiner checkpoint: its text encoder has no text_projection (its pooled output feeds the UNet)');
  const unet = inferUnetArch(shapeOf, 'sdxl');
  const label = need(shapeOf, `${UNET}label_emb.0.0.weight`, 'SDXL refiner label_emb (size, aesthetic-score and pooled-text conditioning)');
  unet.adm = admArch(label[1], textEncoder.projection.dim, SDXL_REFINER_SIZE_CONDITIONS);
  if (unet.contextDim !== textEncoder.width) {
    throw new UserError(`SDXL refiner checkpoint: cross-attention width ${unet.contextDim} is not its text encoder's width ${textEncoder.width}`);
  }
  const vae = inferVaeArch(shapeOf);
  vae.scalingFactor = SDXL_VAE_SCALE;
  return { family: 'sdxl-refiner', unet, textEncoder, vae };
}

/** SDXL's VAE latent scale (sgm `scale_factor`, diffusers `scaling_factor`). */
export const SDXL_VAE_SCALE = 0.13025;

export function inferSdArch(shapeOf: ShapeOf): SdArch {
  // A1111 tells the refiner by this tower (its `conditioner.embedders.0.model.ln_final.weight`).
  if (shapeOf(`${SDXL_REFINER_TEXT}token_embedding.weight`) && !isSdxl(shapeOf)) return inferSdxlRefinerArch(shapeOf);
  if (isSdxl(shapeOf)) return inferSdxlArch(shapeOf);
  const textEncoder = inferClipTextArch(shapeOf);
  const family = textEncoder.layout === 'openclip' ? 'sd2' : 'sd1';
  return { family, unet: inferUnetArch(shapeOf, family), textEncoder, vae: inferVaeArch(shapeOf) };
}
