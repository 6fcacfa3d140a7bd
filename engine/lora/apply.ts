/**
 * Adds a stack of LoRAs into a weight map in place: W' = W + Σ_i m_i·scale_i·ΔW_i, with the text-encoder
 * multiplier for text-encoder modules and the UNet multiplier for the rest. Modules are applied in stack
 * order per weight (order only matters for DoRA, which renormalises the running weight, as A1111 does).
 * A module the model lacks, or whose shape does not fit, is reported by name and skipped.
 */
import { applyModule, numel } from './delta.ts';
import { addLowRankOrt } from './lowrank-ort.ts';
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

/** A LoRA / LoCon module whose update is a plain product up @ down (no CP core, no DoRA). */
function isPlain(m: LoraModule): boolean {
  return (m.kind === 'lora' || m.kind === 'locon') && !!m.tensors.up && !!m.tensors.down && !m.tensors.mid && !m.dora;
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
  for (const list of jobs.values()) {
    const target = list[0]!.m.target!;
    const w = weights.get(target.key)!;
    let view = w.data, shape = w.shape;
    if (target.rows) {
      const inner = numel(w.shape.slice(1));
      view = w.data.subarray(target.rows[0] * inner, target.rows[1] * inner);
      shape = [target.rows[1] - target.rows[0], ...w.shape.slice(1)];
    }
    // Runs of plain modules are additive, so they go through one GEMM with their ranks concatenated;
    // DoRA and the other kinds are applied one by one, in stack order, on the running weight.
    for (let i = 0; i < list.length; ) {
      let j = i;
      while (j < list.length && isPlain(list[j]!.m) && fitsLowRank(list[j]!.m, view.length)) j++;
      if (j > i && view.length >= ortMin) {
        touch(target.key);
        await addLowRankBatch(view, list.slice(i, j));
        for (let k = i; k < j; k++) layers[list[k]!.layer]!.applied++;
        i = j;
        continue;
      }
      const job = list[i]!;
      try {
        touch(target.key);
        applyModule(view, shape, job.m, job.mult);
        layers[job.layer]!.applied++;
      } catch (e) {
        layers[job.layer]!.errors.push((e as Error).message);
      }
      applyBiasDelta(weights, job, touch, layers[job.layer]!.errors);
      i++;
    }
  }
  return { touched, layers };
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

function fitsLowRank(m: LoraModule, n: number): boolean {
  const { up, down } = m.tensors;
  const out = up!.shape[0]!, r = down!.shape[0]!;
  return up!.data.length === out * r && out * (down!.data.length / r) === n;
}

/** weight += Σ_jobs (mult·scale·up) @ down as one GEMM over the concatenated ranks. */
async function addLowRankBatch(view: Float32Array, jobs: Job[]): Promise<void> {
  const rows = jobs[0]!.m.tensors.up!.shape[0]!;
  const cols = view.length / rows;
  const R = jobs.reduce((n, j) => n + j.m.tensors.down!.shape[0]!, 0);
  const u = new Float32Array(rows * R);
  const d = jobs.length === 1 ? jobs[0]!.m.tensors.down!.data : new Float32Array(R * cols);
  let off = 0;
  for (const { m, mult } of jobs) {
    const r = m.tensors.down!.shape[0]!, up = m.tensors.up!.data, f = mult * m.scale;
    for (let o = 0; o < rows; o++) for (let k = 0; k < r; k++) u[o * R + off + k] = f * up[o * r + k]!;
    if (jobs.length > 1) d.set(m.tensors.down!.data, off * cols);
    off += r;
  }
  await addLowRankOrt(view, u, d, rows, R, cols);
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
