// The whole SD 1.5 pipeline in one process, as a user's generation runs: load, one LoRA stack merged, text
// encoder, CFG steps at 512², VAE decode; per-phase time and peak RSS, for each configuration in its own process
// (peak RSS is per process). Compare with `torch_sd15.py pipe 512 2` (5.5 GiB, ≈10.3 s per step).
// BENCH_PIPE_CONFIGS=inputs,baked,inputs-noarena,inputs-unetarena,inputs-lowmem picks configurations; BENCH_PIPE_SIZE (512), BENCH_PIPE_STEPS (2).
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { SD15, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { writeSd15Lora } from './lib/synthetic-lora.ts';
import { peakRssGiB, rssGiB } from './lib/memory.ts';

export const name = 'sd-pipe';

const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));
const round = (s: number) => Math.round(s * 100) / 100;

interface Config {
  weights: 'inputs' | 'baked';
  memArena: boolean | 'unet';
  /** SdGenerator's lowMemory: arena off and no merged-stack cache. */
  lowMemory: boolean;
}

/**
 * 'inputs', 'baked', with '-noarena' (ORT arena off), '-unetarena' (the UNet's sessions only) or '-lowmem'
 * (the generator's lowMemory) after it.
 */
function parseConfig(c: string): Config {
  const [weights, ...flags] = c.split('-');
  if (weights !== 'inputs' && weights !== 'baked') throw new Error(`BENCH_PIPE_CONFIGS: unknown weight mode '${weights}' in '${c}'`);
  const unknown = flags.filter((f) => f !== 'noarena' && f !== 'unetarena' && f !== 'lowmem');
  if (unknown.length) throw new Error(`BENCH_PIPE_CONFIGS: unknown flag '${unknown[0]}' in '${c}'`);
  const lowMemory = flags.includes('lowmem');
  const memArena = flags.includes('noarena') || lowMemory ? false : flags.includes('unetarena') ? 'unet' : true;
  return { weights, memArena, lowMemory };
}

async function measure(ckpt: string, lora: string, config: Config): Promise<Record<string, unknown>> {
  const size = Number(process.env.BENCH_PIPE_SIZE ?? 512);
  const steps = Number(process.env.BENCH_PIPE_STEPS ?? 2);
  const r: Record<string, unknown> = { config, size, steps, loadAverage1mAtStart: round(loadavg()[0]!) };
  let t = performance.now();
  const gen = await SdGenerator.load(ckpt, { weights: config.weights, memArena: config.memArena, lowMemory: config.lowMemory });
  r.loadSeconds = round((performance.now() - t) / 1000);
  r.rssAfterLoadGiB = rssGiB();
  const loras = [{ path: lora, te: 0.8, unet: 0.8, name: 'bench' }];
  t = performance.now();
  await gen.model.weightsChanged((await gen.merger.apply(loras)).changedKeys);
  r.loraMergeSeconds = round((performance.now() - t) / 1000);
  r.rssAfterMergeGiB = rssGiB();
  const req = { prompt: 'a photo of a cat', negativePrompt: 'blurry', seeds: [1], width: size, height: size, steps, cfgScale: 7, sampler: 'Euler a', loras };
  for (const run of ['first', 'second'] as const) {
    const marks: number[] = [];
    t = performance.now();
    const out = await gen.generate(req, { onStep: () => marks.push(performance.now()) });
    const end = performance.now();
    const stepTimes = marks.map((m, i) => round((m - (i === 0 ? t : marks[i - 1]!)) / 1000));
    r[run] = {
      seconds: round((end - t) / 1000),
      loraMergeSeconds: round(out.lora?.seconds ?? 0),
      stepSeconds: stepTimes,
      decodeSeconds: round((end - marks[marks.length - 1]!) / 1000),
      rssGiB: rssGiB(),
      peakRssGiB: peakRssGiB(),
    };
    console.error(`  ${JSON.stringify(config)} ${run}: ${JSON.stringify(r[run])}`);
  }
  // Stack switches as a user makes them between images: back to the base model (its weights read from the
  // checkpoint file again), then to the stack once more (from the merged-stack cache unless lowMemory).
  t = performance.now();
  await gen.model.weightsChanged((await gen.merger.apply([])).changedKeys);
  r.restoreBaseSeconds = round((performance.now() - t) / 1000);
  t = performance.now();
  const again = await gen.merger.apply(loras);
  await gen.model.weightsChanged(again.changedKeys);
  r.switchBackSeconds = round((performance.now() - t) / 1000);
  r.switchBackFromCache = again.fromCache;
  r.rssAfterSwitchesGiB = rssGiB();
  r.peakRssGiB = peakRssGiB();
  r.sessionBuilds = gen.model.sessionBuilds;
  return r;
}

export async function run(): Promise<Record<string, unknown>> {
  await mkdir(scratch, { recursive: true });
  const ckpt = join(scratch, 'sd15-random-f16.safetensors');
  if (!existsSync(ckpt)) await writeSyntheticCheckpoint(ckpt, SD15, { dtype: 'F16', seed: 1 });
  const lora = join(scratch, 'sd15-lora-r16-1.safetensors');
  if (!existsSync(lora)) await writeSd15Lora(lora, 1, 16);
  const configs = (process.env.BENCH_PIPE_CONFIGS ?? 'inputs,inputs-lowmem,baked').split(',');
  const out: Record<string, unknown> = { checkpoint: 'SD 1.5 shapes, random weights, F16 on disk, float32 compute', lora: 'rank 16, kohya default targets, weight 0.8', threads: defaultThreads() };
  for (const c of configs) {
    parseConfig(c);
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), c, ckpt, lora], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`sd-pipe bench (${c}) exited ${r.status ?? r.signal}`);
    out[c] = JSON.parse(r.stdout.trim().split('\n').pop()!);
  }
  out.peer = { note: 'PyTorch 2.13 + diffusers, torch_sd15.py pipe 512 2, quiet machine, 2026-12-05', peakRssGiB: 5.5, cfgStep512Seconds: 10.3 };
  return out;
}

export default run;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [c, ckpt, lora] = process.argv.slice(2) as [string, string, string];
  console.log(JSON.stringify(await measure(ckpt, lora, parseConfig(c))));
}
