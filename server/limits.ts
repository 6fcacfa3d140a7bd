/**
 * How much work one request may ask for. Without caps a single request can take the machine: 4096² passes
 * every type check and then needs hundreds of GiB for attention, `lora_rank: 1000000` fills the memory in
 * seconds. Defaults are sized from the machine's memory and every cap can be raised by a `serve` flag;
 * a refusal is a 422 naming the field, its value and the limit.
 *
 * Sizing: the UNet's self-attention holds a T×T score matrix per head for T = (width/8)·(height/8) latent
 * positions, for the conditional and unconditional pass of every image of a batch: 2 · batch · 8 heads ·
 * T² · 4 bytes. `maxPixels` is the image size at which that is half the memory for one image; a batch may
 * hold as many images as fit the same budget (`batch_size · pixels² ≤ maxPixels²`). Training keeps every
 * layer's activations for the backward pass, so its images get half of `maxPixels` (512² trains in 11 GiB). LoRA parameters
 * with their gradients and AdamW moments take about 10 MiB per unit of rank for SD 1.x.
 */
import { totalmem } from 'node:os';
import { ValidationError } from './errors.ts';

export interface WorkLimits {
  /** Largest width × height of a generated image (also the hires-fix target). */
  maxPixels: number;
  /** Most sampling steps of one pass: `steps`, `hr_second_pass_steps`. */
  maxSteps: number;
  /** Most images per request: batch_size × n_iter. */
  maxImages: number;
  /** Largest `lora_rank` / `conv_rank` of a training. */
  maxLoraRank: number;
  /** Most images in a training dataset. */
  maxDatasetImages: number;
  /** Longest prompt, in characters. */
  maxPromptChars: number;
}

const MiB = 1024 * 1024;

/** Defaults for a machine with `memoryBytes` of memory. */
export function defaultLimits(memoryBytes = totalmem()): WorkLimits {
  const tokens = Math.sqrt(memoryBytes / 2 / (2 * 8 * 4));
  const maxPixels = Math.max(512 * 512, Math.floor((tokens * 64) / 4096) * 4096);
  return {
    maxPixels,
    maxSteps: 1000,
    maxImages: 64,
    maxLoraRank: Math.max(16, Math.min(1024, 2 ** Math.floor(Math.log2(memoryBytes / 4 / (10 * MiB))))),
    maxDatasetImages: Math.max(1000, Math.min(100_000, Math.floor(memoryBytes / MiB))),
    maxPromptChars: 20_000,
  };
}

export function resolveLimits(over: Partial<WorkLimits> = {}): WorkLimits {
  const out = { ...defaultLimits() };
  for (const [k, v] of Object.entries(over) as [keyof WorkLimits, number | undefined][]) {
    if (v === undefined) continue;
    if (!Number.isFinite(v) || v <= 0) throw new Error(`limit ${k} must be a positive number, got ${v}`);
    out[k] = Math.floor(v);
  }
  return out;
}

/** The `serve` flag that raises each limit (named in refusals, so the operator knows what to change). */
export const LIMIT_FLAGS: Record<keyof WorkLimits, string> = {
  maxPixels: '--max-pixels',
  maxSteps: '--max-steps',
  maxImages: '--max-images',
  maxLoraRank: '--max-lora-rank',
  maxDatasetImages: '--max-dataset-images',
  maxPromptChars: '--max-prompt-chars',
};

/** A 422 in FastAPI's shape, `type` `value_error.limit`. */
export function overLimit(field: string | (string | number)[], msg: string, limit: keyof WorkLimits): ValidationError {
  const loc = ['body', ...(Array.isArray(field) ? field : [field])];
  return new ValidationError([{ loc, msg: `${msg} (raise with ${LIMIT_FLAGS[limit]})`, type: 'value_error.limit' }]);
}
