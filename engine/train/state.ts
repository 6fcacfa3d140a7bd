/**
 * The training state for an exact resume, one folder `state-<step>/`:
 *   lora.safetensors       every LoRA buffer (float32, the network's parameter names) and alphas in metadata
 *   optimizer.safetensors  optimizer moments, per-parameter steps, stepper counters (engine/optim state file)
 *   state.json             position (epoch, next micro-batch), step, seed, config hash and the math settings
 * All randomness (data order, crops, flips, captions, timesteps, noise) is derived from the seed and the
 * position, so the position is the whole RNG state. The folder is written under a temporary name and
 * renamed into place, so a run killed mid-save leaves either the old state or the new one.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../safetensors/index.ts';
import { loadOptimizerState, saveOptimizerState } from '../optim/state-file.ts';
import type { OptimizerState } from '../optim/optimizer.ts';
import { writeBufferAtomic } from '../util/atomic-write.ts';
import { UserError } from '../util/errors.ts';
import type { TrainConfig } from './config.ts';
import { downName, upName, type LoraNetwork } from './lora-network.ts';

export const STATE_FORMAT = 'lora-scripts/train-state';
const ALPHAS_KEY = 'lora_scripts.alphas';

export interface TrainPosition {
  /** 0-based epoch of the next micro-batch. */
  epoch: number;
  /** Index, within that epoch's batch list, of the next micro-batch. */
  batch: number;
}

export interface TrainStateInfo {
  format: typeof STATE_FORMAT;
  version: 1;
  /** Optimizer steps done. */
  step: number;
  position: TrainPosition;
  seed: number;
  /** sha256 of the settings that decide the numbers (see MATH_KEYS). */
  configHash: string;
  settings: Record<string, unknown>;
  savedAt: string;
}

/** Settings that shape the network: a state cannot be loaded into a run that changes them. */
const STRUCTURAL_KEYS = ['lora_rank', 'target_modules', 'train_text_encoder', 'optimizer'] as const;
/** Everything else that decides the numbers; changing one resumes, but no longer bit-identically. */
const MATH_KEYS = [
  ...STRUCTURAL_KEYS, 'lora_dropout', 'max_seq_length', 'packing',
  'lora_alpha', 'prediction_type', 'text_encoder_lr', 'learning_rate', 'weight_decay', 'max_grad_norm', 'lr_scheduler',
  'lr_warmup_steps', 'batch_size', 'gradient_accumulation_steps', 'epochs', 'mixed_precision', 'seed', 'noise_offset',
  'min_snr_gamma', 'resolution', 'enable_bucket', 'min_bucket_reso', 'max_bucket_reso', 'random_crop', 'flip_aug',
  'shuffle_caption', 'keep_tokens', 'caption_dropout_rate', 'caption_tag_dropout_rate', 'validation_split',
] as const satisfies readonly (keyof TrainConfig)[];

export function mathSettings(config: TrainConfig): Record<string, unknown> {
  return Object.fromEntries(MATH_KEYS.map((k) => [k, config[k]]));
}

export function configHash(config: TrainConfig): string {
  return createHash('sha256').update(JSON.stringify(mathSettings(config))).digest('hex');
}

export const stateDirName = (step: number) => `state-${String(step).padStart(8, '0')}`;

export async function saveTrainState(
  dir: string,
  s: { network: LoraNetwork; optimizer: OptimizerState; step: number; position: TrainPosition; config: TrainConfig },
): Promise<void> {
  const tensors = new Map<string, TensorToWrite>();
  const alphas: Record<string, number> = {};
  for (const m of s.network.modules) {
    tensors.set(downName(m.name), { dtype: 'F32', shape: m.downShape, data: m.down });
    tensors.set(upName(m.name), { dtype: 'F32', shape: m.upShape, data: m.up });
    alphas[m.name] = m.alpha;
  }
  await saveTrainStateTensors(dir, { ...s, tensors, alphas });
}

