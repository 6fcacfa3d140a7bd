/**
 * Rotary position embedding tables (Su et al. 2021) in transformers' Llama layout: each head's dims are two
 * contiguous halves rotated together, frequencies repeated twice. The tables are computed on the host per
 * call from position ids, so one graph serves packed sequences (positions restart per document) and
 * generation with a KV cache (positions continue from the cache). Frequencies are float32 like
 * transformers' `inv_freq`, so angles match its tables.
 *
 * Scaling, as transformers' `ROPE_INIT_FUNCTIONS`:
 * - linear: positions divided by `factor` (inv_freq / factor);
 * - dynamic (NTK-aware): when the sequence exceeds the trained length, theta grows to
 *   theta · (factor·len/max − (factor − 1))^(d/(d−2));
 * - llama3: long wavelengths divided by `factor`, short ones kept, the band between interpolated.
 */
import type { LlmArch } from './config.ts';

const f = Math.fround;

export function inverseFrequencies(arch: Pick<LlmArch, 'headDim' | 'rope' | 'maxPositions'>, seqLen = 0): Float32Array {
  const { rope } = arch;
  const dim = arch.headDim;
  let theta = rope.theta;
  if (rope.type === 'dynamic' && seqLen > arch.maxPositions) {
    theta = theta * ((rope.factor * seqLen) / arch.maxPositions - (rope.factor - 1)) ** (dim / (dim - 2));
  }
  const inv = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = f(1 / f(theta ** f((2 * i) / dim)));
  if (rope.type === 'linear') for (let i = 0; i < inv.length; i++) inv[i] = f(inv[i]! / rope.factor);
  if (rope.type === 'llama3') {
    const old = rope.originalMaxPositions;
    const lowWavelen = old / rope.lowFreqFactor;
    const highWavelen = old / rope.highFreqFactor;
    for (let i = 0; i < inv.length; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen > lowWavelen) inv[i] = f(inv[i]! / rope.factor);
      else if (wavelen >= highWavelen) {
        const smooth = (old / wavelen - rope.lowFreqFactor) / (rope.highFreqFactor - rope.lowFreqFactor);
        inv[i] = f((1 - smooth) * (inv[i]! / rope.factor) + smooth * inv[i]!);
      }
    }
  }
  return inv;
}

/** cos and sin tables [positions.length, headDim] for the given positions (row-major, halves repeated). */
export function ropeTablesFor(arch: Pick<LlmArch, 'headDim' | 'rope' | 'maxPositions'>, positions: ArrayLike<number>): { cos: Float32Array; sin: Float32Array } {
  const dim = arch.headDim;
  const half = dim / 2;
  let maxPos = 0;
  for (let t = 0; t < positions.length; t++) maxPos = Math.max(maxPos, positions[t]!);
  const inv = inverseFrequencies(arch, maxPos + 1);
  const cos = new Float32Array(positions.length * dim);
  const sin = new Float32Array(positions.length * dim);
  for (let t = 0; t < positions.length; t++) {
    const p = positions[t]!;
    for (let i = 0; i < half; i++) {
      const ang = f(p * inv[i]!);
      cos[t * dim + i] = cos[t * dim + i + half] = Math.cos(ang);
      sin[t * dim + i] = sin[t * dim + i + half] = Math.sin(ang);
    }
  }
  return { cos, sin };
}
