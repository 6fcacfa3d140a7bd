// `node --import tsx bench/compare.ts OLD.json NEW.json`: every number two bench records share, side by side,
// with new/old. Records come from bench/results/<date>-<name>.json (see run.ts).
import { readFileSync } from 'node:fs';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Flattens a record into path → number for every numeric leaf. */
export function numbers(v: Json, path = '', out = new Map<string, number>()): Map<string, number> {
  if (typeof v === 'number') out.set(path, v);
  else if (Array.isArray(v)) v.forEach((x, i) => numbers(x, `${path}[${i}]`, out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) numbers(x, path ? `${path}.${k}` : k, out);
  return out;
}

const [oldPath, newPath] = process.argv.slice(2);
if (!oldPath || !newPath) {
  console.error('usage: node --import tsx bench/compare.ts OLD.json NEW.json');
  process.exit(2);
}
const read = (p: string): Json => {
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as Json;
  } catch (e) {
    console.error(`${p}: ${(e as Error).message}`);
    process.exit(1);
  }
};
const a = numbers(read(oldPath));
const b = numbers(read(newPath));
const rows = [...a.keys()].filter((k) => b.has(k) && !k.startsWith('machine.'));
const w = Math.max(4, ...rows.map((k) => k.length));
console.log(`${'figure'.padEnd(w)}  ${'old'.padStart(10)}  ${'new'.padStart(10)}  new/old`);
for (const k of rows) {
  const x = a.get(k)!;
  const y = b.get(k)!;
  console.log(`${k.padEnd(w)}  ${String(x).padStart(10)}  ${String(y).padStart(10)}  ${x === 0 ? '' : (y / x).toFixed(2)}`);
}
