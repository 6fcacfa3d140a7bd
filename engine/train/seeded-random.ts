import { createHash } from 'node:crypto';

/**
 * Deterministic uniform [0, 1) numbers derived from a seed and any labels (epoch, image path, purpose).
 * Hashing the labels, rather than drawing from one shared stream, keeps each image's caption shuffle and crop
 * the same no matter how many images come before it or in which order workers ask.
 */
export type Random = () => number;

export function seededRandom(seed: number, ...labels: Array<string | number>): Random {
  const h = createHash('sha256').update(JSON.stringify([seed, ...labels])).digest();
  // xoshiro128** over a 128-bit state taken from the hash: fast, small, and good enough for shuffles.
  let a = h.readUInt32LE(0) | 0;
  let b = h.readUInt32LE(4) | 0;
  let c = h.readUInt32LE(8) | 0;
  let d = h.readUInt32LE(12) | 0;
  if ((a | b | c | d) === 0) a = 1;
  return () => {
    const r = Math.imul(rotl(Math.imul(b, 5), 7), 9);
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    return (r >>> 0) / 4294967296;
  };
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Fisher–Yates shuffle of a copy. */
export function shuffled<T>(items: readonly T[], random: Random): T[] {
  const out = items.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
