// SDXL at full size with random weights, against a plain-PyTorch peer on the same CPU in one run: one UNet CFG
// step (batch 2, 77 tokens) at 1024² and one LoRA training step at 1024² (batch 1, rank 16, kohya's attention +
// feed-forward targets, AdamW, gradient checkpointing), each with its process's peak RSS.
//
// For the CFG step ours holds the frozen UNet weights in float16 and feeds them to a float32 graph (a Cast per weight at use): the
// 2.57 G parameters take 5.1 GiB instead of 10.3. Every measurement runs in its own process (peak RSS is per
// process), ours and the peer's alternating, one timed run after a warm-up. The weights are made in memory
// (engine/sd/synthetic.ts's recipe); nothing is written to disk.
//
// Env: LORA_SCRIPTS_BENCH_TORCH=<python with torch + peft> adds the peer (bench/peer/torch_ldm.py);
// BENCH_SDXL_PARTS=cfg,train (default both), BENCH_SDXL_SIZE=1024, BENCH_SDXL_SHAPE=sdxl|sd15 (sd15 checks the peer
// against SD 1.5 figures), BENCH_SDXL_WEIGHTS=float16|float32 (ours, CFG step), BENCH_SDXL_TRAIN_WEIGHTS (ours,
// training; default float32), BENCH_SDXL_GC=1|0 (training), BENCH_SDXL_PEER_RUNS (timed peer runs, default 1),
// BENCH_SDXL_PEER_BF16=1 (training: the peer also under bfloat16 autocast, kohya's mixed precision),
// BENCH_SDXL_PROFILE=1 (training: ONNX Runtime's time per op type over ours' two steps, ms per step),
// BENCH_SDXL_MAX_GIB (default 19): a child whose RSS passes it stops and is reported as not fitting;
// BENCH_SDXL_NAME: the result file stem (default sdxl).
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { cast, param } from '../engine/graph/ops-core.ts';
import type { Tensor } from '../engine/graph/tensor.ts';
import { compile } from '../engine/runtime/session.ts';
import { summarizeProfile } from '../engine/runtime/profile.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { f32ToF16 } from '../engine/safetensors/float.ts';
import { inferUnetArch, type UnetArch } from '../engine/sd/arch.ts';
import type { StableDiffusion } from '../engine/sd/model.ts';
import { quickRandomTensor, SD15, SDXL_UNET, syntheticUnetShapes } from '../engine/sd/synthetic.ts';
import type { ModuleContext } from '../engine/models/layers.ts';
import { sizeConditionVector, timestepFeatures, unet } from '../engine/models/unet.ts';
import { createTrainingStepper } from '../engine/optim/index.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { buildLossGraph, compileFloat32Step } from '../engine/train/step-graph.ts';

export const name = process.env.BENCH_SDXL_NAME ?? 'sdxl';

const round = (s: number) => Math.round(s * 100) / 100;

function rssGiB(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? round(Number(m[1]) / 2 ** 20) : NaN;
}

type Shape = 'sdxl' | 'sd15';
const UNETS = { sdxl: SDXL_UNET, sd15: SD15.unet };

/** The UNet's architecture as the loader infers it from the shapes (SDXL: `label_emb` over pooled 1280 + 6 × 256). */
function archOf(shape: Shape, shapes: Map<string, number[]>): UnetArch {
  const arch = inferUnetArch((k) => shapes.get(k), shape === 'sdxl' ? 'sdxl' : 'sd1');
  if (shape === 'sdxl') arch.adm = { inChannels: 2816, pooledDim: 1280, sizeEmbedDim: 256, sizeConditions: 6 };
  return arch;
}

/** Random frozen weights, float16 or float32, and a context that feeds them to a float32 graph. */
function weights(shapes: Map<string, number[]>, dtype: 'float16' | 'float32'): (extra?: Partial<ModuleContext>) => ModuleContext {
  const data = new Map<string, Uint16Array | Float32Array>();
  for (const [k, s] of shapes) data.set(k, dtype === 'float16' ? f32ToF16(quickRandomTensor(k, s, 1)) : quickRandomTensor(k, s, 1));
  return (extra = {}) => {
    const made = new Map<string, Tensor>();
    const maybe = (key: string): Tensor | undefined => {
      const s = shapes.get(key);
      if (!s) return undefined;
      let t = made.get(key);
      if (!t) made.set(key, (t = cast(param(key, s, data.get(key)!, dtype), 'float32')));
      return t;
    };
    return { maybe, p: (key) => maybe(key) ?? (() => { throw new Error(`no weight ${key}`); })(), ...extra };
  };
}

/** Stops this child when its RSS passes the cap: the run is then reported as not fitting instead of endangering the machine. */
function watchMemory(): void {
  const cap = Number(process.env.BENCH_SDXL_MAX_GIB ?? 19);
  setInterval(() => {
    const rss = rssGiB('VmRSS');
    if (rss > cap) {
      console.log(JSON.stringify({ error: `RSS ${rss} GiB passed the ${cap} GiB cap (BENCH_SDXL_MAX_GIB); stopped` }));
      process.exit(3);
    }
  }, 200).unref();
}

