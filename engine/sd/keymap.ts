/**
 * Key names between the diffusers layout and the LDM single-file layout (the project's canonical namespace),
 * for the UNet, the VAE and the CLIP text encoder of SD 1.x / 2.x (and the SDXL UNet's block numbering).
 *
 * LDM numbers UNet blocks in one flat sequence per side, so the mapping is index arithmetic that depends on
 * the architecture: how many levels, how many res blocks per level, and which levels carry attention.
 * Those are read from the tensor names (`inferUnetLayout`), never assumed, so a tiny test model and SD 1.5
 * go through the same code.
 */
import { UserError } from '../util/errors.ts';

export type ModelPart = 'unet' | 'vae' | 'text_encoder';

export interface UnetLayout {
  /** Number of resolution levels (SD1/2: 4, SDXL: 3). */
  levels: number;
  /** Res blocks per level on the down side (the up side has one more). */
  layersPerBlock: number;
  /** Per level, highest resolution first: whether its blocks carry a spatial transformer. */
  attention: boolean[];
  /** Whether the middle block is res, attn, res (true for every SD family). */
  midAttention: boolean;
}

export interface VaeLayout {
  levels: number;
}

/** 'hf' = transformers CLIPTextModel under `cond_stage_model.transformer.` (SD1); 'openclip' = SD2's fused-QKV layout. */
export type TextEncoderLayout = { kind: 'hf' } | { kind: 'openclip'; width: number };

export const LDM_PREFIX = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  text_encoder: 'cond_stage_model.transformer.',
  text_encoder_openclip: 'cond_stage_model.model.',
} as const;

/**
 * Where a diffusers tensor lives in the LDM layout. `rows` is set when the LDM tensor is a fused one
 * (OpenCLIP in_proj) and the diffusers tensor is the row slice [start, end). `conv1x1` is set when the
 * diffusers tensor is a Linear [out, in] and the LDM tensor the same values as a 1×1 conv [out, in, 1, 1]
 * (VAE mid-block attention).
 */
export interface LdmTarget {
  key: string;
  rows?: [number, number];
  conv1x1?: boolean;
}

// ---------------------------------------------------------------- UNet

const RESNET_TO_LDM: Record<string, string> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  time_emb_proj: 'emb_layers.1',
  conv_shortcut: 'skip_connection',
};
const RESNET_FROM_LDM: Record<string, string> = Object.fromEntries(
  Object.entries(RESNET_TO_LDM).map(([a, b]) => [b, a]),
);

const UNET_TOP_TO_LDM: Record<string, string> = {
  conv_in: 'input_blocks.0.0',
  'time_embedding.linear_1': 'time_embed.0',
  'time_embedding.linear_2': 'time_embed.2',
  conv_norm_out: 'out.0',
  conv_out: 'out.2',
  'add_embedding.linear_1': 'label_emb.0.0',
  'add_embedding.linear_2': 'label_emb.0.2',
};
const UNET_TOP_FROM_LDM: Record<string, string> = Object.fromEntries(
  Object.entries(UNET_TOP_TO_LDM).map(([a, b]) => [b, a]),
);

/**
 * The capture groups of `re` in `s` (index 0 = the whole match), or null. Every pattern here has at most four
 * groups and none that can match empty text, so a group that took no part reads ''.
 */
type Groups = [string, string, string, string, string];
function match(s: string, re: RegExp): Groups | null {
  const m = s.match(re);
  if (!m) return null;
  return [m[0], m[1] ?? '', m[2] ?? '', m[3] ?? '', m[4] ?? ''];
}

/** Replaces the first matching dotted prefix of `rest` through `table` ("conv1.weight" → "in_layers.2.weight"). */
function renameHead(rest: string, table: Record<string, string>): string | undefined {
  for (const [from, to] of Object.entries(table)) {
    if (rest === from) return to;
    if (rest.startsWith(from + '.')) return to + rest.slice(from.length);
  }
  return undefined;
}

function stripPrefix(name: string, prefixes: string[]): string {
  for (const p of prefixes) if (name.startsWith(p)) return name.slice(p.length);
  return name;
}

/** up_blocks are numbered from the lowest resolution: up_blocks.i is level (levels-1-i). */
function upHasAttention(layout: UnetLayout, i: number): boolean {
  return layout.attention[layout.levels - 1 - i] ?? false;
}

