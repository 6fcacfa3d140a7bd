/**
 * Writes LoRA modules as files other tools load unchanged:
 * - kohya / A1111: `lora_unet_…` / `lora_te_…` names, `.lora_down.weight`, `.lora_up.weight`, `.alpha` (0-d),
 *   `ss_*` metadata as strings plus `sshs_model_hash` / `sshs_legacy_hash`;
 * - diffusers / PEFT: `unet.<path>.lora_A.weight` / `.lora_B.weight` with rank and alpha in the header's
 *   `lora_adapter_metadata` (there is no alpha tensor in this format).
 * Values are written as given (float32 by default), so a kohya → PEFT → kohya round trip is bit-exact.
 */
import { f32ToBf16, f32ToF16 } from '../safetensors/float.ts';
import { writeSafetensors, type TensorToWrite } from '../safetensors/index.ts';
import { diffusersToLdm, ldmToDiffusers, LDM_PREFIX, type UnetLayout } from '../sd/keymap.ts';
import { UserError } from '../util/errors.ts';
import { diffusersModuleName, kohyaModuleName, type LoraPart } from './names.ts';
import { sshsHashes, type LaidOutTensor } from './hash.ts';
import type { F32Tensor, LoraModule } from './types.ts';

export type SaveDType = 'F32' | 'F16' | 'BF16';

const DTYPE_ALIGN: Record<SaveDType, number> = { F32: 4, F16: 2, BF16: 2 };

function encode(t: F32Tensor, dtype: SaveDType): Uint8Array {
  const v = dtype === 'F32' ? t.data : dtype === 'F16' ? f32ToF16(t.data) : f32ToBf16(t.data);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

/** safetensors' own order: larger alignment first, then by name; kohya's files come out this way. */
function ordered(tensors: Map<string, { t: F32Tensor; dtype: SaveDType }>): LaidOutTensor[] {
  return [...tensors.entries()]
    .sort(([a, x], [b, y]) => DTYPE_ALIGN[y.dtype] - DTYPE_ALIGN[x.dtype] || (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, { t, dtype }]) => ({ name, dtype, shape: t.shape, bytes: encode(t, dtype) }));
}

async function save(path: string, laid: LaidOutTensor[], metadata: Record<string, string>): Promise<void> {
  const out = new Map<string, TensorToWrite>();
  for (const t of laid) out.set(t.name, { dtype: t.dtype as SaveDType, shape: t.shape, data: t.bytes });
  await writeSafetensors(path, out, metadata);
}

/** Alpha that reproduces the module's scale with kohya's alpha/rank rule. */
function alphaFor(m: LoraModule): number {
  const rank = m.rank ?? m.tensors.down?.shape[0];
  if (rank === undefined) return m.alpha ?? 1;
  return m.alpha !== undefined && m.alpha / rank === m.scale ? m.alpha : m.scale * rank;
}

function requireLora(m: LoraModule, format: string): void {
  if ((m.kind !== 'lora' && m.kind !== 'locon') || m.tensors.mid || !m.tensors.down || !m.tensors.up) {
    throw new UserError(`LoRA module ${m.name || m.path}: ${m.kind}${m.tensors.mid ? ' (CP/Tucker)' : ''} cannot be written in ${format} format`);
  }
}

export interface KohyaMetadataInput {
  outputName: string;
  networkDim: number;
  networkAlpha: number;
  /** sd-scripts values: sd_v1, sd_v2, sd_v2_v, sdxl_base_v1-0, … */
  baseModelVersion: string;
  networkModule?: string;
  networkArgs?: Record<string, string>;
  /** {"<dataset dir>": {"<tag>": count}} */
  tagFrequency?: Record<string, Record<string, number>>;
  /** Unix seconds. */
  trainingStartedAt?: number;
  trainingFinishedAt?: number;
  /** Any other ss_* (or other) keys; values are stringified like Python's str(). */
  extra?: Record<string, string | number | boolean | null>;
}

