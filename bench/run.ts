// `npm run bench [-- name...]`: runs every bench/*.bench.ts module in name order (or those whose file name
// contains one of the arguments) and writes each one's result to bench/results/<name>.json.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { arch, cpus, platform } from 'node:os';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';

/**
 * What a bench module exports: `run` (or a default export) returning the figures to record, and optionally
 * `name`, the result file stem (bench/results/<name>.json; defaults to the file name without .bench.ts).
 */
export interface BenchModule {
  name?: string;
  run?: () => Promise<Record<string, unknown>>;
  default?: () => Promise<Record<string, unknown>>;
}

const dir = fileURLToPath(new URL('.', import.meta.url));
const filters = process.argv.slice(2);
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.bench.ts'))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no bench modules match ${filters.join(' ')}`);
  process.exit(1);
}
const machine = { platform: platform(), arch: arch(), cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version };
let failed = false;
for (const f of files) {
  const started = Date.now();
  let name = f.replace(/\.bench\.ts$/, '');
  try {
    const mod = (await import(pathToFileURL(join(dir, f)).href)) as BenchModule;
    name = mod.name ?? name;
    const fn = mod.run ?? mod.default;
    if (typeof fn !== 'function') throw new Error(`${f} exports neither run() nor a default function`);
    console.error(`bench ${name} (${f}) ...`);
    const result = await fn();
    const out = { name, date: new Date().toISOString(), machine, seconds: (Date.now() - started) / 1000, ...result };
    const path = join(dir, 'results', `${name}.json`);
    await writeBufferAtomic(path, JSON.stringify(out, null, 2) + '\n');
    console.log(JSON.stringify(out, null, 2));
    console.error(`bench ${name}: wrote ${path}`);
  } catch (e) {
    failed = true;
    console.error(`bench ${name} failed:`, e);
  }
}
process.exit(failed ? 1 : 0);