function unetToLdm(name: string, layout: UnetLayout): string | undefined {
  const n = stripPrefix(name, ['unet.']);
  const top = renameHead(n, UNET_TOP_TO_LDM);
  if (top !== undefined) return LDM_PREFIX.unet + top;
  const per = layout.layersPerBlock + 1;
  let m: Groups | null;
  if ((m = match(n, /^down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)$/))) {
    const i = +m[1], j = +m[3], rest = m[4];
    if (i >= layout.levels) return undefined;
    if (m[2] === 'downsamplers') {
      if (j !== 0 || i >= layout.levels - 1 || !rest.startsWith('conv.')) return undefined;
      return `${LDM_PREFIX.unet}input_blocks.${per * (i + 1)}.0.op.${rest.slice(5)}`;
    }
    if (j >= layout.layersPerBlock) return undefined;
    const block = 1 + per * i + j;
    if (m[2] === 'attentions') return layout.attention[i] ? `${LDM_PREFIX.unet}input_blocks.${block}.1.${rest}` : undefined;
    const r = renameHead(rest, RESNET_TO_LDM);
    return r === undefined ? undefined : `${LDM_PREFIX.unet}input_blocks.${block}.0.${r}`;
  }
  if ((m = match(n, /^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$/))) {
    const j = +m[2], rest = m[3];
    if (m[1] === 'attentions') return j === 0 && layout.midAttention ? `${LDM_PREFIX.unet}middle_block.1.${rest}` : undefined;
    if (j > 1) return undefined;
    const r = renameHead(rest, RESNET_TO_LDM);
    const idx = layout.midAttention ? 2 * j : j;
    return r === undefined ? undefined : `${LDM_PREFIX.unet}middle_block.${idx}.${r}`;
  }
  if ((m = match(n, /^up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)$/))) {
    const i = +m[1], j = +m[3], rest = m[4];
    if (i >= layout.levels) return undefined;
    if (m[2] === 'upsamplers') {
      if (j !== 0 || i >= layout.levels - 1 || !rest.startsWith('conv.')) return undefined;
      const sub = upHasAttention(layout, i) ? 2 : 1;
      return `${LDM_PREFIX.unet}output_blocks.${per * i + layout.layersPerBlock}.${sub}.${rest}`;
    }
    if (j >= per) return undefined;
    const block = per * i + j;
    if (m[2] === 'attentions') return upHasAttention(layout, i) ? `${LDM_PREFIX.unet}output_blocks.${block}.1.${rest}` : undefined;
    const r = renameHead(rest, RESNET_TO_LDM);
    return r === undefined ? undefined : `${LDM_PREFIX.unet}output_blocks.${block}.0.${r}`;
  }
  return undefined;
}

function unetFromLdm(key: string, layout: UnetLayout): string | undefined {
  const n = stripPrefix(key, [LDM_PREFIX.unet, 'diffusion_model.']);
  const per = layout.layersPerBlock + 1;
  let m: Groups | null;
  if ((m = match(n, /^input_blocks\.(\d+)\.(\d+)\.(.+)$/))) {
    const k = +m[1], sub = +m[2], rest = m[3];
    if (k === 0) return sub === 0 ? renameHead(`input_blocks.0.0.${rest}`, UNET_TOP_FROM_LDM) : undefined;
    if (k % per === 0) {
      const i = k / per - 1;
      if (sub !== 0 || !rest.startsWith('op.') || i >= layout.levels - 1) return undefined;
      return `down_blocks.${i}.downsamplers.0.conv.${rest.slice(3)}`;
    }
    const i = Math.floor((k - 1) / per), j = (k - 1) % per;
    if (i >= layout.levels) return undefined;
    if (sub === 1) return layout.attention[i] ? `down_blocks.${i}.attentions.${j}.${rest}` : undefined;
    if (sub !== 0) return undefined;
    const r = renameHead(rest, RESNET_FROM_LDM);
    return r === undefined ? undefined : `down_blocks.${i}.resnets.${j}.${r}`;
  }
  if ((m = match(n, /^middle_block\.(\d+)\.(.+)$/))) {
    const k = +m[1], rest = m[2];
    if (layout.midAttention && k === 1) return `mid_block.attentions.0.${rest}`;
    const j = layout.midAttention ? (k % 2 === 0 ? k / 2 : -1) : k;
    if (j < 0 || j > 1) return undefined;
    const r = renameHead(rest, RESNET_FROM_LDM);
    return r === undefined ? undefined : `mid_block.resnets.${j}.${r}`;
  }
  if ((m = match(n, /^output_blocks\.(\d+)\.(\d+)\.(.+)$/))) {
    const k = +m[1], sub = +m[2], rest = m[3];
    const i = Math.floor(k / per), j = k % per;
    if (i >= layout.levels) return undefined;
    // An attention block has no `conv` child, so `.N.conv` is always the upsampler.
    if ((sub === 1 || sub === 2) && rest.startsWith('conv.')) {
      if (j !== layout.layersPerBlock || i >= layout.levels - 1) return undefined;
      return `up_blocks.${i}.upsamplers.0.conv.${rest.slice(5)}`;
    }
    if (sub === 1) return upHasAttention(layout, i) ? `up_blocks.${i}.attentions.${j}.${rest}` : undefined;
    if (sub !== 0) return undefined;
    const r = renameHead(rest, RESNET_FROM_LDM);
    return r === undefined ? undefined : `up_blocks.${i}.resnets.${j}.${r}`;
  }
  return renameHead(n, UNET_TOP_FROM_LDM);
}

