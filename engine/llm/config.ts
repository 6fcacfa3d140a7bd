/**
 * The architecture of a Llama-family causal LM, read from a Hugging Face `config.json`. Llama, Mistral and
 * Qwen2/2.5/3 are one decoder (Touvron et al. 2023: pre-RMSNorm blocks, rotary positions, SwiGLU MLP) that
 * differ by flags: Qwen2 adds biases to q/k/v, Qwen3 RMS-normalises each q and k head, Mistral limits
 * attention to a sliding window. Both config generations are read: transformers 4 writes `rope_theta` and
 * `rope_scaling` at the top level, transformers 5 nests them in `rope_parameters`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { UserError } from '../util/errors.ts';

export type RopeType = 'default' | 'linear' | 'dynamic' | 'llama3';

export interface RopeConfig {
  type: RopeType;
  theta: number;
  /** linear / dynamic / llama3: the context extension factor. */
  factor: number;
  /** llama3 only. */
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositions: number;
}

export interface LlmArch {
  modelType: string;
  vocab: number;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  rmsEps: number;
  maxPositions: number;
  rope: RopeConfig;
  tieEmbeddings: boolean;
  /** Biases on q/k/v (Qwen2, or Llama's `attention_bias`); o_proj has one only with `attention_bias`. */
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  /** Qwen3: RMSNorm over each q and k head before rotary. */
  qkNorm: boolean;
  /** Mistral/Qwen: keys further back than this are not attended (null: unlimited). */
  slidingWindow: number | null;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

const SUPPORTED = ['llama', 'mistral', 'qwen2', 'qwen3'];

type Json = Record<string, unknown>;

function num(cfg: Json, key: string, file: string, fallback?: number): number {
  const v = cfg[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    throw new UserError(`${file}: '${key}' is missing`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new UserError(`${file}: '${key}' must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function positiveInt(cfg: Json, key: string, file: string, fallback?: number): number {
  const v = num(cfg, key, file, fallback);
  if (!Number.isInteger(v) || v < 1) throw new UserError(`${file}: '${key}' must be a positive integer, got ${v}`);
  return v;
}

function ropeConfig(cfg: Json, file: string, maxPositions: number): RopeConfig {
  const nested = (cfg.rope_parameters ?? null) as Json | null;
  const scaling = (nested ?? cfg.rope_scaling ?? null) as Json | null;
  const theta = num(nested && nested.rope_theta !== undefined ? nested : cfg, 'rope_theta', file, 10000);
  const rawType = scaling ? (scaling.rope_type ?? scaling.type ?? 'default') : 'default';
  if (!['default', 'linear', 'dynamic', 'llama3'].includes(String(rawType))) {
    throw new UserError(`${file}: rope scaling type '${String(rawType)}' is not supported (default, linear, dynamic, llama3)`);
  }
  const type = rawType as RopeType;
  const s = scaling ?? {};
  const factor = type === 'default' ? 1 : num(s, 'factor', `${file} rope scaling`);
  if (factor <= 0) throw new UserError(`${file}: rope scaling factor must be > 0, got ${factor}`);
  return {
    type,
    theta,
    factor,
    lowFreqFactor: type === 'llama3' ? num(s, 'low_freq_factor', `${file} rope scaling`) : 1,
    highFreqFactor: type === 'llama3' ? num(s, 'high_freq_factor', `${file} rope scaling`) : 1,
    originalMaxPositions: type === 'llama3' ? positiveInt(s, 'original_max_position_embeddings', `${file} rope scaling`) : maxPositions,
  };
}

/** The architecture described by a parsed config.json; `file` names it in errors. */
export function parseLlmConfig(cfg: Json, file: string): LlmArch {
  const modelType = String(cfg.model_type ?? '');
  if (!SUPPORTED.includes(modelType)) {
    throw new UserError(`${file}: model_type '${modelType}' is not supported; supported: ${SUPPORTED.join(', ')}`);
  }
  const hidden = positiveInt(cfg, 'hidden_size', file);
  const heads = positiveInt(cfg, 'num_attention_heads', file);
  const kvHeads = positiveInt(cfg, 'num_key_value_heads', file, heads);
  if (heads % kvHeads !== 0) throw new UserError(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = positiveInt(cfg, 'head_dim', file, hidden / heads);
  if (headDim % 2 !== 0) throw new UserError(`${file}: head_dim ${headDim} must be even for rotary embeddings`);
  const act = cfg.hidden_act ?? 'silu';
  if (act !== 'silu') throw new UserError(`${file}: hidden_act '${String(act)}' is not supported (silu)`);
  const maxPositions = positiveInt(cfg, 'max_position_embeddings', file, 4096);
  const attentionBias = cfg.attention_bias === true;
  const eos = cfg.eos_token_id;
  const window = cfg.use_sliding_window === false ? null : cfg.sliding_window;
  return {
    modelType,
    vocab: positiveInt(cfg, 'vocab_size', file),
    hidden,
    layers: positiveInt(cfg, 'num_hidden_layers', file),
    heads,
    kvHeads,
    headDim,
    intermediate: positiveInt(cfg, 'intermediate_size', file),
    rmsEps: num(cfg, 'rms_norm_eps', file, 1e-6),
    maxPositions,
    rope: ropeConfig(cfg, file, maxPositions),
    tieEmbeddings: cfg.tie_word_embeddings === true,
    qkvBias: modelType === 'qwen2' || attentionBias,
    oBias: attentionBias,
    mlpBias: cfg.mlp_bias === true,
    qkNorm: modelType === 'qwen3',
    slidingWindow: typeof window === 'number' && window > 0 ? window : null,
    bosTokenId: typeof cfg.bos_token_id === 'number' ? cfg.bos_token_id : null,
    eosTokenIds: Array.isArray(eos) ? eos.filter((x): x is number => typeof x === 'number') : typeof eos === 'number' ? [eos] : [],
  };
}

/** Reads `<dir>/config.json`. */
export async function readLlmConfig(dir: string): Promise<LlmArch> {
  const file = join(dir, 'config.json');
  const text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    throw new UserError(e.code === 'ENOENT' ? `model folder ${dir} has no config.json` : `cannot read ${file}: ${e.message}`);
  });
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new UserError(`${file} must hold a JSON object`);
  return parseLlmConfig(cfg as Json, file);
}

/** Whether `dir` holds a Hugging Face causal LM this engine runs (config.json with a supported model_type). */
export async function isLlmModelFolder(dir: string): Promise<boolean> {
  const text = await readFile(join(dir, 'config.json'), 'utf8').catch(() => undefined);
  if (text === undefined) return false;
  try {
    const cfg = JSON.parse(text) as { model_type?: unknown; architectures?: unknown };
    return SUPPORTED.includes(String(cfg.model_type)) || (Array.isArray(cfg.architectures) && cfg.architectures.some((a) => /ForCausalLM$/.test(String(a))));
  } catch {
    return false;
  }
}
