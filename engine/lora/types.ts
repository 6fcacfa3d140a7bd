import type { LoraPart } from './names.ts';

export type { LoraPart } from './names.ts';

/** A float32 tensor, row-major. Weight maps and LoRA tensors use this one shape. */
export interface F32Tensor {
  shape: number[];
  data: Float32Array;
}

/** Mutable model weights keyed by LDM key; the merger changes `data` in place. */
export type WeightMap = Map<string, F32Tensor>;

export type LoraKind = 'lora' | 'locon' | 'loha' | 'lokr' | 'full' | 'ia3';

/** Which axis a DoRA magnitude normalises: A1111/kohya `dora_scale` [1, in, …] per input column, PEFT per output row. */
export type DoraAxis = 'in' | 'out';

/** One adapted layer of a LoRA file, in a format-independent form. */
export interface LoraModule {
  /** Module name exactly as in the file (tensor key without suffix). */
  name: string;
  part: LoraPart;
  /** Dotted module path within its part: diffusers path, or LDM path for SDXL-style kohya names. */
  path: string;
  kind: LoraKind;
  /**
   * Tensors by role. lora/locon: down, up, (mid). loha: hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b, (hada_t1, hada_t2).
   * lokr: lokr_w1 | lokr_w1_a+lokr_w1_b, lokr_w2 | lokr_w2_a+lokr_w2_b, (lokr_t2). full: diff, (diff_b).
   * ia3: ia3_weight (per output row, or per input column when on_input is non-zero), on_input.
   */
  tensors: Record<string, F32Tensor>;
  /** Rank, when the kind has one. */
  rank?: number;
  /** alpha as stored (kohya `.alpha` tensor or PEFT metadata); undefined when the file has none. */
  alpha?: number;
  /** The factor ΔW is multiplied by before the user multiplier: `scale` tensor, alpha/rank, or 1. */
  scale: number;
  dora?: { magnitude: F32Tensor; axis: DoraAxis };
  /** Set once resolved against a model: the LDM weight key, and a row slice when the weight is fused (OpenCLIP qkv). */
  target?: { key: string; rows?: [number, number] };
}

export interface ParsedLora {
  /** File path, when read from a file. */
  path?: string;
  metadata: Record<string, string>;
  format: 'kohya' | 'peft' | 'diffusers-legacy' | 'mixed';
  modules: LoraModule[];
  /** Tensor keys that belong to no recognised module type. */
  unknownKeys: string[];
  /**
   * Names of textual-inversion embeddings bundled in the file (`bundle_emb.<name>.*`, which A1111 loads as
   * embeddings); they are not weight patches, so the merger neither applies nor reports them.
   */
  bundledEmbeddings: string[];
}
