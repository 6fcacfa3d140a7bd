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
  const layers: ApplyReport['layers'] = [];
  for (const layer of stack) {
    const name = layer.name ?? layer.lora.path ?? 'LoRA';
    const { matched, unmatched } = resolveTargets(layer.lora, index);
    const errors: string[] = [];
    let applied = 0;
    for (const m of matched) {
      const mult = m.part === 'unet' ? layer.unet : layer.te;
      if (mult === 0) continue;
      const w = weights.get(m.target!.key);
      if (!w) {
        unmatched.push(m.name);
        continue;
      }
      try {
        await applyOne(w.data, w.shape, m, mult, touch, ortMin);
        applied++;
      } catch (e) {
        errors.push((e as Error).message);
      }
      const db = m.tensors.diff_b;
      if (db && m.target!.key.endsWith('.weight')) {
        const bkey = m.target!.key.slice(0, -'.weight'.length) + '.bias';
        const b = weights.get(bkey);
        if (b && b.data.length === db.data.length) {
          touch(bkey);
          for (let i = 0; i < db.data.length; i++) b.data[i]! += mult * m.scale * db.data[i]!;
        } else errors.push(`LoRA module ${m.name}: bias delta does not fit ${bkey}`);
      }
    }
    layers.push({ name, applied, unmatched, errors });
  }
  return { touched, layers };
}

async function applyOne(data: Float32Array, shape: number[], m: LoraModule, mult: number, touch: (k: string) => void, ortMin: number): Promise<void> {
  const rows = m.target!.rows;
  let view = data, viewShape = shape;
  if (rows) {
    const inner = numel(shape.slice(1));
    view = data.subarray(rows[0] * inner, rows[1] * inner);
    viewShape = [rows[1] - rows[0], ...shape.slice(1)];
  }
  const { up, down } = m.tensors;
  const plain = (m.kind === 'lora' || m.kind === 'locon') && up && down && !m.tensors.mid && !m.dora;
  if (plain && view.length >= ortMin) {
    const out = up.shape[0]!, r = down.shape[0]!, cols = down.data.length / r;
    if (out * cols === view.length && up.data.length === out * r) {
      const f = mult * m.scale;
      const u = new Float32Array(up.data.length);
      for (let i = 0; i < u.length; i++) u[i] = f * up.data[i]!;
      touch(m.target!.key);
      await addLowRankOrt(view, u, down.data, out, r, cols);
      return;
    }
  }
  touch(m.target!.key);
  applyModule(view, viewShape, m, mult);
}
