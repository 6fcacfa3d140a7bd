/**
 * PEFT LoRA adapters for causal LMs, in the folder layout `PeftModel.save_pretrained` writes and
 * `PeftModel.from_pretrained` reads: `adapter_config.json` (sorted keys, 2-space indent) and
 * `adapter_model.safetensors` with keys `base_model.model.<module>.lora_A.weight` [r, in] and
 * `….lora_B.weight` [out, r] (the adapter name is not in the keys) and metadata `{"format": "pt"}`.
 *
 * A module's update is W' = W + s·B·A with s = alpha/r (alpha/√r with `use_rslora`), where `rank_pattern`
 * / `alpha_pattern` override r and alpha for modules whose name ends in a pattern, as PEFT matches them.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../safetensors/index.ts';
import { matmulAccumulate } from '../lora/delta.ts';
import { addLowRankOrt } from '../lora/lowrank-ort.ts';
import type { F32Tensor, WeightMap } from '../lora/types.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';
import { UserError } from '../util/errors.ts';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
const KEY_PREFIX = 'base_model.model.';

export const peftKey = (module: string, part: 'A' | 'B') => `${KEY_PREFIX}${module}.lora_${part}.weight`;

export interface PeftModule {
  /** transformers module path, e.g. model.layers.0.self_attn.q_proj (its weight is `<module>.weight`). */
  module: string;
  A: F32Tensor;
  B: F32Tensor;
  rank: number;
  alpha: number;
  scale: number;
}

export interface PeftAdapter {
  path: string;
  config: Record<string, unknown>;
  modules: PeftModule[];
}

/** PEFT's pattern lookup: the first key k with `(.*\.)?k$` matching the module name. */
function fromPattern(pattern: unknown, module: string): number | undefined {
  if (!pattern || typeof pattern !== 'object') return undefined;
  for (const [k, v] of Object.entries(pattern as Record<string, unknown>)) {
    if (typeof v === 'number' && new RegExp(`(.*\\.)?${k}$`).test(module)) return v;
  }
  return undefined;
}

export function loraScale(config: Record<string, unknown>, module: string, rank: number): { alpha: number; scale: number } {
  const alpha = fromPattern(config.alpha_pattern, module) ?? Number(config.lora_alpha ?? rank);
  const scale = config.use_rslora === true ? alpha / Math.sqrt(rank) : alpha / rank;
  return { alpha, scale };
}

/** Reads an adapter folder (or the folder of a given adapter_model.safetensors). */
export async function loadPeftAdapter(path: string): Promise<PeftAdapter> {
  const dir = path.endsWith('.safetensors') ? join(path, '..') : path;
  const cfgFile = join(dir, ADAPTER_CONFIG);
  const text = await readFile(cfgFile, 'utf8').catch(() => {
    throw new UserError(`adapter ${path}: no ${ADAPTER_CONFIG} (a PEFT adapter folder holds ${ADAPTER_CONFIG} and ${ADAPTER_WEIGHTS})`);
  });
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new UserError(`${cfgFile} is not valid JSON: ${(e as Error).message}`);
  }
  if (config.peft_type !== undefined && config.peft_type !== 'LORA') throw new UserError(`${cfgFile}: peft_type '${String(config.peft_type)}' is not supported (LORA)`);
  if (config.use_dora === true) throw new UserError(`${cfgFile}: DoRA adapters (use_dora) are not supported for LLMs`);
  const file = join(dir, ADAPTER_WEIGHTS);
  if (!(await stat(file).then(() => true, () => false))) throw new UserError(`adapter ${dir}: ${ADAPTER_WEIGHTS} is missing`);
  const f = await SafetensorsFile.open(file);
  const parts = new Map<string, { A?: F32Tensor; B?: F32Tensor }>();
  try {
    for (const name of f.names()) {
      const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$/.exec(name);
      if (!m) {
        if (/lora_embedding_|lora_magnitude_vector|modules_to_save/.test(name)) throw new UserError(`${file}: tensor '${name}' (embedding LoRA, DoRA or modules_to_save) is not supported`);
        throw new UserError(`${file}: tensor '${name}' is not a PEFT LoRA key (base_model.model.<module>.lora_A/B.weight)`);
      }
      const e = parts.get(m[1]!) ?? {};
      e[m[2] as 'A' | 'B'] = { shape: [...f.info(name).shape], data: await f.readFloat32(name) };
      parts.set(m[1]!, e);
    }
  } finally {
    await f.close();
  }
  const modules: PeftModule[] = [];
  for (const [module, { A, B }] of parts) {
    if (!A || !B) throw new UserError(`${file}: module '${module}' has lora_${A ? 'A' : 'B'} but no lora_${A ? 'B' : 'A'}`);
    const rank = A.shape[0]!;
    if (A.shape.length !== 2 || B.shape.length !== 2 || B.shape[1] !== rank) {
      throw new UserError(`${file}: module '${module}': lora_A [${A.shape}] and lora_B [${B.shape}] do not form a rank-r pair`);
    }
    modules.push({ module, A, B, rank, ...loraScale(config, module, rank) });
  }
  return { path: dir, config, modules };
}