async function cfgStep(shape: Shape, size: number, dtype: 'float16' | 'float32'): Promise<Record<string, unknown>> {
  const shapes = syntheticUnetShapes(UNETS[shape]);
  const arch = archOf(shape, shapes);
  let t = performance.now();
  const context = weights(shapes, dtype);
  const makeSeconds = (performance.now() - t) / 1000;
  const h = size / 8;
  const g = unet(context(), arch, { batch: 2, height: h, width: h, contextTokens: 77 });
  t = performance.now();
  const graph = await compile([g.out], {});
  const compileSeconds = (performance.now() - t) / 1000;
  const feeds: Record<string, Float32Array> = {
    x: Float32Array.from({ length: 2 * 4 * h * h }, (_, i) => Math.cos(i * 0.37)),
    t_emb: timestepFeatures([500, 500], arch.modelChannels),
    context: Float32Array.from({ length: 2 * 77 * arch.contextDim }, (_, i) => Math.sin(i) * 0.5),
  };
  if (arch.adm) {
    const pooled = Float32Array.from({ length: 2 * arch.adm.pooledDim }, (_, i) => Math.sin(i * 0.3));
    feeds.y = sizeConditionVector(pooled, [size, size, 0, 0, size, size, size, size, 0, 0, size, size], arch.adm);
  }
  const seconds: number[] = [];
  for (let i = 0; i < 2; i++) {
    t = performance.now();
    await graph.run(feeds);
    seconds.push((performance.now() - t) / 1000);
    console.error(`  ours ${shape} CFG step ${size}²: ${seconds.at(-1)!.toFixed(1)} s, peak RSS ${rssGiB('VmHWM')} GiB`);
  }
  return { weights: `${dtype} fed, float32 compute`, makeWeightsSeconds: round(makeSeconds), compileSeconds: round(compileSeconds), warmupSeconds: round(seconds[0]!), seconds: round(seconds[1]!), peakRssGiB: rssGiB('VmHWM') };
}

async function trainStep(shape: Shape, size: number, dtype: 'float16' | 'float32', gc: boolean): Promise<Record<string, unknown>> {
  const shapes = syntheticUnetShapes(UNETS[shape]);
  const arch = archOf(shape, shapes);
  const context = weights(shapes, dtype);
  const network = LoraNetwork.create({ keys: () => shapes.keys(), get: (k) => (shapes.has(k) ? { shape: shapes.get(k)! } : undefined) }, { rank: 16, alpha: 16, targets: 'attention_mlp', textEncoder: false, seed: 1 });
  for (const m of network.modules) m.up.fill(0.001);
  const h = size / 8;
  // With the text encoder frozen the loss graph reads only the UNet's architecture and a context over its weights.
  const model = { arch: { family: shape === 'sdxl' ? 'sdxl' : 'sd1', unet: arch }, context } as unknown as StableDiffusion;
  let t = performance.now();
  const { loss } = buildLossGraph(model, network, { batch: 1, height: h, width: h, tokens: 77 }, { trainTextEncoder: false, checkpointBlocks: gc });
  const params = network.paramTensors(['unet']);
  const profileDir = process.env.BENCH_SDXL_PROFILE === '1' ? await mkdtemp(join(tmpdir(), 'sdxl-bench-profile-')) : undefined;
  const step = await compileFloat32Step(loss, params, profileDir ? { profile: join(profileDir, 'p') } : {});
  const compileSeconds = (performance.now() - t) / 1000;
  const stepper = createTrainingStepper(
    { optimizer: 'adamw', learning_rate: 1e-4, text_encoder_lr: 1e-5, weight_decay: 0.01, max_grad_norm: 1, lr_scheduler: 'constant', lr_warmup_steps: 0, gradient_accumulation_steps: 1, mixed_precision: 'no' },
    { unet: network.buffers('unet') },
    2,
  );
  const n = 4 * h * h;
  const feeds: Record<string, Float32Array> = {
    x: Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.11) * 0.8),
    t_emb: timestepFeatures([500], arch.modelChannels),
    context: Float32Array.from({ length: 77 * arch.contextDim }, (_, i) => Math.sin(i * 0.37)),
    target: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7)),
    loss_weight: Float32Array.of(1),
  };
  if (arch.adm) feeds.y = sizeConditionVector(Float32Array.from({ length: arch.adm.pooledDim }, (_, i) => Math.sin(i * 0.3)), [size, size, 0, 0, size, size], arch.adm);
  const seconds: number[] = [];
  let lossValue = NaN;
  for (let i = 0; i < 2; i++) {
    t = performance.now();
    const r = await step.run(feeds);
    stepper.microBatch(r.loss, r.grads);
    seconds.push((performance.now() - t) / 1000);
    lossValue = r.loss;
    console.error(`  ours ${shape} train step ${size}²: ${seconds.at(-1)!.toFixed(1)} s, loss ${r.loss.toFixed(4)}, peak RSS ${rssGiB('VmHWM')} GiB`);
  }
  let loraParams = 0;
  for (const v of network.buffers('unet').values()) loraParams += v.length;
  let opMsPerStep: Record<string, number> | undefined;
  if (profileDir) {
    step.endProfiling();
    const ops = await summarizeProfile(join(profileDir, 'p'));
    opMsPerStep = Object.fromEntries(ops.slice(0, 20).map((o) => [o.op, Math.round(o.ms / seconds.length)]));
    await rm(profileDir, { recursive: true, force: true });
  }
  return { weights: `${dtype} fed, float32 compute`, gradientCheckpointing: gc, loraModules: network.size, loraParams, compileSeconds: round(compileSeconds), warmupSeconds: round(seconds[0]!), seconds: round(seconds[1]!), loss: lossValue, peakRssGiB: rssGiB('VmHWM'), ...(opMsPerStep ? { profiledOpMsPerStep: opMsPerStep } : {}) };
}

