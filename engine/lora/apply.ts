/**
 * Adds a stack of LoRAs into a weight map in place: W' = W + Σ_i m_i·scale_i·ΔW_i, with the text-encoder
 * multiplier for text-encoder modules and the UNet multiplier for the rest. Modules are applied in stack
 * order per weight (order only matters for DoRA, which renormalises the running weight, as A1111 does).
 * A module the model lacks, or whose shape does not fit, is reported by name and skipped.
 */
import { applyModule, numel } from './delta.ts';
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

/**
 * `beforeTouch(key)` runs once per key before its first change (the merger saves its pristine copy there).
 */
export function applyStack(
  weights: WeightMap,
  stack: StackLayer[],
  index: TargetIndex,
  beforeTouch: (key: string) => void = () => {},
): ApplyReport {
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
        applyOne(w.data, w.shape, m, mult, touch);
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

function applyOne(data: Float32Array, shape: number[], m: LoraModule, mult: number, touch: (k: string) => void): void {
  const rows = m.target!.rows;
  if (rows) {
    const inner = numel(shape.slice(1));
    const view = data.subarray(rows[0] * inner, rows[1] * inner);
    touch(m.target!.key);
    applyModule(view, [rows[1] - rows[0], ...shape.slice(1)], m, mult);
    return;
  }
  touch(m.target!.key);
  applyModule(data, shape, m, mult);
}
