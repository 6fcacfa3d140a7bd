// `npm run bench [-- name...]`: runs every bench/*.bench.ts module in name order (or those whose file name
// contains one of the arguments) and writes each one's result to bench/results/<date>-<name>.json (kept, so a
// later run can be compared with it) and bench/results/<name>.json (the latest). Each record carries the
// machine and its load average before and after, since other processes share the CPU.
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { arch, cpus, freemem, loadavg, platform, totalmem } from 'node:os';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { relaunchWithHugePages } from '../bin/huge-pages.js';

// Benchmarks run as the CLI runs: with LORA_SCRIPTS_HUGE_PAGES=1, malloc's huge pages (bin/huge-pages.js).
if (relaunchWithHugePages()) await new Promise<never>(() => {});

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
const machine = { platform: platform(), arch: arch(), cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memGiB: +(totalmem() / 2 ** 30).toFixed(1), node: process.version, glibcTunables: process.env.GLIBC_TUNABLES ?? null };
const load = () => ({ loadAverage1m: +(loadavg()[0] ?? 0).toFixed(2), loadAverage5m: +(loadavg()[1] ?? 0).toFixed(2), freeMemGiB: +(freemem() / 2 ** 30).toFixed(1) });
/** 2026-12-06T04-10Z: sorts by time, safe in file names. */
const stamp = (d: Date) => d.toISOString().slice(0, 16).replace(':', '-') + 'Z';
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
    const before = load();
    const result = await fn();
    const out = { name, date: new Date(started).toISOString(), machine, loadBefore: before, loadAfter: load(), seconds: (Date.now() - started) / 1000, ...result };
    const text = JSON.stringify(out, null, 2) + '\n';
    const dated = join(dir, 'results', `${stamp(new Date(started))}-${name}.json`);
    await writeBufferAtomic(dated, text);
    await writeBufferAtomic(join(dir, 'results', `${name}.json`), text);
    console.log(text);
    console.error(`bench ${name}: wrote ${dated}`);
  } catch (e) {
    failed = true;
    console.error(`bench ${name} failed:`, e);
  }
}
process.exit(failed ? 1 : 0);
