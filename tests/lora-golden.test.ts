// LoRAs merged at load time into the real networks reproduce diffusers' outputs, in kohya and diffusers format.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { Goldens, assertClose } from './support/golden.ts';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraMerger, type StackItem } from '../engine/lora/merge.ts';

const dir = join(fixturesDir, 'sd-tiny');
let golden: Goldens;
let model: StableDiffusion;
let merger: LoraMerger;
const TE = 'golden/text_encoder.safetensors';
const UNET = 'golden/unet.safetensors';

const files = {
  kohya: { a: join(dir, 'lora-kohya/lora_a.safetensors'), b: join(dir, 'lora-kohya/lora_b.safetensors') },
  diffusers: { a: join(dir, 'lora-diffusers/lora_a'), b: join(dir, 'lora-diffusers/lora_b') },
};

before(async () => {
  golden = await Goldens.open(dir);
  model = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, ...(await sdTinySingleFileOptions()) });
  merger = new LoraMerger(model.weights, { log: () => {} });
});

async function outputs() {
  const ids = await golden.readRaw('golden/inputs.safetensors', 'token_ids');
  const [batch, tokens] = ids.shape as [number, number];
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const base = await golden.read(TE, 'last_hidden_state');
  const [, , height, width] = x.shape as number[];
  const ctx = await model.encodeText(ids.data as BigInt64Array, batch, tokens, 1);
  const skip2 = await model.encodeText(ids.data as BigInt64Array, batch, tokens, 2);
  const dims = { batch, height: height!, width: width!, tokens };
  const ts = Array.from(t.data as BigInt64Array, Number);
  return {
    ctx,
    skip2,
    epsUnetOnly: await model.predict(x.data, ts, base.data, dims),
    eps: await model.predict(x.data, ts, ctx, dims),
  };
}

async function check(stack: StackItem[], suffix: string) {
  const r = await merger.apply(stack);
  for (const l of r.loras) assert.deepEqual(l.unmatched, [], `${l.name}: unmatched modules`);
  const o = await outputs();
  await golden.expectClose(o.ctx, TE, `last_hidden_state_${suffix}`);
  await golden.expectClose(o.skip2, TE, `clip_skip_2_${suffix}`);
  await golden.expectClose(o.epsUnetOnly, UNET, `eps_${suffix}_unet_only`);
  await golden.expectClose(o.eps, UNET, `eps_${suffix}`);
}

for (const format of ['kohya', 'diffusers'] as const) {
  test(`${format} LoRA A at 1.0 matches diffusers' fused outputs`, async () => {
    await check([{ path: files[format].a, te: 1, unet: 1, name: 'a' }], 'lora_a_x1');
  });

  test(`${format} LoRA A×0.8 + B×0.5 stack matches, and restoring gives the base model back`, async () => {
    const m = golden.manifest.config.multipliers_for_lora_a_b as { a: number; b: number };
    await check(
      [
        { path: files[format].a, te: m.a, unet: m.a, name: 'a' },
        { path: files[format].b, te: m.b, unet: m.b, name: 'b' },
      ],
      'lora_a_b',
    );
    await merger.apply([]);
    const o = await outputs();
    await golden.expectClose(o.ctx, TE, 'last_hidden_state');
    await golden.expectClose(o.eps, UNET, 'eps_base');
  });
}

test('with conv weights baked into the sessions, merging and restoring still reach the goldens', async () => {
  const baked = await StableDiffusion.load(join(dir, 'sd-tiny.safetensors'), { threads: 1, weights: 'baked', ...(await sdTinySingleFileOptions()) });
  // The text-encoder graph is built (and cached) before any weight changes.
  const ids0 = await golden.readRaw('golden/inputs.safetensors', 'token_ids');
  await baked.encodeText(ids0.data as BigInt64Array, ids0.shape[0]!, ids0.shape[1]!, 1);
  const m = new LoraMerger(baked.weights, { log: () => {} });
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const base = await golden.read(TE, 'last_hidden_state');
  const [batch, , height, width] = x.shape as number[];
  const dims = { batch: batch!, height: height!, width: width!, tokens: base.shape[1]! };
  const ts = Array.from(t.data as BigInt64Array, Number);
  await golden.expectClose(await baked.predict(x.data, ts, base.data, dims), UNET, 'eps_base');
  const r = await m.apply([{ path: files.kohya.a, te: 1, unet: 1, name: 'a' }]);
  await baked.weightsChanged(r.changedKeys);
  await golden.expectClose(await baked.predict(x.data, ts, base.data, dims), UNET, 'eps_lora_a_x1_unet_only');
  const builds = baked.sessionBuilds;
  await baked.weightsChanged((await m.apply([])).changedKeys);
  await golden.expectClose(await baked.predict(x.data, ts, base.data, dims), UNET, 'eps_base');
  // The touched weights are fed from now on: switching stacks again costs no session rebuild.
  assert.equal(baked.sessionBuilds, builds);

  // A LoCon touching a baked 1×1 conv (SD1's proj_in) forces one rebuild, after which both modes agree.
  const tmp = await mkdtemp(join(tmpdir(), 'locon-'));
  const path = join(tmp, 'locon.safetensors');
  const r4 = 2;
  const ch = baked.weights.get('model.diffusion_model.input_blocks.1.1.proj_in.weight')!.shape[0]!;
  const down = new Float32Array(r4 * ch).map((_, i) => Math.sin(i) * 0.3);
  const up = new Float32Array(ch * r4).map((_, i) => Math.cos(i) * 0.3);
  await writeSafetensors(path, {
    'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight': { dtype: 'F32', shape: [r4, ch, 1, 1], data: down },
    'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight': { dtype: 'F32', shape: [ch, r4, 1, 1], data: up },
    'lora_unet_down_blocks_0_attentions_0_proj_in.alpha': { dtype: 'F32', shape: [], data: new Float32Array([r4]) },
  });
  const rb = await m.apply([{ path, te: 1, unet: 1, name: 'locon' }]);
  assert.deepEqual(rb.changedKeys, ['model.diffusion_model.input_blocks.1.1.proj_in.weight']);
  await baked.weightsChanged(rb.changedKeys);
  const bakedEps = await baked.predict(x.data, ts, base.data, dims);
  assert.ok(baked.sessionBuilds > builds, 'touching a baked conv must rebuild the session');
  // Graphs that did not bake the touched weight (text encoder, VAE) keep working sessions.
  const ids = await golden.readRaw('golden/inputs.safetensors', 'token_ids');
  await golden.expectClose(await baked.encodeText(ids.data as BigInt64Array, ids.shape[0]!, ids.shape[1]!, 1), TE, 'last_hidden_state');
  await merger.apply([{ path, te: 1, unet: 1, name: 'locon' }]);
  const fedEps = await model.predict(x.data, ts, base.data, dims);
  await merger.apply([]);
  assertClose(bakedEps, fedEps, { atol: 1e-5, rtol: 1e-5 }, 'baked vs fed LoCon');
  const baseEps = await golden.read(UNET, 'eps_base');
  assert.ok(bakedEps.some((v, i) => Math.abs(v - baseEps.data[i]!) > 1e-3), 'the LoCon changed nothing');
});