// ---------------------------------------------------------------- VAE

const VAE_RESNET_TO_LDM: Record<string, string> = { conv_shortcut: 'nin_shortcut' };
const VAE_RESNET_FROM_LDM: Record<string, string> = { nin_shortcut: 'conv_shortcut' };
/** diffusers ≥0.14 names first; the older query/key/value/proj_attn names are accepted on the way in. */
const VAE_ATTN_TO_LDM: Record<string, string> = {
  group_norm: 'norm',
  to_q: 'q',
  to_k: 'k',
  to_v: 'v',
  'to_out.0': 'proj_out',
  query: 'q',
  key: 'k',
  value: 'v',
  proj_attn: 'proj_out',
};
const VAE_ATTN_FROM_LDM: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };
const VAE_TOP_TO_LDM: Record<string, string> = {
  'encoder.conv_in': 'encoder.conv_in',
  'encoder.conv_out': 'encoder.conv_out',
  'encoder.conv_norm_out': 'encoder.norm_out',
  'decoder.conv_in': 'decoder.conv_in',
  'decoder.conv_out': 'decoder.conv_out',
  'decoder.conv_norm_out': 'decoder.norm_out',
  quant_conv: 'quant_conv',
  post_quant_conv: 'post_quant_conv',
};
const VAE_TOP_FROM_LDM: Record<string, string> = Object.fromEntries(Object.entries(VAE_TOP_TO_LDM).map(([a, b]) => [b, a]));

function keepOrRename(rest: string, table: Record<string, string>): string {
  return renameHead(rest, table) ?? rest;
}

