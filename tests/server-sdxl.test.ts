/**
 * The server with the real engine on an SDXL checkpoint (the sdxl-tiny SGM single file with its sidecar yaml):
 * txt2img with `<lora:…>` stacks of SDXL LoRAs, A1111's SDXL options, /sdapi/v1/loras listing SDXL LoRAs,
 * an SD 1.x LoRA refused naming both families, an SDXL refiner (refiner_checkpoint / refiner_switch_at) in the infotext.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';
import { fixturesDir } from './support/paths.ts';
import { writeTinyRefiner } from './support/sdxl-refiner.ts';

const xl = join(fixturesDir, 'sdxl-tiny');
let t: TestServer;
const base = { steps: 3, width: 64, height: 64, sampler_name: 'Euler', cfg_scale: 5, seed: 3 };

async function gen(body: object): Promise<{ images: string[]; info: any }> {
  const r = await t.post('/sdapi/v1/txt2img', { ...base, ...body });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return { images: r.body.images, info: JSON.parse(r.body.info) };
}

async function pixels(b64: string): Promise<Buffer> {
  return sharp(Buffer.from(b64, 'base64')).raw().toBuffer();
}

async function maxDiff(a: string, b: string): Promise<number> {
  const [pa, pb] = [await pixels(a), await pixels(b)];
  let m = 0;
  for (let i = 0; i < pa.length; i++) m = Math.max(m, Math.abs(pa[i]! - pb[i]!));
  return m;
}

before(async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'lora-scripts-sdxl-'));
  await mkdir(join(dataDir, 'models/Stable-diffusion'), { recursive: true });
  await mkdir(join(dataDir, 'models/Lora'), { recursive: true });
  for (const f of ['sdxl-tiny.safetensors', 'sdxl-tiny.yaml']) await symlink(join(xl, f), join(dataDir, 'models/Stable-diffusion', f));
  await symlink(join(xl, 'diffusers/tokenizer'), join(dataDir, 'models/tokenizer'));
  for (const n of ['lora_a', 'lora_b']) {
    await symlink(join(xl, 'lora-kohya', `${n}.safetensors`), join(dataDir, `models/Lora/xl_${n}.safetensors`));
    await symlink(join(xl, 'lora-diffusers', n, 'pytorch_lora_weights.safetensors'), join(dataDir, `models/Lora/xl_peft_${n}.safetensors`));
  }
  await symlink(join(fixturesDir, 'sd-tiny/lora-kohya/lora_a.safetensors'), join(dataDir, 'models/Lora/sd1_a.safetensors'));
  // Listed after sdxl-tiny, so the base stays the checkpoint the server loads first.
  await writeTinyRefiner(join(dataDir, 'models/Stable-diffusion'), 'xl-refiner');
  t = await startTestServer({ dataDir });
  const r = await t.post('/sdapi/v1/reload-checkpoint');
  assert.equal(r.status, 200, JSON.stringify(r.body));
});
after(() => t.close());

test('SDXL txt2img through the server: deterministic, LoRA tags stack and restore', async () => {
  const a = await gen({ prompt: 'a cat' });
  const png = await sharp(Buffer.from(a.images[0]!, 'base64')).metadata();
  assert.deepEqual([png.format, png.width, png.height], ['png', 64, 64]);
  assert.equal(a.images[0], (await gen({ prompt: 'a cat' })).images[0], 'same seed, same image');
  const withA = await gen({ prompt: 'a cat <lora:xl_lora_a:1>' });
  assert.ok((await maxDiff(withA.images[0]!, a.images[0]!)) > 8, 'the SDXL LoRA changes the image');
  const withAB = await gen({ prompt: 'a cat <lora:xl_lora_a:1> <lora:xl_lora_b:0.5>' });
  assert.ok((await maxDiff(withAB.images[0]!, withA.images[0]!)) > 8, 'a second SDXL LoRA stacks on the first');
  assert.match(withAB.info.infotexts[0], /Lora hashes: "?xl_lora_a: [0-9a-f]{12}, xl_lora_b: [0-9a-f]{12}/);
  const back = await gen({ prompt: 'a cat' });
  assert.ok((await maxDiff(back.images[0]!, a.images[0]!)) <= 1, 'dropping the tags restores the base weights');
});

test('a <lora:a:0.8> <lora:b:0.4> stack mixing PEFT and kohya files on SDXL gives the image of the same LoRAs in the other format', async () => {
  const plain = await gen({ prompt: 'a cat' });
  const mixed = await gen({ prompt: 'a cat <lora:xl_peft_lora_a:0.8> <lora:xl_lora_b:0.4>' });
  const other = await gen({ prompt: 'a cat <lora:xl_lora_a:0.8> <lora:xl_peft_lora_b:0.4>' });
  assert.ok((await maxDiff(mixed.images[0]!, plain.images[0]!)) > 8, 'the stack changes the image');
  assert.ok((await maxDiff(mixed.images[0]!, other.images[0]!)) <= 1, 'PEFT and kohya forms of a LoRA merge the same');
  assert.match(mixed.info.infotexts[0], /Lora hashes: "?xl_peft_lora_a: [0-9a-f]{12}, xl_lora_b: [0-9a-f]{12}/);
});

test('A1111 SDXL options are accepted', async () => {
  const r = await t.post('/sdapi/v1/options', { sdxl_crop_top: 0, sdxl_crop_left: 0 });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const opts = (await t.get('/sdapi/v1/options')).body;
  assert.equal(opts.sdxl_clip_l_skip, false);
  const skip = await gen({ prompt: 'a cat', override_settings: { sdxl_clip_l_skip: true, CLIP_stop_at_last_layers: 1 } });
  const plain = await gen({ prompt: 'a cat' });
  assert.ok((await maxDiff(skip.images[0]!, plain.images[0]!)) > 0, 'sdxl_clip_l_skip with clip skip 1 reads CLIP-L at its last layer');
});

test('refiner_checkpoint runs the SDXL refiner for the last steps, named in the infotext as A1111 does; unknown names fail as in A1111', async () => {
  const plain = await gen({ prompt: 'a cat' });
  const refined = await gen({ prompt: 'a cat', refiner_checkpoint: 'xl-refiner', refiner_switch_at: 0.5 });
  assert.match(refined.info.infotexts[0], /Refiner: xl-refiner \[[0-9a-f]{10}\], Refiner switch at: 0\.5/);
  assert.ok((await maxDiff(refined.images[0]!, plain.images[0]!)) > 0, 'the refiner changes the image');
  assert.equal((await gen({ prompt: 'a cat' })).images[0], plain.images[0], 'the next request without a refiner is the base alone again');
  // The loaded checkpoint as its own refiner never switches (A1111), and a switch point never reached names nothing.
  for (const r of [{ refiner_checkpoint: 'sdxl-tiny', refiner_switch_at: 0.5 }, { refiner_checkpoint: 'xl-refiner', refiner_switch_at: 1 }, { refiner_checkpoint: 'None' }]) {
    const same = await gen({ prompt: 'a cat', ...r });
    assert.doesNotMatch(same.info.infotexts[0], /Refiner/);
    assert.equal(same.images[0], plain.images[0], JSON.stringify(r));
  }
  const lora = await gen({ prompt: 'a cat <lora:xl_lora_a:1>', refiner_checkpoint: 'xl-refiner', refiner_switch_at: 0.5 });
  assert.match(JSON.stringify(lora.info), /LoRAs apply to the base model only/);
  const unknown = await t.post('/sdapi/v1/txt2img', { ...base, prompt: 'a cat', refiner_checkpoint: 'no-such-model', refiner_switch_at: 0.8 });
  assert.equal(unknown.status, 500);
  assert.equal(unknown.body.error, 'Exception');
  assert.equal(unknown.body.errors, 'Could not find checkpoint with name no-such-model');
});

test('/sdapi/v1/loras lists SDXL LoRAs with their metadata; an SD 1.x LoRA is refused naming both families', async () => {
  const list = (await t.get('/sdapi/v1/loras')).body as { name: string; metadata: Record<string, unknown> }[];
  const a = list.find((l) => l.name === 'xl_lora_a');
  assert.ok(a, JSON.stringify(list.map((l) => l.name)));
  assert.equal(a.metadata['ss_base_model_version'], 'sdxl_base_v1-0');
  const r = await t.post('/sdapi/v1/txt2img', { ...base, prompt: 'a cat <lora:sd1_a:1>' });
  assert.notEqual(r.status, 200);
  assert.match(JSON.stringify(r.body), /made for SD 1\.x, but the loaded checkpoint is SDXL/);
});
