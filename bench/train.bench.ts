// Seconds per LoRA training step (forward + backward through the frozen UNet, AdamW update) on a full-size
// SD 1.5 architecture with random weights, at 512×512 batch 1, and the process's peak RSS.
// The synthetic checkpoint (float16, ~2 GiB) is made once under bench/scratch/ (minutes).
// Env: LORA_SCRIPTS_BENCH_TRAIN=0 skips; LORA_SCRIPTS_BENCH_TRAIN_RES sets the image side (default 512);
// LORA_SCRIPTS_BENCH_TRAIN_STEPS the timed steps (default 2, after one warm-up step that also compiles);
// LORA_SCRIPTS_BENCH_TRAIN_WEIGHTS=inputs|external feeds or bakes the frozen weights (default: the trainer's rule);
// LORA_SCRIPTS_BENCH_TRAIN_CHECKPOINT=1 checkpoints the UNet blocks; LORA_SCRIPTS_BENCH_SD15 uses an existing SD 1.5-shaped checkpoint instead of the cached synthetic one.
import { performance } from 'node:perf_hooks';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadavg, totalmem } from 'node:os';
import { writeSyntheticCheckpoint, SD15 } from '../engine/sd/synthetic.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../engine/sampling/training-schedule.ts';
import { createTrainingStepper } from '../engine/optim/index.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { BAKE_RAM_FACTOR } from '../engine/train/trainer.ts';
import { drawNoise, noiseBatch } from '../engine/train/objective.ts';
import { LoraTrainStep } from '../engine/train/step-graph.ts';

export const name = 'train';

const gib = (bytes: number) => Math.round((bytes / 2 ** 30) * 100) / 100;
const peakRss = () => process.resourceUsage().maxRSS * 1024;

export async function run(): Promise<Record<string, unknown>> {
  if (process.env.LORA_SCRIPTS_BENCH_TRAIN === '0') return { skipped: 'LORA_SCRIPTS_BENCH_TRAIN=0' };
  const res = Number(process.env.LORA_SCRIPTS_BENCH_TRAIN_RES ?? 512);
  const timed = Number(process.env.LORA_SCRIPTS_BENCH_TRAIN_STEPS ?? 2);
  const scratch = join(fileURLToPath(new URL('.', import.meta.url)), 'scratch');
  let path = process.env.LORA_SCRIPTS_BENCH_SD15;
  let writeSeconds: number | undefined;
  if (!path) {
    path = join(scratch, 'sd15-synthetic-f16.safetensors');
    if (!existsSync(path)) {
      await mkdir(scratch, { recursive: true });
      const t = performance.now();
      console.error(`bench train: writing ${path} (once; minutes)`);
      await writeSyntheticCheckpoint(path, SD15, { dtype: 'F16' });
      writeSeconds = (performance.now() - t) / 1000;
    }
  }
  let t = performance.now();
  const model = await StableDiffusion.load(path);
  const loadSeconds = (performance.now() - t) / 1000;
  const rssAfterLoad = process.memoryUsage().rss;

  // kohya's default SD1 LoRA: every Linear / 1×1 conv in the transformer blocks, rank 16, alpha 8, UNet only
  // (the frozen text encoder's context is computed once per caption outside the step).
  const network = LoraNetwork.create(model.weights, { rank: 16, alpha: 8, targets: 'attention_mlp', textEncoder: false, seed: 1 });
  for (const m of network.modules) m.up.fill(0.001);
  const h = res / 8;
  const shape = { batch: 1, height: h, width: h, tokens: 77 };
  t = performance.now();
  // The trainer's own rule decides unless the environment says otherwise.
  let modelBytes = 0;
  for (const w of model.weights.values()) modelBytes += w.data.byteLength;
  const auto = totalmem() >= BAKE_RAM_FACTOR * modelBytes ? 'external' : 'inputs';
  const weights = (process.env.LORA_SCRIPTS_BENCH_TRAIN_WEIGHTS ?? auto) as 'inputs' | 'external';
  const checkpointBlocks = process.env.LORA_SCRIPTS_BENCH_TRAIN_CHECKPOINT === '1';
  const step = await LoraTrainStep.compile(model, network, shape, { trainTextEncoder: false, checkpointBlocks, session: { weights } });
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
  let trainable = 0;
  for (const v of network.buffers('unet').values()) trainable += v.length;
  return {
    model: 'SD 1.5 architecture, synthetic random weights (float16 file, float32 compute)',
    resolution: `${res}x${res}`,
    batch: 1,
    network: { targets: 'attention_mlp (kohya default)', rank: 16, alpha: 8, modules: network.size, parameters: trainable, textEncoder: 'frozen' },
    threads: defaultThreads(),
    gradientCheckpointing: checkpointBlocks,
    frozenWeights: weights === 'external' ? 'baked into the session (pre-packed kernels)' : 'fed as inputs',
    loadAverageAtStart: loadavg()[0],
    writeCheckpointSeconds: writeSeconds,
    loadSeconds,
    compileSeconds,
    firstStepSeconds,
    secondsPerStep: Math.min(...seconds),
    stepSeconds: seconds,
    rssAfterLoadGiB: gib(rssAfterLoad),
    peakRssGiB: gib(peakRss()),
    pytorchReference: { secondsPerStep: 29, peakGiB: 10.5, withCheckpointing: { secondsPerStep: 44, peakGiB: 7.1 } },
  };
}

export default run;
