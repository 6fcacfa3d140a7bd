/**
 * A diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`), renamed into LDM keys so the
 * models see one layout. The text encoder stays in the transformers layout under
 * `cond_stage_model.transformer.text_model.*` (for SD2 too: diffusers stores SD2's OpenCLIP as a CLIPTextModel).
 * An SDXL folder (with `text_encoder_2/`) keeps both encoders where SGM files have them, in the transformers
 * layout: `conditioner.embedders.0.transformer.*` and `conditioner.embedders.1.transformer.*`.
 */
import { readFile, access } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile } from '../safetensors/index.ts';
import { UserError } from '../util/errors.ts';
import { SDXL_TEXT } from './arch.ts';
import { diffusersToLdmTarget, inferUnetLayout, inferVaeLayout, ldmShapeFor } from './keymap.ts';

interface Source {
  file: SafetensorsFile;
  key: string;
  shape: number[];
}

/** Config values that shapes cannot tell, read from the folder's config.json files. */
export interface DiffusersHints {
  unetHeads?: number[] | number;
  unetHeadDim?: number;
  textHeads?: number;
  textActivation?: 'quick_gelu' | 'gelu';
  textLayerNormEps?: number;
  vaeScalingFactor?: number;
  normEps?: number;
  /** SDXL's second text encoder (`text_encoder_2/config.json`). */
  text2Heads?: number;
  text2Activation?: 'quick_gelu' | 'gelu';
  text2LayerNormEps?: number;
  /** Weight files' tensors that map to nothing the models use ("file: name"). */
  unmapped?: string[];
}

async function firstExisting(dir: string, names: string[]): Promise<string | undefined> {
  for (const n of names) {
    const p = join(dir, n);
    if (await access(p).then(() => true, () => false)) return p;
  }
  return undefined;
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  const text = await readFile(path, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${path}: invalid JSON (${(e as Error).message})`);
  }
}

const WEIGHT_NAMES = {
  unet: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  vae: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  text_encoder: ['model.safetensors', 'model.fp16.safetensors'],
  text_encoder_2: ['model.safetensors', 'model.fp16.safetensors'],
} as const;

export async function openDiffusersFolder(
  dir: string,
  sources: Map<string, Source>,
  files: SafetensorsFile[],
): Promise<DiffusersHints> {
  const open = async (part: keyof typeof WEIGHT_NAMES): Promise<SafetensorsFile> => {
    const p = await firstExisting(join(dir, part), [...WEIGHT_NAMES[part]]);
    if (!p) {
      const bin = await firstExisting(join(dir, part), ['diffusion_pytorch_model.bin', 'pytorch_model.bin']);
      throw new UserError(
        bin
          ? `${bin}: pickled .bin weights are refused (they can run code when opened); save the folder with safe_serialization=True`
          : `diffusers folder ${dir}: missing ${part}/${WEIGHT_NAMES[part][0]}`,
      );
    }
    const f = await SafetensorsFile.open(p);
    files.push(f);
    return f;
  };

  const unmapped: string[] = [];
  const unet = await open('unet');
  const unetLayout = inferUnetLayout(unet.names());
  for (const info of unet.tensors.values()) {
    const t = diffusersToLdmTarget('unet', info.name, unetLayout);
    if (t) sources.set(t.key, { file: unet, key: info.name, shape: ldmShapeFor(t, info.shape) });
    else unmapped.push(`unet: ${info.name}`);
  }

  const vae = await open('vae');
  const vaeLayout = inferVaeLayout(vae.names());
  for (const info of vae.tensors.values()) {
    const t = diffusersToLdmTarget('vae', info.name, vaeLayout);
    if (t) sources.set(t.key, { file: vae, key: info.name, shape: ldmShapeFor(t, info.shape) });
    else unmapped.push(`vae: ${info.name}`);
  }

  const sdxl = await firstExisting(join(dir, 'text_encoder_2'), [...WEIGHT_NAMES.text_encoder_2]) !== undefined;
  const addTextEncoder = (f: SafetensorsFile, prefix: string) => {
    for (const info of f.tensors.values()) {
      // transformers 5 saves CLIPTextModel without the `text_model.` prefix; both layouts occur.
      const rest = info.name.startsWith('text_model.') || info.name.startsWith('text_projection.') ? info.name : `text_model.${info.name}`;
      if (rest.endsWith('position_ids')) continue;
      sources.set(`${prefix}${rest}`, { file: f, key: info.name, shape: info.shape });
    }
  };
  addTextEncoder(await open('text_encoder'), sdxl ? SDXL_TEXT.te1 : 'cond_stage_model.transformer.');
  if (sdxl) addTextEncoder(await open('text_encoder_2'), SDXL_TEXT.te2Hf);

  const hints: DiffusersHints = unmapped.length > 0 ? { unmapped } : {};
  const unetCfg = await readJson(join(dir, 'unet', 'config.json'));
  if (unetCfg) {
    // diffusers keeps SD1's historical name: `attention_head_dim` holds the head count unless
    // `num_attention_heads` is set.
    const heads = (unetCfg.num_attention_heads ?? unetCfg.attention_head_dim) as number[] | number | undefined;
    if (heads !== undefined && heads !== null) hints.unetHeads = heads;
    if (typeof unetCfg.norm_eps === 'number') hints.normEps = unetCfg.norm_eps;
  }
  const teCfg = await readJson(join(dir, 'text_encoder', 'config.json'));
  if (teCfg) {
    if (typeof teCfg.num_attention_heads === 'number') hints.textHeads = teCfg.num_attention_heads;
    if (teCfg.hidden_act === 'gelu' || teCfg.hidden_act === 'quick_gelu') hints.textActivation = teCfg.hidden_act;
    if (typeof teCfg.layer_norm_eps === 'number') hints.textLayerNormEps = teCfg.layer_norm_eps;
  }
  const te2Cfg = sdxl ? await readJson(join(dir, 'text_encoder_2', 'config.json')) : undefined;
  if (te2Cfg) {
    if (typeof te2Cfg.num_attention_heads === 'number') hints.text2Heads = te2Cfg.num_attention_heads;
    if (te2Cfg.hidden_act === 'gelu' || te2Cfg.hidden_act === 'quick_gelu') hints.text2Activation = te2Cfg.hidden_act;
    if (typeof te2Cfg.layer_norm_eps === 'number') hints.text2LayerNormEps = te2Cfg.layer_norm_eps;
  }
  const vaeCfg = await readJson(join(dir, 'vae', 'config.json'));
  if (vaeCfg && typeof vaeCfg.scaling_factor === 'number') hints.vaeScalingFactor = vaeCfg.scaling_factor;
  return hints;
}