/** Python str() of a value, as sd-scripts writes every metadata value. */
function pyStr(v: string | number | boolean | null): string {
  if (v === null) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (typeof v === 'number') return Number.isInteger(v) && !Object.is(v, -0) ? String(v) : pyFloat(v);
  return v;
}

/** Python str() of a float: always with a fraction or exponent ("8.0", "1e-05"). */
function pyFloat(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? 'nan' : v > 0 ? 'inf' : '-inf';
  if (Number.isInteger(v) && Math.abs(v) < 1e16) return `${v}.0`;
  const s = String(v);
  // JS writes 1e-7, Python 1e-07.
  return s.replace(/e([+-])(\d)$/, 'e$10$2');
}

export function kohyaMetadata(input: KohyaMetadataInput): Record<string, string> {
  const md: Record<string, string> = {
    ss_output_name: input.outputName,
    ss_network_module: input.networkModule ?? 'networks.lora',
    ss_network_dim: pyStr(input.networkDim),
    // sd-scripts' network_alpha is a float and its timestamps come from time.time().
    ss_network_alpha: pyFloat(input.networkAlpha),
    ss_base_model_version: input.baseModelVersion,
    ss_v2: pyStr(/^sd_v2/.test(input.baseModelVersion)),
  };
  if (input.networkArgs) md.ss_network_args = JSON.stringify(input.networkArgs);
  if (input.tagFrequency) md.ss_tag_frequency = JSON.stringify(input.tagFrequency);
  if (input.trainingStartedAt !== undefined) md.ss_training_started_at = pyFloat(input.trainingStartedAt);
  if (input.trainingFinishedAt !== undefined) md.ss_training_finished_at = pyFloat(input.trainingFinishedAt);
  for (const [k, v] of Object.entries(input.extra ?? {})) md[k] = pyStr(v);
  return md;
}

/**
 * kohya file. `metadata` is written as given (see `kohyaMetadata`) and the two sshs hashes are added.
 * Text-encoder modules get `lora_te_` unless the set has a second text encoder (SDXL: `lora_te1_`/`lora_te2_`).
 */
export async function writeKohyaLora(
  path: string,
  modules: LoraModule[],
  metadata: Record<string, string> = {},
  options: {
    dtype?: SaveDType;
    /**
     * kohya names SDXL UNet modules by LDM path (`lora_unet_input_blocks_4_1_…`) and SD1/SD2 ones by diffusers
     * path. With a layout, diffusers-path UNet modules are renamed to LDM paths (use for SDXL).
     */
    ldmUnetNames?: UnetLayout;
  } = {},
): Promise<{ sshs_model_hash: string; sshs_legacy_hash: string }> {
  const dtype = options.dtype ?? 'F32';
  const teStyle = modules.some((m) => m.part === 'te2') ? 'te1' : 'te';
  const tensors = new Map<string, { t: F32Tensor; dtype: SaveDType }>();
  for (const m of modules) {
    requireLora(m, 'kohya');
    let path = m.path;
    if (options.ldmUnetNames && m.part === 'unet' && !LDM_UNET_PATH.test(path)) {
      const k = diffusersToLdm('unet', `${path}.weight`, options.ldmUnetNames);
      if (!k) throw new UserError(`LoRA module ${m.name || path}: no LDM name for ${path} in this UNet layout`);
      path = k.slice(LDM_PREFIX.unet.length, -'.weight'.length);
    }
    const name = kohyaModuleName({ part: m.part, path }, teStyle);
    if (tensors.has(`${name}.lora_down.weight`)) throw new UserError(`LoRA module ${name} appears twice`);
    tensors.set(`${name}.lora_down.weight`, { t: m.tensors.down!, dtype });
    tensors.set(`${name}.lora_up.weight`, { t: m.tensors.up!, dtype });
    tensors.set(`${name}.alpha`, { t: { shape: [], data: new Float32Array([alphaFor(m)]) }, dtype });
    if (m.dora) {
      if (m.dora.axis !== 'in') throw new UserError(`LoRA module ${name}: a PEFT DoRA magnitude (per output row) has no kohya dora_scale equivalent`);
      tensors.set(`${name}.dora_scale`, { t: m.dora.magnitude, dtype });
    }
  }
  const laid = ordered(tensors);
  const hashes = sshsHashes(laid, metadata);
  await save(path, laid, { ...metadata, ...hashes });
  return hashes;
}