/** One measurement in a child process: `node --import tsx bench/sdxl.bench.ts <part> <shape> <size> <dtype> <gc>`. */
function child(args: string[]): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  const last = r.stdout.trim().split('\n').pop();
  try {
    return { ...(JSON.parse(last ?? '') as Record<string, unknown>), ...(r.status === 0 ? {} : { exit: r.status ?? r.signal }) };
  } catch {
    return { error: `exited ${r.status ?? r.signal} without a result` };
  }
}

function peer(args: string[]): Record<string, unknown> {
  const py = process.env.LORA_SCRIPTS_BENCH_TORCH;
  if (!py) return { skipped: 'LORA_SCRIPTS_BENCH_TORCH is not set' };
  const script = fileURLToPath(new URL('./peer/torch_ldm.py', import.meta.url));
  const r = spawnSync(py, [script, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24, env: { ...process.env, PEER_MAX_GIB: process.env.BENCH_SDXL_MAX_GIB ?? '19' } });
  const last = r.stdout.trim().split('\n').pop();
  try {
    return { ...(JSON.parse(last ?? '') as Record<string, unknown>), ...(r.status === 0 ? {} : { exit: r.status ?? r.signal }) };
  } catch {
    return { error: `peer exited ${r.status ?? r.signal} without a result` };
  }
}

export async function run(): Promise<Record<string, unknown>> {
  const parts = (process.env.BENCH_SDXL_PARTS ?? 'cfg,train').split(',');
  const shape = (process.env.BENCH_SDXL_SHAPE ?? 'sdxl') as Shape;
  if (!(shape in UNETS)) throw new Error(`BENCH_SDXL_SHAPE must be sdxl or sd15, got ${shape}`);
  const size = String(process.env.BENCH_SDXL_SIZE ?? 1024);
  const dtype = process.env.BENCH_SDXL_WEIGHTS ?? 'float16';
  // In training the backward pass needs every weight in float32 anyway (dX = dY·Wᵀ), so half storage saves nothing there.
  const trainDtype = process.env.BENCH_SDXL_TRAIN_WEIGHTS ?? 'float32';
  const gc = process.env.BENCH_SDXL_GC ?? '1';
  const peerRuns = process.env.BENCH_SDXL_PEER_RUNS ?? '1';
  const out: Record<string, unknown> = { shape, size: Number(size), threads: defaultThreads(), loadAverage: [loadavg()[0]] };
  if (parts.includes('cfg')) {
    const ours = child(['cfg', shape, size, dtype, gc]);
    (out.loadAverage as number[]).push(loadavg()[0] ?? 0);
    const theirs = peer(['unet', shape, size, peerRuns]);
    (out.loadAverage as number[]).push(loadavg()[0] ?? 0);
    out.cfgStep = { ours, peer: theirs, speedup: typeof ours.seconds === 'number' && typeof theirs.min === 'number' ? round(theirs.min / ours.seconds) : null };
  }
  if (parts.includes('train')) {
    const ours = child(['train', shape, size, trainDtype, gc]);
    (out.loadAverage as number[]).push(loadavg()[0] ?? 0);
    const theirs = peer(['train', shape, size, peerRuns, ...(gc === '1' ? ['gc'] : [])]);
    (out.loadAverage as number[]).push(loadavg()[0] ?? 0);
    const speedup = (p: Record<string, unknown>) => (typeof ours.seconds === 'number' && typeof p.min === 'number' ? round(p.min / ours.seconds) : null);
    out.trainStep = { ours, peer: theirs, speedup: speedup(theirs) };
    if (process.env.BENCH_SDXL_PEER_BF16 === '1') {
      const bf16 = peer(['train', shape, size, peerRuns, ...(gc === '1' ? ['gc'] : []), 'bf16']);
      (out.loadAverage as number[]).push(loadavg()[0] ?? 0);
      Object.assign(out.trainStep as object, { peerBf16: bf16, speedupVsBf16: speedup(bf16) });
    }
  }
  return out;
}

export default run;

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [part, shape, size, dtype, gc] = process.argv.slice(2) as [string, Shape, string, 'float16' | 'float32', string];
  watchMemory();
  const r = part === 'cfg' ? await cfgStep(shape, Number(size), dtype) : await trainStep(shape, Number(size), dtype, gc === '1');
  console.log(JSON.stringify(r));
  process.exit(0);
}
