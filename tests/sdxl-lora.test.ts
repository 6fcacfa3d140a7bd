// SDXL LoRAs (kohya with SGM module names and lora_te1_/lora_te2_, diffusers/PEFT with text_encoder_2) merged
// at load time reproduce diffusers' outputs: both text encoders, the pooled embedding, and UNet eps.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { Goldens } from './support/golden.ts';
import { StableDiffusion } from '../engine/sd/model.ts';
import { LoraMerger, type StackItem } from '../engine/lora/merge.ts';
import { concatFeatures } from '../engine/sd/conditioning.ts';

const dir = join(fixturesDir, 'sdxl-tiny');
let golden: Goldens;
let model: StableDiffusion;
let merger: LoraMerger;
let folder: { model: StableDiffusion; merger: LoraMerger };
let single: { model: StableDiffusion; merger: LoraMerger };
const TE = 'golden/text_encoders.safetensors';
const UNET = 'golden/unet.safetensors';

const files = {
  kohya: { a: join(dir, 'lora-kohya/lora_a.safetensors'), b: join(dir, 'lora-kohya/lora_b.safetensors') },
  diffusers: { a: join(dir, 'lora-diffusers/lora_a'), b: join(dir, 'lora-diffusers/lora_b') },
};

before(async () => {
  golden = await Goldens.open(dir);
  const open = async (path: string) => {
    const m = await StableDiffusion.load(path, { threads: 1 });
    return { model: m, merger: new LoraMerger(m.weights, { log: () => {} }) };
  };
  folder = await open(join(dir, 'diffusers'));
  // The SGM file keeps text_encoder_2 in OpenCLIP form: its q/k/v LoRAs patch row slices of in_proj_weight.
  single = await open(join(dir, 'sdxl-tiny.safetensors'));
  ({ model, merger } = folder);
});

async function outputs() {
  const ids1 = await golden.readRaw('golden/inputs.safetensors', 'token_ids_te1');
  const ids2 = await golden.readRaw('golden/inputs.safetensors', 'token_ids_te2');
  const [batch, tokens] = ids1.shape as [number, number];
  const x = await golden.read('golden/inputs.safetensors', 'unet_latents');
  const t = await golden.readRaw('golden/inputs.safetensors', 'unet_timesteps');
  const sizes = (await golden.read('golden/inputs.safetensors', 'unet_time_ids')).data;
  const baseCtx = await golden.read(TE, 'context');
  const basePooled = await golden.read(TE, 'text_embeds');
  const [, , height, width] = x.shape as number[];
  const te = await model.encodeTextSdxl(ids1.data as BigInt64Array, ids2.data as BigInt64Array, batch, tokens);
  const context = concatFeatures(te.hidden1, te.hidden2, batch * tokens);
  const dims = { batch, height: height!, width: width!, tokens };
  const ts = Array.from(t.data as BigInt64Array, Number);
  return {
    ...te,
    context,
    epsUnetOnly: await model.predict(x.data, ts, baseCtx.data, dims, { pooled: basePooled.data, sizes }),
    eps: await model.predict(x.data, ts, context, dims, { pooled: te.pooled, sizes }),
  };
}

async function check(stack: StackItem[], suffix: string) {
  const r = await merger.apply(stack);
  for (const l of r.loras) {
    assert.deepEqual(l.unmatched, [], `${l.name}: unmatched modules`);
    assert.deepEqual(l.errors, [], `${l.name}: errors`);
  }
  const o = await outputs();
  await golden.expectClose(o.hidden1, TE, `te1_penultimate_${suffix}`);
  await golden.expectClose(o.hidden2, TE, `te2_penultimate_${suffix}`);
  await golden.expectClose(o.pooled, TE, `text_embeds_${suffix}`);
  await golden.expectClose(o.context, TE, `context_${suffix}`);
  await golden.expectClose(o.epsUnetOnly, UNET, `eps_${suffix}_unet_only`);
  await golden.expectClose(o.eps, UNET, `eps_${suffix}`);
}

for (const [format, where] of [['kohya', 'single'], ['kohya', 'folder'], ['diffusers', 'folder'], ['diffusers', 'single']] as const) {
  test(`SDXL ${format} LoRA A at 1.0 matches diffusers (UNet, text_encoder, text_encoder_2), ${where === 'single' ? 'SGM single file' : 'diffusers folder'}`, async () => {
    ({ model, merger } = where === 'single' ? single : folder);
    await check([{ path: files[format].a, te: 1, unet: 1, name: 'a' }], 'lora_a_x1');
    await merger.apply([]);
  });

  if (where === 'single' && format === 'diffusers') continue;
  test(`SDXL ${format} LoRA A×m + B×m stack matches, and restoring gives the base model back (${where})`, async () => {
    ({ model, merger } = where === 'single' ? single : folder);
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
    await golden.expectClose(o.context, TE, 'context');
    await golden.expectClose(o.eps, UNET, 'eps_base');
  });
}

test('a LoRA for another family is refused naming both, and the weights stay the base model', async () => {
  ({ model, merger } = folder);
  const familyMerger = new LoraMerger(model.weights, { family: model.arch.family, log: () => {} });
  const sd1Lora = join(fixturesDir, 'sd-tiny', 'lora-kohya', 'lora_a.safetensors');
  await assert.rejects(familyMerger.apply([{ path: sd1Lora, te: 1, unet: 1, name: 'sd1_style' }]), /'sd1_style' is made for SD 1\.x, but the loaded checkpoint is SDXL/);
  const o = await outputs();
  await golden.expectClose(o.eps, UNET, 'eps_base');

  const sd1 = await StableDiffusion.load(join(fixturesDir, 'sd-tiny', 'sd-tiny.safetensors'), { threads: 1 });
  const sd1Merger = new LoraMerger(sd1.weights, { family: sd1.arch.family, log: () => {} });
  // The PEFT folder has no kohya metadata: its text_encoder_2 modules say SDXL.
  await assert.rejects(sd1Merger.apply([{ path: files.diffusers.a, te: 1, unet: 1, name: 'xl' }]), /'xl' is made for SDXL, but the loaded checkpoint is SD 1\.x/);
  await assert.rejects(sd1Merger.apply([{ path: files.kohya.b, te: 1, unet: 1, name: 'xl_b' }]), /'xl_b' is made for SDXL/);
});
