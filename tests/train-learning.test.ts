// Proof that training learns: a LoRA trained on a small synthetic dataset lowers the denoising loss on
// held-out images of the same pattern (fixed timesteps and noise) and brings the model's x0 predictions
// closer to those images, compared with the zero-initialised LoRA (= the base model).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { writePatternDataset, tinyConfig } from './support/train-fixture.ts';
import { train } from '../engine/train/trainer.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { loadLora } from '../engine/lora/load.ts';
import { loadClipTokenizer } from '../engine/text/tokenizer.ts';
import { loadImageTensor } from '../engine/image/load.ts';
import { alphasCumprod, SD_TRAIN_SCHEDULE } from '../engine/sampling/training-schedule.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import { gaussian, noiseBatch, predictX0 } from '../engine/train/objective.ts';
import { seededRandom } from '../engine/train/seeded-random.ts';
import { LoraLossEval } from '../engine/train/step-graph.ts';

/** Held-out loss must fall to at most this fraction of the untrained LoRA's. */
const LOSS_FACTOR = 0.7;
const TIMESTEPS = [50, 200, 350, 500, 650, 800, 950];

test('a trained LoRA lowers held-out loss and x0 error versus the zero-initialised LoRA', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'train-learn-'));
  try {
    const caption = 'a yellow disk, dark background';
    await writePatternDataset(join(dir, 'data'), 8, 0, caption);
    const held = await writePatternDataset(join(dir, 'held'), 2, 8, caption);
    const config = await tinyConfig(dir, join(dir, 'data'), join(dir, 'out'), { epochs: 10, learning_rate: 3e-3, lora_rank: 8, lora_alpha: 8 });
    const result = await train(config, { threads: 1 });
    assert.equal(result.steps, 40);
    assert.ok(result.outputPath);

    const model = await StableDiffusion.load(config.base_model, { threads: 1 });
    const tok = await loadClipTokenizer(config.tokenizer);
    const ids = BigInt64Array.from(tok.encodePadded(caption), BigInt);
    const context1 = await model.encodeText(ids, 1, 77, 1);
    const acp = alphasCumprod(SD_TRAIN_SCHEDULE);
    const network = LoraNetwork.create(model.weights, { rank: 8, alpha: 8, targets: 'attention_mlp', textEncoder: false, seed: 1 });
    for (const m of network.modules) m.up.fill(0);
    const B = TIMESTEPS.length;
    const evaler = await LoraLossEval.compile(model, network, { batch: B, height: 8, width: 8, tokens: 77 }, { trainTextEncoder: false, session: { threads: 1 } });
    const context = new Float32Array(context1.length * B);
    for (let b = 0; b < B; b++) context.set(context1, b * context1.length);

    const measure = async () => {
      let loss = 0;
      let x0err = 0;
      for (const name of held) {
        const img = await loadImageTensor(join(dir, 'held', name), { resized: { width: 64, height: 64 }, crop: { left: 0, top: 0, width: 64, height: 64 } });
        const mean = await model.encode(img.data, { batch: 1, height: 64, width: 64 });
        const x0 = new Float32Array(mean.length * B);
        for (let b = 0; b < B; b++) for (let i = 0; i < mean.length; i++) x0[b * mean.length + i] = mean[i]! * model.arch.vae.scalingFactor;
        const noise = gaussian(x0.length, seededRandom(123, 'held-out', name));
        const nb = noiseBatch(x0, noise, TIMESTEPS, acp, { predictionType: 'epsilon', noiseOffset: 0, minSnrGamma: 0 });
        const r = await evaler.run({ noisy: nb.noisy, timesteps: TIMESTEPS, context, target: nb.target, weights: nb.weights });
        loss += r.loss / held.length;
        const x0hat = predictX0(nb.noisy, r.pred, TIMESTEPS, acp, 'epsilon');
        // Error on the mid/low-noise half, where the prediction says something about the image.
        let e = 0;
        const per = mean.length;
        const half = TIMESTEPS.filter((t) => t <= 500).length;
        for (let i = 0; i < half * per; i++) e += (x0hat[i]! - x0[i]!) ** 2;
        x0err += e / (half * per) / held.length;
      }
      return { loss, x0err };
    };

    const before = await measure();
    network.loadFrom(await loadLora(result.outputPath), 'trained LoRA');
    const after = await measure();
    const factor = after.loss / before.loss;
    console.log(`held-out loss ${before.loss.toFixed(4)} → ${after.loss.toFixed(4)} (×${factor.toFixed(3)}); x0 error ${before.x0err.toFixed(4)} → ${after.x0err.toFixed(4)}`);
    assert.ok(factor <= LOSS_FACTOR, `held-out loss fell only by ×${factor.toFixed(3)} (need ≤ ${LOSS_FACTOR})`);
    assert.ok(after.x0err < before.x0err, 'x0 predictions moved away from the held-out images');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
