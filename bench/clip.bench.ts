// CLIP ViT-L/14's vision tower (the per-image cost of `lora-scripts label`) with random weights: seconds per
// batch of 1 and 4 images with baked weights (what labelling uses), and CLIPImageProcessor-exact preprocessing of
// one 512×384 JPEG; PyTorch + transformers (SDPA attention) on the same shapes in the same run, in alternating
// rounds (bench/torch_clip.py) when a Python with torch is found ($BENCH_PYTHON, default `python3`).
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { defaultClipPreprocess, loadClipPixels } from '../engine/clip/preprocess.ts';
import { clipVisionEncoder, type ClipVisionArch } from '../engine/models/clip-vision.ts';
import { weightContext } from '../engine/models/layers.ts';
import { clearSessionCache, compile } from '../engine/runtime/session.ts';
import { defaultThreads } from '../engine/runtime/providers.ts';

export const name = 'clip';

const scratch = fileURLToPath(new URL('./scratch/', import.meta.url));
const REPS = Number(process.env.BENCH_CLIP_REPS ?? 3);
const BATCH = 4;

export const VIT_L14: ClipVisionArch = {
  layout: 'hf',
  prefix: 'vision_model.',
  projectionKey: 'visual_projection.weight',
  imageSize: 224,
  patchSize: 14,
  width: 1024,
  layers: 24,
  heads: 16,
  activation: 'quick_gelu',
  layerNormEps: 1e-5,
  projectionDim: 768,
};

/** transformers' CLIPVisionModelWithProjection state-dict shapes for an arch (HF layout). */
function shapes(a: ClipVisionArch): Map<string, number[]> {
  const W = a.width;
  const P = a.prefix;
  const m = new Map<string, number[]>([
    [`${P}embeddings.patch_embedding.weight`, [W, 3, a.patchSize, a.patchSize]],
    [`${P}embeddings.class_embedding`, [W]],
    [`${P}embeddings.position_embedding.weight`, [(a.imageSize / a.patchSize) ** 2 + 1, W]],
    [`${P}pre_layrnorm.weight`, [W]],
    [`${P}pre_layrnorm.bias`, [W]],
    [`${P}post_layernorm.weight`, [W]],
    [`${P}post_layernorm.bias`, [W]],
    [a.projectionKey, [a.projectionDim, W]],
  ]);
  for (let i = 0; i < a.layers; i++) {
    const L = `${P}encoder.layers.${i}.`;
    for (const n of ['layer_norm1', 'layer_norm2']) (m.set(`${L}${n}.weight`, [W]), m.set(`${L}${n}.bias`, [W]));
    for (const n of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) (m.set(`${L}self_attn.${n}.weight`, [W, W]), m.set(`${L}self_attn.${n}.bias`, [W]));
    m.set(`${L}mlp.fc1.weight`, [4 * W, W]);
    m.set(`${L}mlp.fc1.bias`, [4 * W]);
    m.set(`${L}mlp.fc2.weight`, [W, 4 * W]);
    m.set(`${L}mlp.fc2.bias`, [W]);
  }
  return m;
}

function randomWeights(a: ClipVisionArch): Map<string, { shape: number[]; data: Float32Array }> {
  let s = 7;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [k, shape] of shapes(a)) {
    const n = shape.reduce((x, y) => x * y, 1);
    const scale = shape.length > 1 ? 1 / Math.sqrt(shape.slice(1).reduce((x, y) => x * y, 1)) : 0.02;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = ((s = (s * 16807) % 2147483647) / 2147483647 - 0.5) * 2 * scale;
    if (k.includes('norm') && k.endsWith('weight')) data.fill(1);
    out.set(k, { shape, data });
  }
  return out;
}

