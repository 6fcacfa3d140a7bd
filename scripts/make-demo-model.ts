/**
 * `npm run make-demo-model`: trains the bundled demo model from scratch with the project's own engine and
 * writes it to assets/demo/ (fp16 single file + A1111 sidecar yaml), then measures it on held-out prompts.
 *
 *   1. a random SD 1.x-layout checkpoint of the demo's shape (fp16 values, so the frozen text encoder is
 *      exactly what ships);
 *   2. the autoencoder on toy-world crops (full weights), its latents normalised;
 *   3. the UNet on the latents of the toy-world pictures and their captions (full weights, text encoder frozen);
 *   4. the file, then a check: held-out prompts through the real generation pipeline, judged by colour.
 *
 * Every random draw comes from the seed, and ONNX Runtime runs with a fixed thread count, so a run on the same
 * build gives the same file.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DEMO_CONFIG, DEMO_MODEL, DEMO_RECIPE, DEMO_RESOLUTION, DEMO_STRIPES_DIR, demoSidecarYaml } from '../engine/demo/demo-model.ts';
import { writeStripesDataset } from '../engine/demo/stripes-dataset.ts';
import { colourAccuracy, generateCases } from '../engine/demo/evaluate.ts';
import { normaliseLatents, trainAutoencoder, trainUnet } from '../engine/demo/full-training.ts';
import { heldOutTriples, renderScene, sampleScene } from '../engine/demo/toy-world.ts';
import { toChw } from '../engine/image/load.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { f32ToF16 } from '../engine/safetensors/float.ts';
import { ClipConditioner } from '../engine/sd/conditioning.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { BUNDLED_CLIP_TOKENIZER, loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { seededRandom, shuffled } from '../engine/train/seeded-random.ts';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';

const { values: a } = parseArgs({
  options: {
    out: { type: 'string', default: DEMO_MODEL },
    seed: { type: 'string', default: String(DEMO_RECIPE.seed) },
    scenes: { type: 'string', default: String(DEMO_RECIPE.scenes) },
    'vae-steps': { type: 'string', default: String(DEMO_RECIPE.autoencoderSteps) },
    'unet-steps': { type: 'string', default: String(DEMO_RECIPE.unetSteps) },
    'stripes-dir': { type: 'string', default: DEMO_STRIPES_DIR },
    /** Default: CLIP's vocabulary bundled with the project. */
    tokenizer: { type: 'string' },
    threads: { type: 'string', default: '2' },
  },
});
const num = (k: keyof typeof a) => {
  const v = Number(a[k]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${k}: '${a[k]}' is not a non-negative number`);
  return v;
};
const seed = num('seed');
const N = num('scenes');
const session = { threads: num('threads') };
const S = DEMO_RESOLUTION;
const t0 = performance.now();
const say = (m: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(0).padStart(5)} s] ${m}`);

await writeStripesDataset(resolve(a['stripes-dir']!), DEMO_RECIPE.stripesSeed);
say(`demo LoRA data set written to ${a['stripes-dir']}`);

const tmp = await mkdtemp(join(tmpdir(), 'make-demo-'));
try {
  const initPath = join(tmp, 'init.safetensors');
  await writeSyntheticCheckpoint(initPath, DEMO_CONFIG, { seed, dtype: 'F16' });
  const model = await StableDiffusion.load(initPath, session);
  const w = model.weights;
  // Residual branches and the UNet's output start at zero (as LDM's zero_module does): every block begins as
  // the identity, which keeps a from-scratch UNet stable at a high learning rate.
  for (const [k, v] of w) {
    if (k.startsWith('model.diffusion_model.') && /(out_layers\.3|proj_out|^model\.diffusion_model\.out\.2)\./.test(k)) v.data.fill(0);
  }
  const tokenizer = await loadClipTokenizer(a.tokenizer ?? BUNDLED_CLIP_TOKENIZER);
  say(`initial model: ${[...w.values()].reduce((n, v) => n + v.data.length, 0).toLocaleString()} parameters; ${N} toy-world scenes`);

  const scenes = Array.from({ length: N }, (_, i) => sampleScene(seed, i));
  const pixels = scenes.map((s) => renderScene(s, S));
  const codecPixels = [...pixels, ...Array.from({ length: DEMO_RECIPE.autoencoderStripedScenes }, (_, i) => renderScene(sampleScene(seed + 1, i, 'striped'), S))];

  // 2. Autoencoder on 32² crops: the same convolutions, a quarter of the pixels per step.
  const crop = DEMO_RECIPE.autoencoderCrop;
  const vaeBatch = DEMO_RECIPE.autoencoderBatch;
  await trainAutoencoder(
    w,
    model.arch,
    {
      batchSize: vaeBatch,
      crop,
      batch: (i) => {
        const r = seededRandom(seed, 'vae-batch', i);
        const out = new Float32Array(vaeBatch * 3 * crop * crop);
        for (let b = 0; b < vaeBatch; b++) {
          const img = codecPixels[Math.floor(r() * codecPixels.length)]!;
          const ox = Math.floor(r() * (S - crop + 1));
          const oy = Math.floor(r() * (S - crop + 1));
          const c = new Uint8Array(crop * crop * 3);
          for (let y = 0; y < crop; y++) c.set(img.subarray(((oy + y) * S + ox) * 3, ((oy + y) * S + ox + crop) * 3), y * crop * 3);
          out.set(toChw(c, crop, crop, false), b * 3 * crop * crop);
        }
        return out;
      },
    },
    { steps: num('vae-steps'), lr: 2e-3, warmup: 50, latentNoise: 0.1, latentPenalty: 1e-3, seed, session, log: (i, l) => say(`autoencoder step ${i}: loss ${l.toFixed(5)}`), logEvery: 100 },
  );

  // Latent statistics over the whole set, folded into quant_conv / post_quant_conv.
  const C = model.arch.vae.embedDim;
  const h = S / 8;
  const per = C * h * h;
  const raw = new Float32Array(N * per);
  const encBatch = 50;
  for (let i = 0; i < N; i += encBatch) {
    const n = Math.min(encBatch, N - i);
    const imgs = new Float32Array(encBatch * 3 * S * S);
    for (let b = 0; b < n; b++) imgs.set(toChw(pixels[i + b]!, S, S, false), b * 3 * S * S);
    const z = await model.encode(imgs, { batch: encBatch, height: S, width: S });
    raw.set(z.subarray(0, n * per), i * per);
  }
  const mean: number[] = [];
  const std: number[] = [];
  for (let c = 0; c < C; c++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < N; i++) for (let p = 0; p < h * h; p++) {
      const v = raw[i * per + c * h * h + p]!;
      s += v;
      s2 += v * v;
    }
    const m = s / (N * h * h);
    mean.push(m);
    std.push(Math.sqrt(Math.max(1e-12, s2 / (N * h * h) - m * m)));
  }
  normaliseLatents(w, model.arch, mean, std);
  const latents = raw.map((v, i) => (v - mean[Math.floor((i % per) / (h * h))]!) / std[Math.floor((i % per) / (h * h))]!);
  say(`latents: mean ${mean.map((v) => v.toFixed(3)).join(' ')}, std ${std.map((v) => v.toFixed(3)).join(' ')} → normalised`);

  // 3. UNet on (latent, caption) pairs; contexts exactly as generation makes them.
  const conditioner = new ClipConditioner(model, tokenizer);
  const empty = await conditioner.encode('', 1);
  const ctxLen = empty.data.length;
  const contexts = new Float32Array(N * ctxLen);
  for (let i = 0; i < N; i++) contexts.set((await conditioner.encode(scenes[i]!.caption, 1)).data, i * ctxLen);
  say('captions encoded');
  await trainUnet(
    w,
    model.arch,
    { latents, contexts, count: N, empty: empty.data },
    {
      steps: num('unet-steps'),
      batch: DEMO_RECIPE.unetBatch,
      lr: 1e-3,
      warmup: 100,
      latentSize: h,
      tokens: empty.tokens,
      seed,
      uncondRate: 0.1,
      noiseOffset: 0.1,
      minSnrGamma: 5,
      session,
      log: (i, l) => say(`unet step ${i}: loss ${l.toFixed(5)}`),
      logEvery: 100,
    },
  );

  // 4. The file: fp16 tensors in the LDM layout, and A1111's sidecar config.
  const out = resolve(a.out!);
  const tensors = new Map([...w].map(([k, v]) => [k, { dtype: 'F16' as const, shape: v.shape, data: f32ToF16(v.data) }]));
  await writeSafetensors(out, tensors, {
    format: 'pt',
    'lora-scripts.demo': `toy world ${S}x${S}, trained by make-demo-model (seed ${seed}, ${N} scenes, ${a['vae-steps']} autoencoder + ${a['unet-steps']} UNet steps)`,
  });
  await writeBufferAtomic(out.replace(/\.safetensors$/, '.yaml'), demoSidecarYaml());
  say(`wrote ${out}`);

  // Held-out prompts through the real pipeline.
  const gen = await SdGenerator.load(out, { tokenizer: a.tokenizer });
  const cases = shuffled(heldOutTriples(), seededRandom(seed, 'eval')).slice(0, 40);
  const acc = colourAccuracy(await generateCases(gen, cases));
  say(`held-out prompts (${cases.length}): shape colour ${(100 * acc.shape).toFixed(0)}%, background ${(100 * acc.background).toFixed(0)}%`);
} finally {
  await rm(tmp, { recursive: true, force: true });
}
