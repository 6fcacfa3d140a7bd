import type { EmphasisMode } from './chunker.ts';

const f32 = Math.fround;

/**
 * Applies per-token attention multipliers to the CLIP output, as A1111's emphasis does after the text
 * encoder. "Original": multiply each token's vector, then scale everything so the mean of z over the whole
 * tensor (every batch row, token and channel) is what it was before. "No norm": multiply only.
 * "Ignore" / "None": unchanged. Arithmetic follows torch's float32 steps; sums are taken in float64.
 *
 * `shape` is [tokens, dim] or [batch, tokens, dim]; `multipliers` has batch·tokens entries.
 */
export function applyEmphasis(
  z: Float32Array,
  shape: readonly [number, number] | readonly [number, number, number],
  multipliers: ArrayLike<number>,
  mode: EmphasisMode = 'Original',
): Float32Array {
  const dim = shape[shape.length - 1]!;
  const rows = shape.length === 3 ? shape[0]! * shape[1]! : shape[0]!;
  if (z.length !== rows * dim) throw new RangeError(`z has ${z.length} values, shape [${shape.join(', ')}] needs ${rows * dim}`);
  if (multipliers.length !== rows) throw new RangeError(`${multipliers.length} multipliers for ${rows} tokens`);
  if (mode === 'Ignore' || mode === 'None') return Float32Array.from(z);

  const out = new Float32Array(z.length);
  let before = 0;
  let after = 0;
  for (let r = 0; r < rows; r++) {
    const m = f32(multipliers[r]!);
    for (let k = r * dim; k < (r + 1) * dim; k++) {
      const v = f32(z[k]! * m);
      out[k] = v;
      before += z[k]!;
      after += v;
    }
  }
  if (mode === 'No norm') return out;
  const ratio = f32(f32(before / z.length) / f32(after / z.length));
  for (let k = 0; k < out.length; k++) out[k] = f32(out[k]! * ratio);
  return out;
}
