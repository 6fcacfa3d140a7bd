// Stable Diffusion 1.5 at full size with random weights (made here once; nothing can be downloaded):
// model load, one UNet step with CFG (batch 2) at 256² and 512², VAE decode at 512², peak RSS, both weight
// modes. BENCH_SD_FULL=1 adds a 20-step Euler a 512² generation end to end (baked mode). BENCH_SD_SIZES=256 limits sizes.
import { existsSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { SD15, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { Pipeline } from '../engine/sd/pipeline.ts';
import { ClipConditioner } from '../engine/sd/conditioning.ts';
import { BUNDLED_CLIP_TOKENIZER, loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';

export const name = 'sd';

const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));

/** Peak resident set size of this process so far, from the kernel (VmHWM), in GiB. */
function peakRssGiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
    if (m) return Math.round((Number(m[1]) / 2 ** 20) * 100) / 100;
  } catch {
    /* not Linux */
  }
  return Math.round((process.memoryUsage().rss / 2 ** 30) * 100) / 100;
}

const round = (s: number) => Math.round(s * 100) / 100;

async function timeIt<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t = performance.now();
  const r = await fn();
  return [(performance.now() - t) / 1000, r];
}

/** One weight mode in this process: load, UNet steps, VAE decode, optionally a whole generation. */
async function measureMode(ckpt: string, mode: 'baked' | 'inputs'): Promise<Record<string, unknown>> {
  const sizes = (process.env.BENCH_SD_SIZES ?? '256,512').split(',').map(Number);
  const [load, model] = await timeIt(() => StableDiffusion.load(ckpt, { weights: mode }));
  const r: Record<string, unknown> = { loadSeconds: round(load), rssAfterLoadGiB: peakRssGiB() };
  const ctx = new Float32Array(2 * 77 * 768).map((_, i) => Math.sin(i) * 0.5);
  for (const px of sizes) {
    const h = px / 8;
    const x = new Float32Array(2 * 4 * h * h).map((_, i) => Math.cos(i * 0.37));
    const dims = { batch: 2, height: h, width: h, tokens: 77 };
    // The first call builds and optimises the session; the steady state is what sampling pays per step.
    const [first] = await timeIt(() => model.predict(x, [500, 500], ctx, dims));
    const [step] = await timeIt(() => model.predict(x, [400, 400], ctx, dims));
    r[`unetCfgStep${px}`] = { firstCallSeconds: round(first), stepSeconds: round(step) };
    console.error(`  ${mode} ${px}²: first ${first.toFixed(1)} s, step ${step.toFixed(1)} s, peak RSS ${peakRssGiB()} GiB`);
  }
  if (sizes.includes(512)) {
    const z = new Float32Array(4 * 64 * 64).map((_, i) => Math.sin(i * 0.11));
    const [firstDecode] = await timeIt(() => model.decode(z, { batch: 1, height: 64, width: 64 }));
    const [decode] = await timeIt(() => model.decode(z, { batch: 1, height: 64, width: 64 }));
    r.vaeDecode512 = { firstCallSeconds: round(firstDecode), seconds: round(decode) };
    console.error(`  ${mode} VAE decode 512²: ${decode.toFixed(1)} s`);
  }
  if (process.env.BENCH_SD_FULL === '1' && mode === 'baked') {
    // SD 1.5's own vocabulary, as shipped with the project.
    const tok = await loadClipTokenizer(BUNDLED_CLIP_TOKENIZER);
    const pipe = new Pipeline(model, new ClipConditioner(model, tok));
    const [gen] = await timeIt(() => pipe.generate({ prompt: 'a photo of a cat', negativePrompt: 'blurry', seeds: [1], width: 512, height: 512, steps: 20, cfgScale: 7, sampler: 'Euler a' }));
    r.txt2img512Euler20Seconds = round(gen);
  }
  r.peakRssGiB = peakRssGiB();
  return r;
}

export async function run(): Promise<Record<string, unknown>> {
  await mkdir(scratch, { recursive: true });
  const ckpt = join(scratch, 'sd15-random-f16.safetensors');
  let writeSeconds: number | null = null;
  if (!existsSync(ckpt)) [writeSeconds] = await timeIt(() => writeSyntheticCheckpoint(ckpt, SD15, { dtype: 'F16', seed: 1 }));
  const modes = (process.env.BENCH_SD_MODES ?? 'baked,inputs').split(',');
  const out: Record<string, unknown> = { checkpoint: 'SD 1.5 shapes, random weights, F16 on disk, float32 compute', threads: defaultThreads(), writeSeconds };
  // Each mode in its own process: peak RSS is per process, and two resident SD models would not fit in 24 GiB.
  for (const mode of modes) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), mode, ckpt], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(`sd bench (${mode}) exited ${r.status ?? r.signal}`);
    out[mode] = JSON.parse(r.stdout.trim().split('\n').pop()!);
  }
  const b = out.baked as Record<string, { stepSeconds?: number } | undefined> | undefined;
  const f = out.inputs as Record<string, { stepSeconds?: number } | undefined> | undefined;
  if (b && f) {
    out.bakedSpeedup = Object.fromEntries(
      Object.keys(b)
        .filter((k) => k.startsWith('unetCfgStep') && f[k])
        .map((k) => [k, round(f[k]!.stepSeconds! / b[k]!.stepSeconds!)]),
    );
  }
  out.reference = {
    note: 'PyTorch 2.13 + diffusers (fused SDPA), fp32, 2 threads, this machine quiet, 2026-12-05 (../shared/bench)',
    unetCfgStep256Seconds: 2.73,
    unetCfgStep512Seconds: 10.3,
    unetAlone512PeakRssGiB: 4.0,
    vaeDecode512Seconds: 15.1,
    vaeDecode512PeakRssGiB: 1.7,
  };
  // FLOP of one CFG step (PyTorch's FLOP counter) against the machine's ≈ 190 GFLOP/s FMA peak.
  const gflop: Record<string, number> = { unetCfgStep256: 343, unetCfgStep512: 1354 };
  for (const mode of modes) {
    const m = out[mode] as Record<string, { stepSeconds?: number; percentOfFmaPeak?: number } | undefined> | undefined;
    for (const [k, g] of Object.entries(gflop)) {
      const r = m?.[k];
      if (r?.stepSeconds) r.percentOfFmaPeak = Math.round((g / r.stepSeconds / 190) * 100);
    }
  }
  return out;
}

export default run;

// Child process entry: `node --import tsx bench/sd.bench.ts <mode> <checkpoint>` prints one JSON line.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, ckpt] = process.argv.slice(2) as ['baked' | 'inputs', string];
  console.log(JSON.stringify(await measureMode(ckpt, mode)));
}
