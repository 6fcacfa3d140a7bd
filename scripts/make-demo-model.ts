/**
 * `npm run make-demo-model`: trains the bundled demo model from scratch with the project's own engine and
 * writes it to assets/demo/ (fp16 single file + A1111 sidecar yaml), then measures it on held-out prompts.
 *
 *   1. a random SD 1.x-layout checkpoint of the demo's shape (fp16 values);
 *   2. the autoencoder on toy-world pictures (full weights), its latents normalised;
 *   3. the UNet and the text encoder on the latents of the toy-world pictures and their captions (all weights
 *      but the token embeddings), logging the caption-swap gap;
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
import { autoencoderBatch } from '../engine/demo/autoencoder-batches.ts';
import { loadPhase, normaliseLatents, savePhase, trainAutoencoder, trainUnet } from '../engine/demo/full-training.ts';
import { heldOutTriples, plainCaption, renderScene, sampleScene } from '../engine/demo/toy-world.ts';
import { toChw } from '../engine/image/load.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { f32ToF16 } from '../engine/safetensors/float.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { writeSyntheticCheckpoint } from '../engine/sd/synthetic.ts';
import { chunkPrompt } from '../engine/text/chunker.ts';
import { BUNDLED_CLIP_TOKENIZER, loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { seededRandom, shuffled } from '../engine/train/seeded-random.ts';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';

const { values: a } = parseArgs({
  options: {
    out: { type: 'string', default: DEMO_MODEL },
    seed: { type: 'string', default: String(DEMO_RECIPE.seed) },
    scenes: { type: 'string', default: String(DEMO_RECIPE.scenes) },
    'unet-scenes': { type: 'string', default: String(DEMO_RECIPE.unet.scenes) },
    'vae-steps': { type: 'string', default: String(DEMO_RECIPE.autoencoder.steps) },
    'unet-steps': { type: 'string', default: String(DEMO_RECIPE.unet.steps) },
    'stripes-dir': { type: 'string', default: DEMO_STRIPES_DIR },
    /** Default: CLIP's vocabulary bundled with the project. */
    tokenizer: { type: 'string' },
    threads: { type: 'string', default: '2' },
    /** Where finished phases are kept (the autoencoder), so a rerun resumes at the next one. */
    'work-dir': { type: 'string', default: 'outputs/make-demo-model' },
  },
});
const num = (k: keyof typeof a) => {
  const v = Number(a[k]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${k}: '${a[k]}' is not a non-negative number`);
  return v;
};
const seed = num('seed');
const N = num('scenes');
// The UNet's scenes: the autoencoder's N first, then more (a scene is drawn from (seed, index) alone).
const U = Math.max(N, num('unet-scenes'));
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
  say(`initial model: ${[...w.values()].reduce((n, v) => n + v.data.length, 0).toLocaleString()} parameters; ${U} toy-world scenes (the autoencoder's ${N} first)`);

  const unetScenes = Array.from({ length: U }, (_, i) => sampleScene(seed, i));
  const unetPixels = unetScenes.map((s) => renderScene(s, S));
  const scenes = unetScenes.slice(0, N);
  const pixels = unetPixels.slice(0, N);
  const ae = DEMO_RECIPE.autoencoder;
  const codecScenes = [...scenes, ...Array.from({ length: ae.stripedScenes }, (_, i) => sampleScene(seed + 1, i, 'diagonal'))];
  const codecPixels = [...pixels, ...codecScenes.slice(N).map((s) => renderScene(s, S))];

  // 2. Autoencoder on crops: the same convolutions, a fraction of the pixels per step. Its result is kept in
  // the work folder under the settings that made it, so a rerun (or a killed run) starts at the UNet.
  const aeKey = JSON.stringify({ seed, scenes: N, vae: DEMO_CONFIG.vae, recipe: ae, steps: num('vae-steps') });
  const aeFile = join(resolve(a['work-dir']!), 'autoencoder.safetensors');
  const resumed = await loadPhase(aeFile, aeKey, w);
  if (resumed) say(`autoencoder: resumed from ${aeFile}`);
  else {
    const codec = codecPixels.map((rgb, i) => ({ rgb, scene: codecScenes[i]! }));
    await trainAutoencoder(
      w,
      model.arch,
      { batchSize: ae.batch, crop: ae.crop, batch: (i) => autoencoderBatch(codec, S, ae.crop, ae.batch, ae.shapeWeight, seed, i) },
      { steps: num('vae-steps'), lr: ae.lr, warmup: ae.warmup, latentNoise: ae.latentNoise, latentPenalty: ae.latentPenalty, l1: ae.l1, seed, session, log: (i, l) => say(`autoencoder step ${i}: loss ${l.toFixed(5)}`), logEvery: 100 },
    );
  }

  // Latent statistics over the whole set, folded into quant_conv / post_quant_conv.
  const C = model.arch.vae.embedDim;
  const h = S / 8;
  const per = C * h * h;
  const encode = async (images: readonly Uint8Array[]) => {
    const out = new Float32Array(images.length * per);
    const encBatch = 50;
    for (let i = 0; i < images.length; i += encBatch) {
      const n = Math.min(encBatch, images.length - i);
      const imgs = new Float32Array(encBatch * 3 * S * S);
      for (let b = 0; b < n; b++) imgs.set(toChw(images[i + b]!, S, S, false), b * 3 * S * S);
      const z = await model.encode(imgs, { batch: encBatch, height: S, width: S });
      out.set(z.subarray(0, n * per), i * per);
    }
    return out;
  };
  const gapScenes = Array.from({ length: DEMO_RECIPE.gapScenes }, (_, i) => sampleScene(seed + 2, i));
  const all = await encode([...unetPixels, ...gapScenes.map((s) => renderScene(s, S))]);
  const raw = all.subarray(0, N * per);
  const measured = { mean: [] as number[], std: [] as number[] };
  for (let c = 0; c < C; c++) {
    let s = 0;
    let s2 = 0;
    for (let i = 0; i < N; i++) for (let p = 0; p < h * h; p++) {
      const v = raw[i * per + c * h * h + p]!;
      s += v;
      s2 += v * v;
    }
    const m = s / (N * h * h);
    measured.mean.push(m);
    measured.std.push(Math.sqrt(Math.max(1e-12, s2 / (N * h * h) - m * m)));
  }
  // A resumed autoencoder was saved normalised: its encoder emits the normalised latent divided by the scaling
  // factor (which generation multiplies back), so mean 0 and std 1/scalingFactor per channel (as measured).
  const mean = resumed ? Array<number>(C).fill(0) : measured.mean;
  const std = resumed ? Array<number>(C).fill(1 / model.arch.vae.scalingFactor) : measured.std;
  if (!resumed) {
    normaliseLatents(w, model.arch, mean, std);
    await savePhase(aeFile, aeKey, w, /^first_stage_model\./);
  }
  const normalised = all.map((v, i) => (v - mean[Math.floor((i % per) / (h * h))]!) / std[Math.floor((i % per) / (h * h))]!);
  const latents = normalised.subarray(0, U * per);
  say(`latents: mean ${measured.mean.map((v) => v.toFixed(3)).join(' ')}, std ${measured.std.map((v) => v.toFixed(3)).join(' ')} → normalised by mean ${mean.map((v) => v.toFixed(3)).join(' ')}, std ${std.map((v) => v.toFixed(3)).join(' ')}`);

  // 3. UNet and text encoder on (latent, caption) pairs; token ids exactly as generation frames them.
  const idsOf = (text: string) => Int32Array.from(chunkPrompt(tokenizer, text)[0]!.ids);
  const tokens = idsOf('').length;
  const idRows = (texts: readonly string[]) => {
    const out = new Int32Array(texts.length * tokens);
    texts.forEach((t, i) => out.set(idsOf(t), i * tokens));
    return out;
  };
  const validation = { latents: normalised.subarray(U * per), ids: idRows(gapScenes.map((s) => s.caption)), count: gapScenes.length };
  const u = DEMO_RECIPE.unet;
  await trainUnet(
    w,
    model.arch,
    { latents, ids: idRows(unetScenes.map((s) => s.caption)), plainIds: idRows(unetScenes.map(plainCaption)), count: U, emptyIds: idsOf('') },
    {
      steps: num('unet-steps'),
      batch: u.batch,
      lr: u.lr,
      textLr: u.textLr,
      warmup: u.warmup,
      latentSize: h,
      tokens,
      seed,
      uncondRate: u.uncondRate,
      plainRate: u.plainRate,
      noiseOffset: u.noiseOffset,
      minSnrGamma: u.minSnrGamma,
      vPredLikeLoss: u.vPredLikeLoss,
      session,
      log: (i, l) => say(`unet step ${i}: loss ${l.toFixed(5)}`),
      logEvery: 100,
      validation,
      logGap: (i, g) => say(`unet step ${i}: x₀ error at high noise with the right caption ${g.right.toFixed(4)}, with another scene's ${g.wrong.toFixed(4)}`),
    },
  );

  // 4. The file: fp16 tensors in the LDM layout, and A1111's sidecar config.
  const out = resolve(a.out!);
  const tensors = new Map([...w].map(([k, v]) => [k, { dtype: 'F16' as const, shape: v.shape, data: f32ToF16(v.data) }]));
  await writeSafetensors(out, tensors, {
    format: 'pt',
    'lora-scripts.demo': `toy world ${S}x${S}, trained by make-demo-model (seed ${seed}, ${N} autoencoder / ${U} UNet scenes, ${a['vae-steps']} autoencoder + ${a['unet-steps']} UNet steps)`,
  });
  await writeBufferAtomic(out.replace(/\.safetensors$/, '.yaml'), demoSidecarYaml());
  say(`wrote ${out}`);

  // Held-out prompts through the real pipeline.
  const gen = await SdGenerator.load(out, { tokenizer: a.tokenizer });
  const cases = shuffled(heldOutTriples(), seededRandom(seed, 'eval')).slice(0, DEMO_RECIPE.evalPrompts);
  const acc = colourAccuracy(await generateCases(gen, cases));
  say(`held-out prompts (${cases.length}): shape colour ${(100 * acc.shape).toFixed(0)}%, background ${(100 * acc.background).toFixed(0)}%`);
} finally {
  await rm(tmp, { recursive: true, force: true });
}
