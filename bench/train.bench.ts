// Seconds per LoRA training step (forward + backward through the frozen UNet, AdamW update) on a full-size
// SD 1.5 architecture with random weights, at 512×512 batch 1, and each setting's peak RSS: without and with
// gradient checkpointing, each in its own process (peak RSS is per process).
// The synthetic checkpoint (float16, ~2 GiB) is the generation benchmark's, made once under bench/scratch/ (minutes).
// Env: LORA_SCRIPTS_BENCH_TRAIN=0 skips; LORA_SCRIPTS_BENCH_TRAIN_RES sets the image side (default 512);
// LORA_SCRIPTS_BENCH_TRAIN_STEPS the timed steps (default 2, after one warm-up step that also compiles);
// LORA_SCRIPTS_BENCH_TRAIN_WEIGHTS=inputs|external feeds or bakes the frozen weights (default: the trainer's rule);
// LORA_SCRIPTS_BENCH_TRAIN_MODES=plain,checkpointed picks the settings (default both);
// LORA_SCRIPTS_BENCH_TRAIN_ARENA=0 turns ONNX Runtime's CPU memory arena off;
// LORA_SCRIPTS_BENCH_TRAIN_PROFILE=1 adds ONNX Runtime's time per op type (one profiled step, its own session);
// LORA_SCRIPTS_BENCH_SD15 uses an existing SD 1.5-shaped checkpoint instead of the cached synthetic one.
import { performance } from 'node:perf_hooks';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, tmpdir } from 'node:os';
import { writeSyntheticCheckpoint, SD15 } from '../engine/sd/synthetic.ts';
import { LDM_PREFIX } from '../engine/sd/keymap.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { summarizeProfile } from '../engine/runtime/profile.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../engine/sampling/training-schedule.ts';
import { createTrainingStepper } from '../engine/optim/index.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { bakeFrozenWeights, halfHeldWeights } from '../engine/train/frozen-weights.ts';
import { drawNoise, noiseBatch } from '../engine/train/objective.ts';
import { LoraTrainStep } from '../engine/train/step-graph.ts';
import { mallocTunablesFor } from '../bin/huge-pages.js';

export const name = 'train';

const gib = (bytes: number) => Math.round((bytes / 2 ** 30) * 100) / 100;
const peakRss = () => process.resourceUsage().maxRSS * 1024;

/**
 * PyTorch 2.13 + diffusers (fused SDPA) + peft, `../shared/bench/torch_sd15.py train 512 2` on this machine,
 * quiet, 2026-12-05: the peer these figures are compared with (diffusers cannot be installed here).
 */
const PYTORCH_512 = { secondsPerStep: 12.1, peakRssGiB: 7.1, source: 'torch_sd15.py train 512 2, quiet machine, 2026-12-05' };