const COMPONENT: Record<LoraPart, string> = { unet: 'unet', te: 'text_encoder', te2: 'text_encoder_2' };

/** Most frequent value; ties go to the first seen. */
function mode(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1])[0]![0];
}

const LDM_UNET_PATH = /^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)\./;

/** diffusers path of a UNet module given in LDM naming (SDXL-style kohya files). */
function diffusersPath(m: LoraModule, layout: UnetLayout | undefined): string {
  if (m.part !== 'unet' || !LDM_UNET_PATH.test(m.path)) return m.path;
  if (!layout) throw new UserError(`LoRA module ${m.name}: LDM-named UNet modules need the model's layout to be written in diffusers format`);
  const d = ldmToDiffusers(`${LDM_PREFIX.unet}${m.path}.weight`, { unet: layout });
  if (!d) throw new UserError(`LoRA module ${m.name}: no diffusers name for ${m.path} in this UNet layout`);
  return d.name.slice(0, -'.weight'.length);
}

/**
 * diffusers / PEFT file, as `save_lora_weights` writes it. Per component, the most common rank and alpha
 * become `r` / `lora_alpha`; modules that differ go to `rank_pattern` / `alpha_pattern` (full paths).
 */
export async function writePeftLora(
  path: string,
  modules: LoraModule[],
  options: { dtype?: SaveDType; unetLayout?: UnetLayout; extraMetadata?: Record<string, string> } = {},
): Promise<void> {
  const dtype = options.dtype ?? 'F32';
  const tensors = new Map<string, { t: F32Tensor; dtype: SaveDType }>();
  const config: Record<string, unknown> = {};
  const byPart = new Map<LoraPart, { path: string; rank: number; alpha: number }[]>();
  for (const m of modules) {
    requireLora(m, 'diffusers/PEFT');
    const p = diffusersPath(m, options.unetLayout);
    const name = diffusersModuleName({ part: m.part, path: p });
    if (tensors.has(`${name}.lora_A.weight`)) throw new UserError(`LoRA module ${name} appears twice`);
    tensors.set(`${name}.lora_A.weight`, { t: m.tensors.down!, dtype });
    tensors.set(`${name}.lora_B.weight`, { t: m.tensors.up!, dtype });
    if (m.dora) {
      if (m.dora.axis !== 'out') throw new UserError(`LoRA module ${m.name}: a kohya dora_scale (per input column) has no PEFT magnitude equivalent`);
      tensors.set(`${name}.lora_magnitude_vector`, { t: m.dora.magnitude, dtype });
    }
    const rank = m.tensors.down!.shape[0]!;
    const list = byPart.get(m.part) ?? [];
    list.push({ path: p, rank, alpha: alphaFor(m) });
    byPart.set(m.part, list);
  }
  for (const [part, list] of byPart) {
    const c = COMPONENT[part];
    const r = mode(list.map((x) => x.rank));
    const alpha = mode(list.map((x) => x.alpha));
    config[`${c}.r`] = r;
    config[`${c}.lora_alpha`] = alpha;
    config[`${c}.target_modules`] = list.map((x) => x.path).sort();
    config[`${c}.rank_pattern`] = Object.fromEntries(list.filter((x) => x.rank !== r).map((x) => [x.path, x.rank]));
    config[`${c}.alpha_pattern`] = Object.fromEntries(list.filter((x) => x.alpha !== alpha).map((x) => [x.path, x.alpha]));
    config[`${c}.use_dora`] = modules.some((m) => m.part === part && m.dora);
    config[`${c}.peft_type`] = 'LORA';
  }
  const metadata = { ...(options.extraMetadata ?? {}), format: 'pt', lora_adapter_metadata: JSON.stringify(config) };
  await save(path, ordered(tensors), metadata);
}
