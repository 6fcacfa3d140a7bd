/**
 * LoRA merge benchmark: two random rank-32 kohya LoRAs covering every module kohya trains by default
 * (UNet transformer Linear/1×1 conv + text-encoder attention/MLP) merged into SD 1.5-sized weights.
 * Figures: cold apply (file parse + merge), merge alone, restore, and a repeat served from the stack cache,
 * plus GEMM throughput of the JS reference loop against the ONNX Runtime path on one large layer.
 *
 * Every UNet and text-encoder tensor is allocated (983M values, 3.9 GB float32), as a loaded model would be;
 * peak memory is about 7 GB with the pristine copies and one cached stack. LORA_BENCH_TARGETS_ONLY=1 keeps
 * only the 352M values the LoRAs touch (the merger reads nothing else) for a lighter run; timings agree.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { SD15, syntheticShapes } from '../engine/sd/synthetic.ts';
import { ldmToDiffusers, inferUnetLayout, LDM_PREFIX } from '../engine/sd/keymap.ts';
import { LoraMerger } from '../engine/lora/merge.ts';
import { TargetIndex } from '../engine/lora/targets.ts';
import { matmulAccumulate } from '../engine/lora/delta.ts';
import { addLowRankOrt } from '../engine/lora/lowrank-ort.ts';
import { kohyaMetadata, writeKohyaLora } from '../engine/lora/write.ts';
import type { LoraModule, WeightMap } from '../engine/lora/types.ts';

const RANK = 32;

/** Fast uniform fill; the values only need to be non-trivial, not normal. */
function fill(n: number, seed: number, scale: number): Float32Array {
  const a = new Float32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    a[i] = ((x >>> 0) / 4294967296 - 0.5) * scale;
  }
  return a;
}

/** kohya's default SD1 targets: Linear / 1×1 conv inside transformers, and the CLIP attention + MLP Linears. */
function isDefaultTarget(key: string): boolean {
  if (key.startsWith(LDM_PREFIX.unet)) return /\.1\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))\.weight$/.test(key);
  return /self_attn\.(q|k|v|out)_proj\.weight$|mlp\.fc[12]\.weight$/.test(key);
}

function makeLora(targets: [string, number[]][], layout: ReturnType<typeof inferUnetLayout>, seed: number): LoraModule[] {
  return targets.map(([key, shape], i) => {
    const out = shape[0]!, inn = shape.slice(1).reduce((a, b) => a * b, 1);
    const part = key.startsWith(LDM_PREFIX.unet) ? 'unet' : 'te';
    const path = part === 'unet' ? ldmToDiffusers(key, { unet: layout })!.name.slice(0, -'.weight'.length) : key.slice(LDM_PREFIX.text_encoder.length, -'.weight'.length);
    const tail = shape.slice(2);
    return {
      name: '', part, path, kind: 'lora' as const, rank: RANK, alpha: 16, scale: 16 / RANK,
      tensors: {
        down: { shape: [RANK, ...shape.slice(1)], data: fill(RANK * inn, seed * 7919 + i, 2 / Math.sqrt(inn)) },
        up: { shape: [out, RANK, ...tail.map(() => 1)], data: fill(out * RANK, seed * 104729 + i, 0.1) },
      },
    };
  });
}

const secs = (t0: number) => +((performance.now() - t0) / 1000).toFixed(3);