/** The same state folder from any set of trainable tensors (the LLM trainer's PEFT-named adapter). */
export async function saveTrainStateTensors(
  dir: string,
  s: { tensors: ReadonlyMap<string, TensorToWrite>; alphas: Record<string, number>; optimizer: OptimizerState; step: number; position: TrainPosition; config: TrainConfig },
): Promise<void> {
  const tmp = join(dirname(dir), `.${basename(dir)}.tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  await writeSafetensors(join(tmp, 'lora.safetensors'), new Map(s.tensors), { [ALPHAS_KEY]: JSON.stringify(s.alphas) });
  await saveOptimizerState(join(tmp, 'optimizer.safetensors'), s.optimizer);
  const info: TrainStateInfo = {
    format: STATE_FORMAT,
    version: 1,
    step: s.step,
    position: s.position,
    seed: s.config.seed,
    configHash: configHash(s.config),
    settings: mathSettings(s.config),
    savedAt: new Date().toISOString(),
  };
  await writeBufferAtomic(join(tmp, 'state.json'), JSON.stringify(info, null, 2) + '\n');
  // Replacing an existing state of the same step (a resumed run saving again) must not leave a gap.
  const old = `${tmp}-old`;
  const had = await stat(dir).then(() => true, () => false);
  if (had) await rename(dir, old);
  await rename(tmp, dir);
  if (had) await rm(old, { recursive: true, force: true });
}

export interface LoadedTrainState {
  dir: string;
  info: TrainStateInfo;
  lora: Map<string, Float32Array>;
  alphas: Record<string, number>;
  optimizer: OptimizerState;
}

/** `path` is the state folder or its state.json. */
export async function loadTrainState(path: string): Promise<LoadedTrainState> {
  const dir = basename(path) === 'state.json' ? dirname(path) : path;
  const jsonPath = join(dir, 'state.json');
  const raw = await readFile(jsonPath, 'utf8').catch(() => {
    throw new UserError(`resume_from: ${dir} is not a saved training state (no state.json); point it at a state-<step> folder in the output folder`);
  });
  let info: TrainStateInfo;
  try {
    info = JSON.parse(raw) as TrainStateInfo;
  } catch (e) {
    throw new UserError(`resume_from: ${jsonPath} is not valid JSON`, { cause: e });
  }
  if (info.format !== STATE_FORMAT || info.version !== 1)
    throw new UserError(`resume_from: ${jsonPath} is not a lora-scripts training state (format ${JSON.stringify(info.format)})`);
  const p = info.position;
  if (!p || !Number.isSafeInteger(p.epoch) || !Number.isSafeInteger(p.batch) || !Number.isSafeInteger(info.step))
    throw new UserError(`resume_from: ${jsonPath} has no valid step / position`);
  const f = await SafetensorsFile.open(join(dir, 'lora.safetensors'));
  const lora = new Map<string, Float32Array>();
  let alphas: Record<string, number>;
  try {
    for (const name of f.names()) lora.set(name, await f.readFloat32(name));
    alphas = JSON.parse(f.metadata[ALPHAS_KEY] ?? '{}') as Record<string, number>;
  } finally {
    await f.close();
  }
  const optimizer = await loadOptimizerState(join(dir, 'optimizer.safetensors'));
  return { dir, info, lora, alphas, optimizer };
}

/**
 * Checks a state against this run's config: structural changes are errors; other changed settings are
 * returned as warnings (the run resumes, but no longer matches an uninterrupted one).
 */
export function checkStateConfig(state: LoadedTrainState, config: TrainConfig): string[] {
  if (state.info.configHash === configHash(config)) return [];
  const now = mathSettings(config);
  const changed = MATH_KEYS.filter((k) => JSON.stringify(now[k]) !== JSON.stringify(state.info.settings[k]));
  const structural = changed.filter((k) => (STRUCTURAL_KEYS as readonly string[]).includes(k));
  const show = (k: string) => `${k}: ${JSON.stringify(state.info.settings[k])} → ${JSON.stringify(now[k])}`;
  if (structural.length)
    throw new UserError(`resume_from ${state.dir}: the state was saved with other settings that shape the network (${structural.map(show).join('; ')}); use the original values`);
  return changed.map((k) => `resume_from: ${show(k)} differs from the saved run; training continues but will not match an uninterrupted run`);
}

/** Copies the saved LoRA buffers into the network (every buffer must be there, with its size). */
export function restoreNetwork(state: LoadedTrainState, network: LoraNetwork): void {
  for (const m of network.modules) {
    for (const [name, buf] of [[downName(m.name), m.down], [upName(m.name), m.up]] as const) {
      const saved = state.lora.get(name);
      if (!saved || saved.length !== buf.length)
        throw new UserError(`resume_from ${state.dir}: lora.safetensors ${saved ? `has ${saved.length} values for` : 'lacks'} ${name} (expected ${buf.length})`);
      buf.set(saved);
    }
    const a = state.alphas[m.name];
    if (a !== undefined) m.alpha = a;
  }
}

/**
 * The newest complete state a run saved in `dir`, or null. A state folder appears by one rename once
 * complete, so a readable `state.json` of this format marks it; a run killed while writing leaves only a
 * hidden temporary folder.
 */
export async function newestTrainState(dir: string): Promise<string | null> {
  const states = (await readdir(dir).catch(() => [] as string[])).filter((f) => /^state-\d{8}$/.test(f)).sort().reverse();
  for (const s of states) {
    const path = join(dir, s);
    const info = await readFile(join(path, 'state.json'), 'utf8').then((t) => JSON.parse(t) as { format?: unknown }, () => null);
    if (info?.format === STATE_FORMAT) return path;
  }
  return null;
}
