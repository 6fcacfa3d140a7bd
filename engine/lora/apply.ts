/**
 * Adds a stack of LoRAs into a weight map in place: W' = W + Σ_i m_i·scale_i·ΔW_i, with the text-encoder
 * multiplier for text-encoder modules and the UNet multiplier for the rest. Modules are applied in stack
 * order per weight (order only matters for DoRA, which renormalises the running weight, as A1111 does).
 * A module the model lacks, or whose shape does not fit, is reported by name and skipped.
 */
import { numel } from './delta.ts';
import { isPlain, mergeTargetOffThread } from './merge-target.ts';
import { resolveTargets, type TargetIndex } from './targets.ts';
import type { LoraModule, ParsedLora, WeightMap } from './types.ts';

export interface StackLayer {
  lora: ParsedLora;
  /** Shown in reports; defaults to the file path. */
  name?: string;
  te: number;
  unet: number;
  /** DyLoRA: use only the first `dyn` ranks of plain LoRA modules (A1111 `<lora:x:1:1:dyn>`); scale unchanged. */
  dyn?: number;
}

export interface ApplyReport {
  /** LDM keys whose values changed. */
  touched: Set<string>;
  /** Per layer: modules applied, and names (module names or tensor keys) that matched nothing. */
  layers: { name: string; applied: number; unmatched: string[]; errors: string[] }[];
}

export interface ApplyOptions {
  /** Runs once per key before its first change (the merger saves its pristine copy there). */
  beforeTouch?: (key: string) => void;
  /**
   * Plain LoRA / LoCon updates of at least this many weight elements go through ONNX Runtime's GEMM;
   * smaller ones (and LoHa, LoKr, Tucker, DoRA) use the JS reference. Default 65536; Infinity = JS only.
   */
  ortMinElements?: number;
}

interface Job {
  layer: number;
  m: LoraModule;
  mult: number;
}

export async function applyStack(weights: WeightMap, stack: StackLayer[], index: TargetIndex, options: ApplyOptions = {}): Promise<ApplyReport> {
  const beforeTouch = options.beforeTouch ?? (() => {});
  const ortMin = options.ortMinElements ?? 65536;
  const touched = new Set<string>();
  const touch = (key: string) => {
    if (!touched.has(key)) {
      beforeTouch(key);
      touched.add(key);
    }
  };
  const layers: ApplyReport['layers'] = stack.map((l) => ({ name: l.name ?? l.lora.path ?? 'LoRA', applied: 0, unmatched: [], errors: [] }));
  // Jobs per target weight (and row slice), in stack order.
  const jobs = new Map<string, Job[]>();
  stack.forEach((layer, li) => {
    const { matched, unmatched } = resolveTargets(layer.lora, index);
    layers[li]!.unmatched.push(...unmatched);
    for (const mm of matched) {
      const m = layer.dyn !== undefined ? truncateRank(mm, layer.dyn) : mm;
      const mult = m.part === 'unet' ? layer.unet : layer.te;
      if (mult === 0) continue;
      if (!weights.has(m.target!.key)) {
        layers[li]!.unmatched.push(m.name);
        continue;
      }
      const k = `${m.target!.key}|${m.target!.rows?.join(':') ?? ''}`;
      const list = jobs.get(k) ?? [];
      list.push({ layer: li, m, mult });
      jobs.set(k, list);
    }
  });
  // One target weight at a time goes to the merge worker, through one scratch buffer: the event loop gets a
  // turn between weights and stays free while the arithmetic runs.
  let largest = 0;
  for (const list of jobs.values()) largest = Math.max(largest, targetValues(weights, list[0]!.m));
  const scratch = new SharedArrayBuffer(Math.max(1, largest) * 4);
  for (const list of jobs.values()) {
    const target = list[0]!.m.target!;
    const w = weights.get(target.key)!;
    const inner = numel(w.shape.slice(1));
    const [start, end] = target.rows ? [target.rows[0] * inner, target.rows[1] * inner] : [0, w.data.length];
    const view = target.rows ? w.data.subarray(start, end) : w.data;
    const shape = target.rows ? [target.rows[1] - target.rows[0], ...w.shape.slice(1)] : w.shape;
    touch(target.key);
    const outcome = await mergeTargetOffThread(view, shape, list.map(({ m, mult }) => ({ m, mult })), ortMin, scratch);
    outcome.forEach((error, i) => {
      const job = list[i]!;
      if (error === null) layers[job.layer]!.applied++;
      else layers[job.layer]!.errors.push(error);
      applyBiasDelta(weights, job, touch, layers[job.layer]!.errors);
    });
  }
  return { touched, layers };
}

/** How many values of its weight a module's target covers (the whole weight, or its row slice). */
function targetValues(weights: WeightMap, m: LoraModule): number {
  const w = weights.get(m.target!.key)!;
  const rows = m.target!.rows;
  return rows ? (rows[1] - rows[0]) * numel(w.shape.slice(1)) : w.data.length;
}

/** up[:, :n] and down[:n] of a plain module (A1111 rebuild_conventional with dyn_dim). */
function truncateRank(m: LoraModule, n: number): LoraModule {
  if (!isPlain(m)) return m;
  const up = m.tensors.up!, down = m.tensors.down!;
  const r = down.shape[0]!;
  if (n <= 0 || n >= r) return m;
  const out = up.shape[0]!, upInner = up.data.length / (out * r), cols = down.data.length / r;
  const u = new Float32Array(out * n * upInner);
  for (let o = 0; o < out; o++) u.set(up.data.subarray(o * r * upInner, (o * r + n) * upInner), o * n * upInner);
  return {
    ...m,
    tensors: {
      ...m.tensors,
      up: { shape: [out, n, ...up.shape.slice(2)], data: u },
      down: { shape: [n, ...down.shape.slice(1)], data: down.data.slice(0, n * cols) },
    },
  };
}

function applyBiasDelta(weights: WeightMap, job: Job, touch: (k: string) => void, errors: string[]): void {
  const { m, mult } = job;
  const db = m.tensors.diff_b;
  if (!db || !m.target!.key.endsWith('.weight')) return;
  const bkey = m.target!.key.slice(0, -'.weight'.length) + '.bias';
  const b = weights.get(bkey);
  if (b && b.data.length === db.data.length) {
    touch(bkey);
    for (let i = 0; i < db.data.length; i++) b.data[i]! += mult * m.scale * db.data[i]!;
  } else errors.push(`LoRA module ${m.name}: bias delta does not fit ${bkey}`);
}