export default async function run(): Promise<Record<string, unknown>> {
  const shapes = [...syntheticShapes(SD15)].filter(([k]) => k.startsWith(LDM_PREFIX.unet) || k.startsWith(LDM_PREFIX.text_encoder));
  const layout = inferUnetLayout(shapes.map(([k]) => k));
  const targets = shapes.filter(([k]) => isDefaultTarget(k));
  const full = process.env.LORA_BENCH_TARGETS_ONLY !== '1';
  const weights: WeightMap = new Map();
  let t0 = performance.now();
  for (const [k, s] of full ? shapes : targets) weights.set(k, { shape: s, data: fill(s.reduce((a, b) => a * b, 1), k.length * 131 + s[0]!, 0.05) });
  const allocSeconds = secs(t0);
  const values = [...weights.values()].reduce((n, w) => n + w.data.length, 0);
  const fma = targets.reduce((n, [, s]) => n + s.reduce((a, b) => a * b, 1) * RANK, 0);

  const dir = await mkdtemp(join(tmpdir(), 'lora-bench-'));
  try {
    const files: string[] = [];
    for (const seed of [1, 2]) {
      const f = join(dir, `lora${seed}.safetensors`);
      // F16 on disk, as trained LoRAs ship.
      await writeKohyaLora(f, makeLora(targets, layout, seed), kohyaMetadata({ outputName: `bench${seed}`, networkDim: RANK, networkAlpha: 16, baseModelVersion: 'sd_v1' }), { dtype: 'F16' });
      files.push(f);
    }
    const fileBytes = (await Promise.all(files.map((f) => stat(f)))).map((s) => s.size);
    const shapeMap = new Map(shapes);
    const index = new TargetIndex(shapeMap.keys(), (k) => shapeMap.get(k));
    // Room for one merged stack (1.4 GB): enough for the repeat to hit, small enough for a shared machine.
    const merger = new LoraMerger(weights, { index, cacheBytes: 2 * 2 ** 30, log: (m) => console.error(m) });
    const stack = [
      { path: files[0]!, te: 0.8, unet: 0.8 },
      { path: files[1]!, te: 0.5, unet: 0.5 },
    ];
    const cold = await merger.apply(stack);
    const unmatched = cold.loras.reduce((n, l) => n + l.unmatched.length + l.errors.length, 0);
    const restore = await merger.apply([]);
    const cached = await merger.apply(stack);
    await merger.apply([]);
    merger.clearCache('stacks');
    const merge = await merger.apply(stack);
    const mergeOne = await merger.apply([stack[0]!]);
    const restore2 = await merger.apply([]);

    // One large layer (SD 1.5 ff.net.0.proj at 1280 channels): JS loop vs ORT GEMM.
    const [O, I] = [10240, 1280];
    const u = fill(O * RANK, 3, 0.1), d = fill(RANK * I, 4, 0.1), w = new Float32Array(O * I);
    t0 = performance.now();
    matmulAccumulate(w, u, d, O, RANK, I);
    const jsSeconds = secs(t0);
    await addLowRankOrt(w, u, d, O, RANK, I);
    t0 = performance.now();
    await addLowRankOrt(w, u, d, O, RANK, I);
    const ortSeconds = secs(t0);

    return {
      model: 'SD 1.5 shapes (UNet + CLIP-L text encoder), random float32 weights',
      weightsResident: full ? 'every UNet and text-encoder tensor' : 'LoRA-targeted tensors only',
      residentValues: values,
      allocSeconds,
      loras: 2,
      rank: RANK,
      modulesPerLora: targets.length,
      loraFileMB: fileBytes.map((b) => +(b / 2 ** 20).toFixed(1)),
      gemmFmaPerLora: fma,
      unmatchedOrErrors: unmatched,
      coldApplySeconds: cold.seconds,
      mergeTwoSeconds: merge.seconds,
      mergeOneAfterTwoSeconds: mergeOne.seconds,
      restoreSeconds: restore.seconds,
      restoreAfterOneSeconds: restore2.seconds,
      cachedRepeatSeconds: cached.seconds,
      cachedRepeatFromCache: cached.fromCache,
      changedKeys: merge.changedKeys.length,
      effectiveGfmaPerSecond: +((2 * fma) / 1e9 / merge.seconds).toFixed(2),
      cache: merger.cache,
      rssMB: Math.round(process.memoryUsage().rss / 2 ** 20),
      // Other processes share the CPU; the load average says how much of it this run had.
      cpus: availableParallelism(),
      loadAverage1m: +loadavg()[0]!.toFixed(2),
      oneLayer: { shape: [O, I], rank: RANK, jsSeconds, ortSeconds, jsGfma: +((O * I * RANK) / 1e9 / jsSeconds).toFixed(2), ortGfma: +((O * I * RANK) / 1e9 / ortSeconds).toFixed(2) },
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await run(), null, 2));
}