export interface AdapterStackItem {
  adapter: PeftAdapter;
  /** Multiplier on the adapter's update (1 = as trained). */
  weight: number;
}

/** W += weight·s·B·A for every module of every adapter, in place; errors name the adapter and module. */
export async function mergeAdapters(weights: WeightMap, stack: readonly AdapterStackItem[]): Promise<void> {
  for (const { adapter, weight } of stack) {
    for (const m of adapter.modules) {
      const w = weights.get(`${m.module}.weight`);
      if (!w) throw new UserError(`adapter ${adapter.path}: module '${m.module}' is not in the base model`);
      const [rows, cols] = w.shape as [number, number];
      if (m.B.shape[0] !== rows || m.A.shape[1] !== cols) {
        throw new UserError(`adapter ${adapter.path}: module '${m.module}' is [${m.B.shape[0]}, ${m.A.shape[1]}], the base weight is [${w.shape}]`);
      }
      const c = weight * m.scale;
      if (c === 0) continue;
      if (rows * cols * m.rank > 1 << 24) {
        const up = Float32Array.from(m.B.data, (x) => x * c);
        await addLowRankOrt(w.data, up, m.A.data, rows, m.rank, cols);
      } else matmulAccumulate(w.data, m.B.data, m.A.data, rows, m.rank, cols, c);
    }
  }
}

/**
 * The weights an adapter stack changes, merged into copies of the base buffers (the base stays pristine):
 * feed them as parameter overrides to run the stack without touching the shared model.
 */
export async function adapterWeights(base: WeightMap, stack: readonly AdapterStackItem[]): Promise<Map<string, Float32Array>> {
  const copies: WeightMap = new Map();
  for (const { adapter } of stack)
    for (const m of adapter.modules) {
      const key = `${m.module}.weight`;
      const w = base.get(key);
      if (w && !copies.has(key)) copies.set(key, { shape: w.shape, data: w.data.slice() });
      if (!w) throw new UserError(`adapter ${adapter.path}: module '${m.module}' is not in the base model`);
    }
  await mergeAdapters(copies, stack);
  return new Map([...copies].map(([k, t]) => [k, t.data]));
}

export interface AdapterToWrite {
  rank: number;
  alpha: number;
  dropout: number;
  /** Module base names the adapter targets (q_proj, …), as PEFT stores the resolved target set. */
  targetModules: string[];
  baseModel: string;
  /** Tensors by PEFT key. */
  tensors: ReadonlyMap<string, F32Tensor>;
}

/** adapter_config.json as peft 0.21 writes it for a plain LoRA (every field it writes, sorted). */
export function adapterConfigJson(a: AdapterToWrite): string {
  const cfg: Record<string, unknown> = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: a.baseModel,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: a.alpha,
    lora_bias: false,
    lora_dropout: a.dropout,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    peft_version: '0.21.0',
    qalora_group_size: 16,
    r: a.rank,
    rank_pattern: {},
    revision: null,
    target_modules: [...a.targetModules].sort(),
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: false,
    velora_config: null,
  };
  const sorted = Object.fromEntries(Object.keys(cfg).sort().map((k) => [k, cfg[k]]));
  return JSON.stringify(sorted, null, 2);
}

/** Writes the adapter folder (both files atomically). */
export async function writePeftAdapter(dir: string, a: AdapterToWrite): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  for (const [k, t] of a.tensors) tensors.set(k, { dtype: 'F32', shape: t.shape, data: t.data });
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS), tensors, { format: 'pt' });
  await writeBufferAtomic(join(dir, ADAPTER_CONFIG), adapterConfigJson(a));
}
