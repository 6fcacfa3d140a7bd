/**
 * LoRA module names in every naming scheme seen in the wild, reduced to (part, path):
 *   kohya / A1111     lora_unet_down_blocks_0_…_to_q, lora_te_text_model_…, lora_te1_…, lora_te2_…
 *   diffusers / PEFT  unet.down_blocks.0.….to_q, text_encoder.text_model.…, bare paths, attn-procs names
 * `path` is dotted; for the UNet it is a diffusers path (SD1/2 kohya, PEFT) or an LDM path (SDXL kohya).
 */

import { diffusersToLdm, ldmToDiffusers, LDM_PREFIX, type UnetLayout } from '../sd/keymap.ts';

export type LoraPart = 'unet' | 'te' | 'te2';

export interface ModuleName {
  part: LoraPart;
  /** Dotted module path within its part, without `.weight`. */
  path: string;
}

const KOHYA_PREFIX: [string, LoraPart][] = [
  ['lora_unet_', 'unet'],
  ['lora_te1_', 'te'],
  ['lora_te2_', 'te2'],
  ['lora_te_', 'te'],
];
const DIFFUSERS_PREFIX: [string, LoraPart][] = [
  ['unet.', 'unet'],
  // ComfyUI-saved LoRAs name modules by the model's own (LDM / HF) paths.
  ['model.diffusion_model.', 'unet'],
  ['diffusion_model.', 'unet'],
  ['text_encoders.clip_l.transformer.', 'te'],
  ['text_encoders.clip_g.transformer.', 'te2'],
  ['text_encoder_2.', 'te2'],
  ['text_encoder.', 'te'],
];

/**
 * Identifiers that contain `_` in diffusers, LDM and HF CLIP module paths. kohya flattens every `.` to `_`,
 * so these are re-joined after splitting; longest first so that e.g. final_layer_norm wins over layer_norm.
 */
const COMPOUND_WORDS = [
  'final_layer_norm', 'conv_norm_out', 'time_emb_proj', 'position_embedding', 'token_embedding',
  'transformer_blocks', 'skip_connection', 'time_embedding', 'add_embedding', 'conv_shortcut',
  'output_blocks', 'input_blocks', 'middle_block', 'down_blocks', 'nin_shortcut', 'layer_norm1', 'layer_norm2',
  'emb_layers', 'out_layers', 'in_layers', 'time_embed', 'label_emb', 'text_model', 'self_attn', 'up_blocks',
  'mid_block', 'proj_out', 'proj_in', 'conv_out', 'conv_in', 'linear_1', 'linear_2', 'out_proj', 'q_proj',
  'k_proj', 'v_proj', 'to_out', 'to_q', 'to_k', 'to_v', 'in_proj', 'c_fc', 'c_proj', 'ln_final', 'ln_1', 'ln_2',
  'attn_1', 'block_1', 'block_2', 'norm_out',
].sort((a, b) => b.split('_').length - a.split('_').length || b.length - a.length);

/** kohya's flattened path → dotted path ("down_blocks_0_attentions_0_proj_in" → "down_blocks.0.attentions.0.proj_in"). */
export function kohyaPathToDotted(flat: string): string {
  const tokens = flat.split('_');
  const out: string[] = [];
  for (let i = 0; i < tokens.length; ) {
    let taken = 1;
    for (const word of COMPOUND_WORDS) {
      const parts = word.split('_');
      if (parts.length > 1 && parts.every((p, k) => tokens[i + k] === p)) {
        taken = parts.length;
        break;
      }
    }
    out.push(tokens.slice(i, i + taken).join('_'));
    i += taken;
  }
  return out.join('.');
}

export function dottedToKohyaPath(dotted: string): string {
  return dotted.replaceAll('.', '_');
}

