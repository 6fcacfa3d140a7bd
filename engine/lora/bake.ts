/**
 * Bakes a weighted LoRA stack into a new checkpoint file (`lora-scripts merge`). Only the weights the LoRAs
 * touch are read as float32 and rewritten; every other tensor is streamed through, byte for byte when the
 * output keeps the source dtypes, so a 4 GB checkpoint is never held in memory.
 */
import { resolve } from 'node:path';
import { SafetensorsFile, writeSafetensorsStreaming, type DType } from '../safetensors/index.ts';
import { f32ToBf16, f32ToF16 } from '../safetensors/float.ts';
import { Checkpoint } from '../sd/checkpoint.ts';
import { UserError } from '../util/errors.ts';
import { applyStack, type StackLayer } from './apply.ts';
import { loraFileHash } from './hash.ts';
import { loadLora, loraFileOf } from './load.ts';
import { resolveTargets, TargetIndex } from './targets.ts';
import type { WeightMap } from './types.ts';

export interface BakeOptions {
  checkpoint: string;
  output: string;
  stack: { path: string; te: number; unet: number; name?: string }[];
  /** 'keep': each tensor in its source dtype (float32 for a diffusers folder). */
  dtype?: 'keep' | 'F32' | 'F16' | 'BF16';
}

export interface BakeResult {
  output: string;
  tensors: number;
  patched: number;
  loras: { name: string; applied: number; unmatched: string[]; errors: string[] }[];
}

const FLOATS = new Set(['F32', 'F16', 'BF16', 'F64']);

/** float32 values in a float dtype of the file format. */
export function encode(data: Float32Array, dtype: DType): ArrayBufferView {
  if (dtype === 'F32') return data;
  if (dtype === 'F16') return f32ToF16(data);
  if (dtype === 'BF16') return f32ToBf16(data);
  if (dtype === 'F64') return Float64Array.from(data);
  throw new Error(`cannot encode float32 as ${dtype}`);
}

export async function bakeCheckpoint(opts: BakeOptions): Promise<BakeResult> {
  if (resolve(opts.output) === resolve(opts.checkpoint)) throw new UserError(`output ${opts.output} is the input checkpoint; choose another file`);
  const ckpt = await Checkpoint.open(opts.checkpoint);
  // A single file is also opened raw, so untouched tensors keep their exact bytes and dtypes.
  const raw = await SafetensorsFile.open(opts.checkpoint).catch(() => undefined);
  try {
    const keys = ckpt.keys();
    const index = new TargetIndex(keys, (k) => ckpt.shape(k));
    const stack: StackLayer[] = [];
    const needed = new Set<string>();
    const provenance: { file: string; hash: string; te: number; unet: number }[] = [];
    for (const s of opts.stack) {
      const lora = await loadLora(s.path);
      for (const m of resolveTargets(lora, index).matched) needed.add(m.target!.key);
      stack.push({ lora, name: s.name ?? s.path, te: s.te, unet: s.unet });
      provenance.push({ file: s.name ?? s.path, hash: (await loraFileHash(await loraFileOf(s.path))).slice(0, 12), te: s.te, unet: s.unet });
    }
    const weights: WeightMap = new Map();
    for (const k of needed) weights.set(k, await ckpt.read(k));
    // Bias deltas of LyCORIS "full" modules patch the matching .bias too.
    for (const k of needed) {
      const b = k.replace(/\.weight$/, '.bias');
      if (b !== k && ckpt.has(b)) weights.set(b, await ckpt.read(b));
    }
    const report = await applyStack(weights, stack, index);
    const dtypeOf = (k: string): DType => {
      const src = raw?.has(k) ? raw.info(k).dtype : 'F32';
      if (opts.dtype === undefined || opts.dtype === 'keep' || !FLOATS.has(src)) return src;
      return opts.dtype;
    };
    const entries = keys.map((name) => ({ name, dtype: dtypeOf(name), shape: ckpt.shape(name) }));
    const metadata: Record<string, string> = { ...(raw?.metadata ?? {}), lora_scripts_merged_loras: JSON.stringify(provenance) };
    await writeSafetensorsStreaming(
      opts.output,
      entries,
      async (name) => {
        const dtype = dtypeOf(name);
        if (report.touched.has(name)) return encode(weights.get(name)!.data, dtype);
        if (raw?.has(name) && raw.info(name).dtype === dtype) return raw.readBytes(name);
        return encode((await ckpt.read(name)).data, dtype);
      },
      metadata,
    );
    return { output: opts.output, tensors: entries.length, patched: report.touched.size, loras: report.layers };
  } finally {
    await raw?.close();
    await ckpt.close();
  }
}