async function best(fn: () => Promise<unknown>, reps: number): Promise<number> {
  await fn();
  let b = Infinity;
  for (let i = 0; i < reps; i++) {
    const t = performance.now();
    await fn();
    b = Math.min(b, (performance.now() - t) / 1000);
  }
  return b;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;

/**
 * The machine is shared, so its load moves between measurements: PyTorch and lora-scripts are measured in
 * alternating rounds (PyTorch in its own process, then ours), and each round's ratio is reported with the median.
 */
export async function run(): Promise<Record<string, unknown>> {
  await mkdir(scratch, { recursive: true });
  const threads = defaultThreads();
  const rounds = Number(process.env.BENCH_CLIP_ROUNDS ?? 3);
  const jpeg = join(scratch, 'clip-bench.jpg');
  const noise = Buffer.alloc(512 * 384 * 3);
  for (let i = 0; i < noise.length; i++) noise[i] = (i * 2654435761) >>> 24;
  await sharp(noise, { raw: { width: 512, height: 384, channels: 3 } }).jpeg({ quality: 90 }).toFile(jpeg);
  const out: Record<string, unknown> = { model: 'CLIP ViT-L/14 vision tower + projection, random weights, fp32, 224²', threads, rounds, loadavgBefore: loadavg()[0] };

  const weights = randomWeights(VIT_L14);
  const ctx = () => weightContext({ shape: (k) => weights.get(k)?.shape, data: (k) => weights.get(k)!.data });
  const S = VIT_L14.imageSize;
  const graphs = new Map<string, Awaited<ReturnType<typeof compile>>>();
  for (const b of [1, BATCH]) graphs.set(`baked${b}`, await compile([clipVisionEncoder(ctx(), VIT_L14, { batch: b }).embeds], { weights: 'external', threads }));
  const cfg = defaultClipPreprocess(S);
  const py = process.env.BENCH_PYTHON ?? 'python3';
  const perRound: Record<string, unknown>[] = [];
  for (let r = 0; r < rounds; r++) {
    const t = spawnSync(py, [fileURLToPath(new URL('./torch_clip.py', import.meta.url)), String(threads), jpeg, String(BATCH), String(REPS), 'sdpa'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    if (t.status !== 0) {
      out.torch = { skipped: `${py} with torch + transformers not available (set BENCH_PYTHON)` };
      break;
    }
    const torch = JSON.parse(t.stdout.trim().split('\n').pop()!) as Record<string, number>;
    const ours: Record<string, number> = {};
    for (const b of [1, BATCH]) {
      const px = new Float32Array(b * 3 * S * S).map((_, i) => Math.sin(i) * 0.5);
      ours[`batch${b}_seconds`] = r3(await best(() => graphs.get(`baked${b}`)!.run({ pixel_values: { data: px, shape: [b, 3, S, S] } }), REPS));
    }
    ours.preprocess_seconds = r3(await best(() => loadClipPixels(jpeg, cfg), 20));
    const row = {
      round: r + 1,
      loadavg: loadavg()[0],
      torch_batch1_seconds: r3(torch['sdpa_batch1_seconds']!),
      ours_batch1_seconds: ours['batch1_seconds'],
      [`torch_batch${BATCH}_seconds`]: r3(torch[`sdpa_batch${BATCH}_seconds`]!),
      [`ours_batch${BATCH}_seconds`]: ours[`batch${BATCH}_seconds`],
      torch_preprocess_seconds: r3(torch['preprocess_seconds']!),
      ours_preprocess_seconds: ours.preprocess_seconds,
      speedup_batch1: r3(torch['sdpa_batch1_seconds']! / ours['batch1_seconds']!),
      [`speedup_batch${BATCH}`]: r3(torch[`sdpa_batch${BATCH}_seconds`]! / ours[`batch${BATCH}_seconds`]!),
    };
    console.error(`  round ${r + 1}: ${JSON.stringify(row)}`);
    perRound.push(row);
  }
  const median = (k: string) => {
    const v = perRound.map((x) => x[k] as number).sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length / 2)] : null;
  };
  out.rounds_detail = perRound;
  out.median = { speedup_batch1: median('speedup_batch1'), [`speedup_batch${BATCH}`]: median(`speedup_batch${BATCH}`), ours_batch1_seconds: median('ours_batch1_seconds'), torch_batch1_seconds: median('torch_batch1_seconds') };
  out.loadavgAfter = loadavg()[0];
  await clearSessionCache();
  return out;
}

export default run;
