import { randomInt } from 'node:crypto';

/**
 * A1111's seed bookkeeping (`modules/processing.py`): a seed of -1 (or none) becomes a random one, and a
 * batch or batch_count run gives image i the seed `seed + i` — unless a subseed is in use, in which case
 * every image keeps the seed and the subseed advances instead.
 */

/** A1111 `get_fixed_seed`: -1, null, undefined, '' or NaN pick a random seed in [0, 4294967294). */
export function fixSeed(seed: number | string | null | undefined): number {
  if (seed === null || seed === undefined || seed === '') return randomInt(0, 4294967294);
  // Python's int() accepts only integer text; anything else counts as -1 there.
  const n = typeof seed === 'string' ? (/^\s*[+-]?\d+\s*$/.test(seed) ? Number(seed) : -1) : seed;
  if (Number.isNaN(n) || n === -1) return randomInt(0, 4294967294);
  return Math.trunc(n);
}

export interface BatchSeeds {
  seeds: number[];
  subseeds: number[];
}

/** Seeds and subseeds for `count` images starting from already-fixed `seed` and `subseed`. */
export function batchSeeds(seed: number, subseed: number, subseedStrength: number, count: number): BatchSeeds {
  const seeds: number[] = [];
  const subseeds: number[] = [];
  for (let i = 0; i < count; i++) {
    seeds.push(seed + (subseedStrength === 0 ? i : 0));
    subseeds.push(subseed + i);
  }
  return { seeds, subseeds };
}