function vaeToLdm(name: string, layout: VaeLayout): string | undefined {
  const n = stripPrefix(name, ['vae.']);
  const top = renameHead(n, VAE_TOP_TO_LDM);
  if (top !== undefined) return LDM_PREFIX.vae + top;
  let m: Groups | null;
  if ((m = match(n, /^encoder\.down_blocks\.(\d+)\.(resnets|downsamplers)\.(\d+)\.(.+)$/))) {
    const i = +m[1], j = +m[3], rest = m[4];
    if (i >= layout.levels) return undefined;
    if (m[2] === 'downsamplers') {
      return j === 0 && rest.startsWith('conv.') ? `${LDM_PREFIX.vae}encoder.down.${i}.downsample.${rest}` : undefined;
    }
    return `${LDM_PREFIX.vae}encoder.down.${i}.block.${j}.${keepOrRename(rest, VAE_RESNET_TO_LDM)}`;
  }
  if ((m = match(n, /^decoder\.up_blocks\.(\d+)\.(resnets|upsamplers)\.(\d+)\.(.+)$/))) {
    const i = +m[1], j = +m[3], rest = m[4];
    if (i >= layout.levels) return undefined;
    const level = layout.levels - 1 - i;
    if (m[2] === 'upsamplers') {
      return j === 0 && rest.startsWith('conv.') ? `${LDM_PREFIX.vae}decoder.up.${level}.upsample.${rest}` : undefined;
    }
    return `${LDM_PREFIX.vae}decoder.up.${level}.block.${j}.${keepOrRename(rest, VAE_RESNET_TO_LDM)}`;
  }
  if ((m = match(n, /^(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$/))) {
    const side = m[1], j = +m[3], rest = m[4];
    if (m[2] === 'resnets') {
      return j <= 1 ? `${LDM_PREFIX.vae}${side}.mid.block_${j + 1}.${keepOrRename(rest, VAE_RESNET_TO_LDM)}` : undefined;
    }
    const r = renameHead(rest, VAE_ATTN_TO_LDM);
    return j === 0 && r !== undefined ? `${LDM_PREFIX.vae}${side}.mid.attn_1.${r}` : undefined;
  }
  return undefined;
}

function vaeFromLdm(key: string, layout: VaeLayout): string | undefined {
  const n = stripPrefix(key, [LDM_PREFIX.vae]);
  const top = renameHead(n, VAE_TOP_FROM_LDM);
  if (top !== undefined) return top;
  let m: Groups | null;
  if ((m = match(n, /^encoder\.down\.(\d+)\.(block\.(\d+)|downsample)\.(.+)$/))) {
    const i = +m[1], rest = m[4];
    if (i >= layout.levels) return undefined;
    if (m[3] === '') return `encoder.down_blocks.${i}.downsamplers.0.${rest}`;
    return `encoder.down_blocks.${i}.resnets.${m[3]}.${keepOrRename(rest, VAE_RESNET_FROM_LDM)}`;
  }
  if ((m = match(n, /^decoder\.up\.(\d+)\.(block\.(\d+)|upsample)\.(.+)$/))) {
    const level = +m[1], rest = m[4];
    if (level >= layout.levels) return undefined;
    const i = layout.levels - 1 - level;
    if (m[3] === '') return `decoder.up_blocks.${i}.upsamplers.0.${rest}`;
    return `decoder.up_blocks.${i}.resnets.${m[3]}.${keepOrRename(rest, VAE_RESNET_FROM_LDM)}`;
  }
  if ((m = match(n, /^(encoder|decoder)\.mid\.(block_(\d)|attn_1)\.(.+)$/))) {
    const side = m[1], rest = m[4];
    if (m[3] !== '') return `${side}.mid_block.resnets.${+m[3] - 1}.${keepOrRename(rest, VAE_RESNET_FROM_LDM)}`;
    const r = renameHead(rest, VAE_ATTN_FROM_LDM);
    return r === undefined ? undefined : `${side}.mid_block.attentions.0.${r}`;
  }
  return undefined;
}

/** True for the LDM VAE attention weights that are 1×1 convs where diffusers has Linear weights. */
export function isVaeAttentionConv1x1(ldmKey: string): boolean {
  return /^first_stage_model\.(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(ldmKey);
}

// ---------------------------------------------------------------- CLIP text encoder

const OPENCLIP_LAYER: Record<string, string> = {
  'self_attn.out_proj': 'attn.out_proj',
  layer_norm1: 'ln_1',
  layer_norm2: 'ln_2',
  'mlp.fc1': 'mlp.c_fc',
  'mlp.fc2': 'mlp.c_proj',
};
const OPENCLIP_LAYER_FROM: Record<string, string> = Object.fromEntries(Object.entries(OPENCLIP_LAYER).map(([a, b]) => [b, a]));

/** HF CLIP name relative to `text_model.` (transformers 5 saves without that prefix; both are accepted). */
function hfClipRelative(name: string): string {
  const n = stripPrefix(name, ['text_encoder.']);
  return n.startsWith('text_model.') ? n.slice('text_model.'.length) : n;
}

function textToLdm(name: string, layout: TextEncoderLayout): LdmTarget | undefined {
  const rel = hfClipRelative(name);
  if (!/^(embeddings|encoder|final_layer_norm)\./.test(rel)) return undefined;
  if (layout.kind === 'hf') return { key: `${LDM_PREFIX.text_encoder}text_model.${rel}` };
  const P = LDM_PREFIX.text_encoder_openclip;
  if (rel === 'embeddings.token_embedding.weight') return { key: `${P}token_embedding.weight` };
  if (rel === 'embeddings.position_embedding.weight') return { key: `${P}positional_embedding` };
  let m: Groups | null;
  if ((m = match(rel, /^final_layer_norm\.(weight|bias)$/))) return { key: `${P}ln_final.${m[1]}` };
  if ((m = match(rel, /^encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)$/))) {
    const idx = { q: 0, k: 1, v: 2 }[m[2] as 'q' | 'k' | 'v'];
    return { key: `${P}transformer.resblocks.${m[1]}.attn.in_proj_${m[3]}`, rows: [idx * layout.width, (idx + 1) * layout.width] };
  }
  if ((m = match(rel, /^encoder\.layers\.(\d+)\.(.+)$/))) {
    const r = renameHead(m[2], OPENCLIP_LAYER);
    return r === undefined ? undefined : { key: `${P}transformer.resblocks.${m[1]}.${r}` };
  }
  return undefined;
}

function textFromLdm(key: string): string | undefined {
  if (key.startsWith(LDM_PREFIX.text_encoder + 'text_model.')) return key.slice(LDM_PREFIX.text_encoder.length);
  const P = LDM_PREFIX.text_encoder_openclip;
  if (!key.startsWith(P)) return undefined;
  const n = key.slice(P.length);
  if (n === 'token_embedding.weight') return 'text_model.embeddings.token_embedding.weight';
  if (n === 'positional_embedding') return 'text_model.embeddings.position_embedding.weight';
  let m: Groups | null;
  if ((m = match(n, /^ln_final\.(weight|bias)$/))) return `text_model.final_layer_norm.${m[1]}`;
  if ((m = match(n, /^transformer\.resblocks\.(\d+)\.(.+)$/))) {
    const r = renameHead(m[2], OPENCLIP_LAYER_FROM);
    return r === undefined ? undefined : `text_model.encoder.layers.${m[1]}.${r}`;
  }
  return undefined;
}

// ---------------------------------------------------------------- public mapping

/**
 * Full mapping of one diffusers tensor name (with or without its `unet.` / `vae.` / `text_encoder.` prefix)
 * to its LDM key, with slicing / reshaping notes. `arch` is the layout of that part; for the text encoder,
 * undefined means the SD1 HF layout.
 */
export function diffusersToLdmTarget(
  part: ModelPart,
  name: string,
  arch: UnetLayout | VaeLayout | TextEncoderLayout | undefined,
): LdmTarget | undefined {
  if (part === 'text_encoder') return textToLdm(name, (arch as TextEncoderLayout | undefined) ?? { kind: 'hf' });
  if (!arch) throw new Error(`diffusersToLdm: a ${part} layout is required`);
  if (part === 'unet') {
    const key = unetToLdm(name, arch as UnetLayout);
    return key === undefined ? undefined : { key };
  }
  const key = vaeToLdm(name, arch as VaeLayout);
  if (key === undefined) return undefined;
  return isVaeAttentionConv1x1(key) ? { key, conv1x1: true } : { key };
}

/** diffusers tensor name → LDM key, or undefined when the name is not part of that model. */
export function diffusersToLdm(
  part: ModelPart,
  name: string,
  arch: UnetLayout | VaeLayout | TextEncoderLayout | undefined,
): string | undefined {
  return diffusersToLdmTarget(part, name, arch)?.key;
}

/**
 * LDM key → (part, diffusers name without part prefix). For the OpenCLIP fused in_proj there is no single
 * diffusers name; undefined is returned (use `diffusersToLdmTarget` from the diffusers side instead).
 */
export function ldmToDiffusers(
  ldmKey: string,
  layouts: { unet?: UnetLayout; vae?: VaeLayout },
): { part: ModelPart; name: string } | undefined {
  if (ldmKey.startsWith(LDM_PREFIX.unet)) {
    if (!layouts.unet) return undefined;
    const name = unetFromLdm(ldmKey, layouts.unet);
    return name === undefined ? undefined : { part: 'unet', name };
  }
  if (ldmKey.startsWith(LDM_PREFIX.vae)) {
    if (!layouts.vae) return undefined;
    const name = vaeFromLdm(ldmKey, layouts.vae);
    return name === undefined ? undefined : { part: 'vae', name };
  }
  const name = textFromLdm(ldmKey);
  return name === undefined ? undefined : { part: 'text_encoder', name };
}

/** Shape of the LDM tensor given the diffusers tensor's shape (only VAE attention changes). */
export function ldmShapeFor(target: LdmTarget, diffusersShape: number[]): number[] {
  return target.conv1x1 && diffusersShape.length === 2 ? [...diffusersShape, 1, 1] : diffusersShape;
}

// ---------------------------------------------------------------- layout inference

function maxIndex(keys: string[], re: RegExp): number {
  let max = -1;
  for (const k of keys) {
    const m = match(k, re);
    if (m) max = Math.max(max, +m[1]);
  }
  return max;
}

function has(keys: string[], re: RegExp): boolean {
  return keys.some((k) => re.test(k));
}

/**
 * UNet layout from tensor names: LDM keys (with or without `model.diffusion_model.`) or diffusers keys
 * (with or without `unet.`). Other keys in the list are ignored.
 */
export function inferUnetLayout(ldmOrDiffusersKeys: string[]): UnetLayout {
  const keys = ldmOrDiffusersKeys.map((k) => stripPrefix(k, [LDM_PREFIX.unet, 'diffusion_model.', 'unet.']));
  if (has(keys, /^down_blocks\.\d+\./)) {
    const levels = maxIndex(keys, /^down_blocks\.(\d+)\./) + 1;
    const layersPerBlock = maxIndex(keys, /^down_blocks\.\d+\.resnets\.(\d+)\./) + 1;
    const attention = Array.from({ length: levels }, (_, i) => has(keys, new RegExp(`^down_blocks\\.${i}\\.attentions\\.`)));
    // SDXL's lowest level has attention only on the up side and in the middle; up_blocks.0 is that level.
    for (let i = 0; i < levels; i++) {
      if (has(keys, new RegExp(`^up_blocks\\.${levels - 1 - i}\\.attentions\\.`))) attention[i] = true;
    }
    return { levels, layersPerBlock, attention, midAttention: has(keys, /^mid_block\.attentions\.0\./) };
  }
  const maxIn = maxIndex(keys, /^input_blocks\.(\d+)\./);
  if (maxIn < 0) throw new UserError('cannot infer the UNet layout: no input_blocks.* or down_blocks.* tensors');
  const firstOp = Math.min(
    ...keys.flatMap((k) => {
      const m = match(k, /^input_blocks\.(\d+)\.0\.op\./);
      return m ? [+m[1]] : [];
    }),
  );
  // With no downsampler the model has a single level: every input block after conv_in is one res block.
  const per = Number.isFinite(firstOp) ? firstOp : maxIn + 1;
  const layersPerBlock = per - 1;
  const levels = Math.round((maxIn + 1) / per);
  const attention = Array.from({ length: levels }, (_, i) => {
    const down = has(keys, new RegExp(`^input_blocks\\.${1 + per * i}\\.1\\.`));
    const up = has(keys, new RegExp(`^output_blocks\\.${per * (levels - 1 - i)}\\.1\\.(?!conv\\.)`));
    return down || up;
  });
  const midAttention = has(keys, /^middle_block\.1\.(transformer_blocks|proj_in|norm)/);
  return { levels, layersPerBlock, attention, midAttention };
}

export function inferVaeLayout(ldmOrDiffusersKeys: string[]): VaeLayout {
  const keys = ldmOrDiffusersKeys.map((k) => stripPrefix(k, [LDM_PREFIX.vae, 'vae.']));
  const n = Math.max(
    maxIndex(keys, /^encoder\.down\.(\d+)\./),
    maxIndex(keys, /^decoder\.up\.(\d+)\./),
    maxIndex(keys, /^encoder\.down_blocks\.(\d+)\./),
    maxIndex(keys, /^decoder\.up_blocks\.(\d+)\./),
  );
  if (n < 0) throw new UserError('cannot infer the VAE layout: no encoder.down.* / decoder.up.* tensors');
  return { levels: n + 1 };
}

/** OpenCLIP when the keys have SD2's `cond_stage_model.model.` layout; the width comes from the shapes. */
export function inferTextEncoderLayout(keys: string[], shapeOf?: (key: string) => number[] | undefined): TextEncoderLayout {
  const probe = keys.find((k) => k.startsWith(LDM_PREFIX.text_encoder_openclip + 'transformer.resblocks.') && k.endsWith('.attn.out_proj.weight'));
  if (!probe) return { kind: 'hf' };
  const width = shapeOf?.(probe)?.[0];
  if (width === undefined) throw new UserError(`cannot infer the OpenCLIP text encoder width: no shape for '${probe}'`);
  return { kind: 'openclip', width };
}