/** One setting, measured in this process. */
async function measure(path: string, checkpointBlocks: boolean): Promise<Record<string, unknown>> {
  const res = Number(process.env.LORA_SCRIPTS_BENCH_TRAIN_RES ?? 512);
  const timed = Number(process.env.LORA_SCRIPTS_BENCH_TRAIN_STEPS ?? 2);
  const profile = process.env.LORA_SCRIPTS_BENCH_TRAIN_PROFILE === '1';
  let t = performance.now();
  // The trainer's rule: checkpointed training holds the file's float16 UNet weights as float16.
  const halfWeights = halfHeldWeights(checkpointBlocks, process.env.LORA_SCRIPTS_BENCH_TRAIN_WEIGHTS === 'external' ? 'baked' : 'auto');
  const model = await StableDiffusion.load(path, { halfWeights });
  const loadSeconds = (performance.now() - t) / 1000;
  // Only the UNet takes part in the step (frozen text encoder: contexts are computed once per caption; cached
  // latents): the text encoder's and VAE's weights are let go, as the PyTorch peer holds only its UNet.
  for (const k of [...model.weights.keys()]) if (!k.startsWith(LDM_PREFIX.unet)) model.weights.delete(k);
  // V8 frees large ArrayBuffers' memory on a background sweeper after the collection: give it a moment, or
  // the let-go weights (0.8 GiB) are still counted in the step's peak RSS.
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((r) => setTimeout(r, 300));
  gc?.();
  const rssAfterLoad = process.memoryUsage().rss;

  // kohya's default SD1 LoRA: every Linear / 1×1 conv in the transformer blocks, rank 16, alpha 8, UNet only
  // (the frozen text encoder's context is computed once per caption outside the step).
  const network = LoraNetwork.create(model.weightShapes(), { rank: 16, alpha: 8, targets: 'attention_mlp', textEncoder: false, seed: 1 });
  for (const m of network.modules) m.up.fill(0.001);
  const h = res / 8;
  const shape = { batch: 1, height: h, width: h, tokens: 77 };
  t = performance.now();
  // The trainer's own rule decides unless the environment says otherwise.
  const auto = !model.holdsHalfWeights && bakeFrozenWeights('auto', model.weightBytes()) ? 'external' : 'inputs';
  const weights = (process.env.LORA_SCRIPTS_BENCH_TRAIN_WEIGHTS ?? auto) as 'inputs' | 'external';
  const profileDir = profile ? await mkdtemp(join(tmpdir(), 'train-bench-profile-')) : undefined;
  const memArena = process.env.LORA_SCRIPTS_BENCH_TRAIN_ARENA !== '0';
  const session = { weights, memArena, ...(profileDir ? { profile: join(profileDir, 'p') } : {}) };
  const step = await LoraTrainStep.compile(model, network, shape, { trainTextEncoder: false, checkpointBlocks, session });
  const compileSeconds = (performance.now() - t) / 1000;
  const stepper = createTrainingStepper(
    {
      optimizer: 'adamw', learning_rate: 1e-4, text_encoder_lr: 1e-5, weight_decay: 0.01, max_grad_norm: 1,
      lr_scheduler: 'constant', lr_warmup_steps: 0, gradient_accumulation_steps: 1, mixed_precision: 'no',
    },
    { unet: network.buffers('unet') },
    timed + 1,
  );
  const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
  const ctxLen = 77 * model.arch.unet.contextDim;
  const context = Float32Array.from({ length: ctxLen }, (_, i) => Math.sin(i * 0.37));
  const C = model.arch.unet.inChannels;
  const latents = Float32Array.from({ length: C * h * h }, (_, i) => Math.cos(i * 0.11) * 0.8);
  const oneStep = async (k: number) => {
    const d = drawNoise([1, C, h, h], acp.length, 0, 1, 'bench', k);
    const nb = noiseBatch(latents, d.noise, d.timesteps, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
    const r = await step.run({ noisy: nb.noisy, timesteps: d.timesteps, context, target: nb.target, weights: nb.weights });
    stepper.microBatch(r.loss, r.grads);
    return r.loss;
  };
  t = performance.now();
  await oneStep(0);
  const firstStepSeconds = (performance.now() - t) / 1000;
  const seconds: number[] = [];
  for (let k = 1; k <= timed; k++) {
    t = performance.now();
    const loss = await oneStep(k);
    seconds.push((performance.now() - t) / 1000);
    console.error(`bench train: step ${k} ${seconds.at(-1)!.toFixed(2)} s, loss ${loss.toFixed(4)}, peak RSS ${gib(peakRss())} GiB`);
  }
  let opMsPerStep: Record<string, number> | undefined;
  if (profileDir) {
    step.endProfiling();
    const runs = timed + 1;
    const ops = await summarizeProfile(join(profileDir, 'p'));
    opMsPerStep = Object.fromEntries(ops.slice(0, 20).map((o) => [o.op, Math.round(o.ms / runs)]));
    await rm(profileDir, { recursive: true, force: true });
  }
  let trainable = 0;
  for (const v of network.buffers('unet').values()) trainable += v.length;
  return {
    resolution: `${res}x${res}`,
    batch: 1,
    network: { targets: 'attention_mlp (kohya default)', rank: 16, alpha: 8, modules: network.size, parameters: trainable, textEncoder: 'frozen' },
    threads: defaultThreads(),
    glibcTunables: process.env.GLIBC_TUNABLES ?? null,
    gradientCheckpointing: checkpointBlocks,
    frozenWeights: weights === 'external' ? 'baked into the session' : 'fed as inputs',
    frozenWeightsHeldAs: model.holdsHalfWeights ? 'float16 (the file\'s), widened where used' : 'float32',
    memArena,
    loadAverageAtStart: loadavg()[0],
    loadSeconds,
    compileSeconds,
    firstStepSeconds,
    secondsPerStep: Math.min(...seconds),
    stepSeconds: seconds,
    rssAfterLoadGiB: gib(rssAfterLoad),
    peakRssGiB: gib(peakRss()),
    ...(opMsPerStep ? { profiledOpMsPerStep: opMsPerStep } : {}),
  };
}

export async function run(): Promise<Record<string, unknown>> {
  if (process.env.LORA_SCRIPTS_BENCH_TRAIN === '0') return { skipped: 'LORA_SCRIPTS_BENCH_TRAIN=0' };
  let path = process.env.LORA_SCRIPTS_BENCH_SD15;
  let writeSeconds: number | undefined;
  if (!path) {
    const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));
    // The generation benchmark's checkpoint (same file, same seed): one 2 GiB file serves both.
    path = join(scratch, 'sd15-random-f16.safetensors');
    if (!existsSync(path)) {
      await mkdir(scratch, { recursive: true });
      const t = performance.now();
      console.error(`bench train: writing ${path} (once; minutes)`);
      await writeSyntheticCheckpoint(path, SD15, { dtype: 'F16', seed: 1 });
      writeSeconds = (performance.now() - t) / 1000;
    }
  }
  const modes = (process.env.LORA_SCRIPTS_BENCH_TRAIN_MODES ?? 'plain,checkpointed').split(',');
  const out: Record<string, unknown> = {
    model: 'SD 1.5 architecture, synthetic random weights (float16 file, float32 compute)',
    writeCheckpointSeconds: writeSeconds,
    pytorchReference: PYTORCH_512,
  };
  for (const mode of modes) {
    if (mode !== 'plain' && mode !== 'checkpointed') throw new Error(`LORA_SCRIPTS_BENCH_TRAIN_MODES: unknown setting '${mode}' (plain, checkpointed)`);
    // With LORA_SCRIPTS_HUGE_PAGES=1, malloc's tunables as `lora-scripts train` then sets them (bin/huge-pages.js).
    const env = process.env.LORA_SCRIPTS_HUGE_PAGES === '1' ? { ...process.env, GLIBC_TUNABLES: mallocTunablesFor('train') } : process.env;
    const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), mode, path], {
      env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
      maxBuffer: 1 << 24,
    });
    if (r.status !== 0) throw new Error(`train bench (${mode}) exited ${r.status ?? r.signal}`);
    const m = JSON.parse(r.stdout.trim().split('\n').pop()!) as { secondsPerStep: number; peakRssGiB: number };
    out[mode] = m;
    if (mode === 'plain' && m.secondsPerStep && (process.env.LORA_SCRIPTS_BENCH_TRAIN_RES ?? '512') === '512') {
      out.againstPytorch = {
        speed: Math.round((PYTORCH_512.secondsPerStep / m.secondsPerStep) * 100) / 100,
        memory: Math.round((m.peakRssGiB / PYTORCH_512.peakRssGiB) * 100) / 100,
      };
    }
  }
  return out;
}

export default run;

// Child process: `train.bench.ts <plain|checkpointed> <checkpoint>` prints one setting's JSON line.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mode, path] = process.argv.slice(2);
  const r = await measure(path!, mode === 'checkpointed');
  console.log(JSON.stringify(r));
}
