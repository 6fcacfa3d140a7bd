// ONNX Runtime's CPU memory arena on and off for SD 1.5's UNet (fed weights, CFG batch 2), measured in
// alternating rounds in one process (the shared machine's load moves between measurements; each round's
// ratio is taken within the round). The arena keeps the largest activations' blocks for reuse; off, each run
// allocates and frees them. Peak memory per setting is in sd-pipe (one process per setting).
// BENCH_ARENA_SIZE (256) picks the image size, BENCH_ARENA_ROUNDS (3) the rounds.
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import { SD15, writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';
import { compile } from '../engine/runtime/session.ts';
import { timestepFeatures, unet } from '../engine/models/unet.ts';

export const name = 'sd-arena';

const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));
const round = (s: number) => Math.round(s * 100) / 100;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export async function run(): Promise<Record<string, unknown>> {
  await mkdir(scratch, { recursive: true });
  const ckpt = join(scratch, 'sd15-random-f16.safetensors');
  if (!existsSync(ckpt)) await writeSyntheticCheckpoint(ckpt, SD15, { dtype: 'F16', seed: 1 });
  const px = Number(process.env.BENCH_ARENA_SIZE ?? 256);
  const rounds = Number(process.env.BENCH_ARENA_ROUNDS ?? 3);
  const model = await StableDiffusion.load(ckpt);
  const h = px / 8;
  // One graph, two sessions: the arena setting is part of the session cache key.
  const outputs = [unet(model.context(), model.arch.unet, { batch: 2, height: h, width: h, contextTokens: 77 }).out];
  const sessions = { on: await compile(outputs, { memArena: true }), off: await compile(outputs, { memArena: false }) };
  const feeds = {
    x: new Float32Array(2 * 4 * h * h).map((_, i) => Math.cos(i * 0.37)),
    t_emb: timestepFeatures([400, 400], model.arch.unet.modelChannels),
    context: new Float32Array(2 * 77 * model.arch.unet.contextDim).map((_, i) => Math.sin(i) * 0.5),
  };
  const step = async (arena: boolean) => {
    const t = performance.now();
    await sessions[arena ? 'on' : 'off'].run(feeds);
    return (performance.now() - t) / 1000;
  };
  await step(true);
  await step(false);
  const out: { round: number; load: number; arenaSeconds: number; noArenaSeconds: number; ratio: number }[] = [];
  for (let r = 1; r <= rounds; r++) {
    const load = round(loadavg()[0]!);
    const on = await step(true);
    const off = await step(false);
    out.push({ round: r, load, arenaSeconds: round(on), noArenaSeconds: round(off), ratio: round(off / on) });
    console.error(`  round ${r} (load ${load}): arena ${on.toFixed(1)} s, no arena ${off.toFixed(1)} s`);
  }
  return { size: px, threads: defaultThreads(), rounds: out, medianNoArenaOverArena: median(out.map((o) => o.ratio)) };
}

export default run;
