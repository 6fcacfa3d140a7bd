/** A small seeded PRNG (mulberry32) for test data: same seed, same numbers, on every machine. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` values uniform in [-s, s). */
export const uniform = (r: () => number, n: number, s = 1): Float32Array => Float32Array.from({ length: n }, () => s * (2 * r() - 1));