/** Reduces diffusers' older spellings to the plain module path. */
function cleanDiffusersPath(path: string): string {
  return path
    .replace(/\.processor\./g, '.')
    .replace(/\.(to_q|to_k|to_v)_lora$/, '.$1')
    .replace(/\.to_out_lora$/, '.to_out.0')
    .replace(/\.(q_proj|k_proj|v_proj|out_proj)_lora$/, '.$1')
    .replace(/_lora$/, '');
}

function guessBarePart(path: string): LoraPart | undefined {
  if (/^(down_blocks|mid_block|up_blocks|conv_in|conv_out|conv_norm_out|time_embedding|add_embedding|input_blocks|middle_block|output_blocks|time_embed|label_emb)\b/.test(path)) return 'unet';
  if (/^(text_model|encoder\.layers|embeddings|final_layer_norm)\b/.test(path)) return 'te';
  return undefined;
}

/** Parses a module name (the tensor key without its LoRA suffix) in any of the supported schemes. */
export function parseModuleName(module: string): ModuleName | undefined {
  for (const [prefix, part] of KOHYA_PREFIX) {
    if (module.startsWith(prefix)) return { part, path: kohyaPathToDotted(module.slice(prefix.length)) };
  }
  for (const [prefix, part] of DIFFUSERS_PREFIX) {
    if (module.startsWith(prefix)) return { part, path: cleanDiffusersPath(module.slice(prefix.length)) };
  }
  const path = cleanDiffusersPath(module);
  const part = guessBarePart(path);
  return part ? { part, path } : undefined;
}

/** kohya module name for a part + dotted path (SD1/2 convention: `lora_te_` for the single text encoder). */
export function kohyaModuleName(m: ModuleName, teStyle: 'te' | 'te1' = 'te'): string {
  const prefix = m.part === 'unet' ? 'lora_unet_' : m.part === 'te2' ? 'lora_te2_' : `lora_${teStyle}_`;
  return prefix + dottedToKohyaPath(m.path);
}

/** diffusers / PEFT module name (with the component prefix). */
export function diffusersModuleName(m: ModuleName): string {
  const prefix = m.part === 'unet' ? 'unet.' : m.part === 'te2' ? 'text_encoder_2.' : 'text_encoder.';
  return prefix + m.path;
}

/**
 * The LoRA module (part + diffusers-style path) that patches an LDM weight key, for writers: a trainer
 * holding LDM keys gets kohya names via `kohyaModuleName(moduleForLdmKey(key, layout)!)`. UNet modules use
 * diffusers paths (kohya's SD1/SD2 convention); text-encoder modules the HF CLIP path (`text_model.…`).
 */
export function moduleForLdmKey(ldmKey: string, unetLayout: UnetLayout): ModuleName | undefined {
  const stem = ldmKey.replace(/\.weight$/, '');
  if (stem === ldmKey) return undefined;
  if (ldmKey.startsWith(LDM_PREFIX.unet)) {
    const d = ldmToDiffusers(ldmKey, { unet: unetLayout });
    return d ? { part: 'unet', path: d.name.slice(0, -'.weight'.length) } : undefined;
  }
  if (stem.startsWith(LDM_PREFIX.text_encoder + 'text_model.')) return { part: 'te', path: stem.slice(LDM_PREFIX.text_encoder.length) };
  return undefined;
}

/**
 * LDM weight key a LoRA module patches, from its name alone (no model at hand): SD1/SD2 kohya and PEFT
 * names go through the diffusers → LDM rules of `layout`, LDM-style names (SDXL kohya) map directly.
 * With a model loaded, prefer `TargetIndex`, which also checks the weight exists.
 */
export function loraModuleToLdmKey(module: string, layout: UnetLayout): string | undefined {
  const m = parseModuleName(module);
  if (!m) return undefined;
  if (m.part === 'unet') {
    if (/^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\./.test(m.path)) return `${LDM_PREFIX.unet}${m.path}.weight`;
    return diffusersToLdm('unet', `${m.path}.weight`, layout);
  }
  if (m.part === 'te') return diffusersToLdm('text_encoder', `${m.path}.weight`, undefined);
  return undefined;
}
