/**
 * One generation service: the same prompt and settings give the same PNG (pixels and infotext, byte for byte)
 * from `lora-scripts generate`, from the server's txt2img with the engine backend, and from a training sample
 * (TrainingSampler over a fresh network, whose zero-initialised up weights leave the model as it is).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { linkFixtureModels, startTestServer, type TestServer } from './server-fixture-backend.ts';
import { writeShiftedVae } from './support/separate-vae.ts';
import { writeSafetensors } from '../engine/safetensors/index.ts';
import { parseInfotext } from '../engine/image/png-info.ts';
import { readPngText } from '../engine/image/png-info.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { TrainingSampler } from '../engine/train/samples.ts';
import { LoraNetwork } from '../engine/train/lora-network.ts';
import type { SamplePrompt } from '../engine/train/config-fields.ts';
import { VERSION } from '../engine/version.ts';
import { toRgbBytes } from '../engine/sd/pipeline.ts';
import sharp from 'sharp';

const sd = join(fixturesDir, 'sd-tiny');
const ckpt = join(sd, 'sd-tiny.safetensors');
const tokenizer = join(sd, 'diffusers/tokenizer');
const bin = join(repoRoot, 'bin/lora-scripts.js');

interface Manifest {
  config: { steps: number; cfg_scale: number; sidecar_yaml: { config: { model: { params: { first_stage_config: { params: { ddconfig: { resolution: number } } } } } } } };
}
const manifest = JSON.parse(await readFile(join(sd, 'manifest.json'), 'utf8')) as Manifest;
// The fixture's own sizes: the VAE's training resolution, the steps and CFG its goldens use.
const size = manifest.config.sidecar_yaml.config.model.params.first_stage_config.params.ddconfig.resolution;
const settings = { prompt: 'a red cube on a table', negative: 'blurry', seed: 4321, steps: manifest.config.steps, cfg: manifest.config.cfg_scale, sampler: 'DDIM' };

const tmp: string[] = [];
let server: TestServer | undefined;
after(async () => {
  await server?.close();
  for (const d of tmp) await rm(d, { recursive: true, force: true });
});

async function cliPng(prompt: string, loraDir: string): Promise<Buffer> {
  const out = await mkdtemp(join(tmpdir(), 'gensvc-cli-'));
  tmp.push(out);
  const r = spawnSync(
    process.execPath,
    [bin, 'generate', '--ckpt', ckpt, '--tokenizer', tokenizer, '-p', prompt, '-n', settings.negative, '-W', String(size), '-H', String(size),
      '--steps', String(settings.steps), '--cfg-scale', String(settings.cfg), '--sampler', settings.sampler, '--seed', String(settings.seed),
      '--lora-dir', loraDir, '--out-dir', out],
    { encoding: 'utf8', cwd: out },
  );
  assert.equal(r.status, 0, r.stderr);
  const file = r.stdout.trim().split('\n').pop();
  assert.ok(file, `generate printed no file: ${r.stdout}`);
  return readFile(file);
}

async function serverPng(prompt: string): Promise<Buffer> {
  if (!server) {
    server = await startTestServer({ withModel: true });
    await server.post('/sdapi/v1/reload-checkpoint');
  }
  const r = await server.post('/sdapi/v1/txt2img', {
    prompt, negative_prompt: settings.negative, seed: settings.seed, width: size, height: size, steps: settings.steps, cfg_scale: settings.cfg, sampler_name: settings.sampler,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return Buffer.from(r.body.images[0], 'base64');
}

const infotextOf = (png: Buffer): string | undefined => readPngText(png).parameters;

/** Largest per-channel difference between two images' pixels, for the message when bytes differ. */
async function maxPixelDiff(a: Buffer, b: Buffer): Promise<number> {
  const [pa, pb] = await Promise.all([sharp(a).raw().toBuffer(), sharp(b).raw().toBuffer()]);
  if (pa.length !== pb.length) return Infinity;
  let m = 0;
  for (let i = 0; i < pa.length; i++) m = Math.max(m, Math.abs((pa[i] ?? 0) - (pb[i] ?? 0)));
  return m;
}

test('CLI, server and a training sample make the same PNG and infotext for the same prompt and settings', async () => {
  const cli = await cliPng(settings.prompt, join(sd, 'lora-kohya'));
  const text = infotextOf(cli);
  assert.ok(text, 'the CLI PNG carries an infotext');
  assert.match(text, new RegExp(`^${settings.prompt}\\nNegative prompt: ${settings.negative}\\nSteps: ${settings.steps}, Sampler: ${settings.sampler}, Schedule type: \\w+, CFG scale: ${settings.cfg.toFixed(1)}, Seed: ${settings.seed}, Size: ${size}x${size}, Model hash: [0-9a-f]{10}, Model: sd-tiny, Version: ${VERSION}$`));

  const viaServer = await serverPng(settings.prompt);
  assert.equal(infotextOf(viaServer), text);
  assert.ok(viaServer.equals(cli), 'server PNG bytes equal the CLI PNG bytes');

  const gen = await SdGenerator.load(ckpt, { tokenizer });
  const dir = await mkdtemp(join(tmpdir(), 'gensvc-sample-'));
  tmp.push(dir);
  const network = LoraNetwork.create(gen.model.weights, { rank: 2, alpha: 1, targets: 'attention', textEncoder: true, seed: 0 });
  const sampler = new TrainingSampler(gen.model, gen.tokenizer, network, dir, 'svc', () => {}, ckpt);
  const prompt: SamplePrompt = { prompt: settings.prompt, negative_prompt: settings.negative, steps: settings.steps, cfg_scale: settings.cfg, seed: settings.seed, width: null, height: null };
  const [sample] = await sampler.render([prompt], 1, { seed: 0, size });
  assert.ok(sample, 'one sample rendered');
  assert.equal(sample.infotext, text);
  assert.ok(Buffer.from(sample.png).equals(cli), 'training sample PNG bytes equal the CLI PNG bytes');
});

test('CLI and server resolve the same <lora:…> tags to the same files: same pixels, same Lora hashes', async () => {
  const prompt = `${settings.prompt} <lora:lora_a:0.8>`;
  const cli = await cliPng(prompt, join(sd, 'lora-kohya'));
  const text = infotextOf(cli);
  assert.match(text ?? '', /Lora hashes: "lora_a: [0-9a-f]{12}"/);
  const viaServer = await serverPng(prompt);
  assert.equal(infotextOf(viaServer), text);
  assert.ok(viaServer.equals(cli), `server PNG bytes equal the CLI PNG bytes (largest pixel difference ${await maxPixelDiff(viaServer, cli)})`);
  const plain = await cliPng(settings.prompt, join(sd, 'lora-kohya'));
  assert.ok(!plain.equals(cli), 'the LoRA changes the image');
});

test('hires fix: one plan; a latent upscaler resizes latents in the server as in the engine pipeline; firstphase_width/height set the first pass', async () => {
  const gen = await SdGenerator.load(ckpt, { tokenizer });
  const scale = 1.5;
  const target = Math.floor((size * scale) / 8) * 8;
  const hrSteps = Math.max(1, settings.steps - 1);
  const direct = await gen.generate({
    prompt: settings.prompt, negativePrompt: settings.negative, seeds: [settings.seed], width: size, height: size, steps: settings.steps, cfgScale: settings.cfg,
    sampler: settings.sampler, hires: { scale, upscaler: 'Latent (nearest)', steps: hrSteps, denoisingStrength: 0.6 },
  });
  assert.deepEqual([direct.width, direct.height], [target, target]);
  const [directRgb] = toRgbBytes(direct.images, 1, direct.width, direct.height);

  const body = { prompt: settings.prompt, negative_prompt: settings.negative, seed: settings.seed, steps: settings.steps, cfg_scale: settings.cfg, sampler_name: settings.sampler,
    enable_hr: true, hr_upscaler: 'Latent (nearest)', hr_second_pass_steps: hrSteps, denoising_strength: 0.6 };
  await serverPng(settings.prompt); // starts the server with the model loaded
  const r = await server!.post('/sdapi/v1/txt2img', { ...body, width: size, height: size, hr_scale: scale });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const info = JSON.parse(r.body.info);
  assert.ok(!info.notes.some((n: string) => /pixel space/.test(n)), info.notes.join('; '));
  assert.match(info.infotexts[0], new RegExp(`Size: ${size}x${size}, .*Denoising strength: 0\\.6, .*Hires upscale: ${scale}, Hires steps: ${hrSteps}, Hires upscaler: Latent \\(nearest\\)`));
  const { data, info: meta } = await sharp(Buffer.from(r.body.images[0], 'base64')).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([meta.width, meta.height], [target, target]);
  let worst = 0;
  for (let i = 0; i < data.length; i++) worst = Math.max(worst, Math.abs((data[i] ?? 0) - (directRgb?.[i] ?? 0)));
  assert.ok(directRgb && Buffer.from(directRgb).equals(data), `server hires pixels equal the engine pipeline hires pixels (largest difference ${worst})`);

  // A1111's legacy fields: the first pass at firstphase size, the request's width × height as the target.
  const fp = await server!.post('/sdapi/v1/txt2img', { ...body, width: target, height: target, firstphase_width: size, firstphase_height: size });
  assert.equal(fp.status, 200, JSON.stringify(fp.body));
  assert.match(JSON.parse(fp.body.info).infotexts[0], new RegExp(`Size: ${size}x${size}, .*Hires resize: ${target}x${target}`));
  const fpMeta = await sharp(Buffer.from(fp.body.images[0], 'base64')).metadata();
  assert.deepEqual([fpMeta.width, fpMeta.height], [target, target]);
});

test('with a separate VAE, an embedding and ENSD, the CLI and the server still make the same PNG and infotext', async () => {
  // One webui folder for both: the CLI runs in it, the server serves it.
  const root = await mkdtemp(join(tmpdir(), 'gensvc-parity-'));
  tmp.push(root);
  await linkFixtureModels(root);
  await writeShiftedVae(ckpt, join(root, 'models/VAE/shifted.vae.safetensors'));
  const gen = await SdGenerator.load(ckpt, { tokenizer });
  const width = gen.model.arch.textEncoder.width;
  await writeSafetensors(join(root, 'models/embeddings/shinystyle.safetensors'), {
    emb_params: { dtype: 'F32', shape: [2, width], data: Float32Array.from({ length: 2 * width }, (_, i) => Math.cos(i * 0.29)) },
  });
  const ensd = 31337;
  const prompt = `${settings.prompt}, shinystyle`;
  const sampler = 'Euler a';

  const r = spawnSync(
    process.execPath,
    [bin, 'generate', '--ckpt', 'models/Stable-diffusion/sd-tiny.safetensors', '-p', prompt, '-n', settings.negative, '-W', String(size), '-H', String(size),
      '--steps', String(settings.steps), '--cfg-scale', String(settings.cfg), '--sampler', sampler, '--seed', String(settings.seed),
      '--vae', 'shifted.vae.safetensors', '--ensd', String(ensd), '--out-dir', 'outputs/cli'],
    { encoding: 'utf8', cwd: root },
  );
  assert.equal(r.status, 0, r.stderr);
  const cli = await readFile(r.stdout.trim().split('\n').pop()!);
  const text = infotextOf(cli) ?? '';
  const info = parseInfotext(text);
  assert.equal(info['VAE'], 'shifted.vae.safetensors');
  assert.match(String(info['VAE hash']), /^[0-9a-f]{10}$/);
  assert.equal(String(info['ENSD']), String(ensd));
  assert.match(String(info['TI hashes']), /^shinystyle: [0-9a-f]{10}$/);

  const s = await startTestServer({ dataDir: root });
  try {
    const res = await s.post('/sdapi/v1/txt2img', {
      prompt, negative_prompt: settings.negative, seed: settings.seed, width: size, height: size, steps: settings.steps, cfg_scale: settings.cfg, sampler_name: sampler,
      override_settings: { sd_vae: 'shifted.vae.safetensors', eta_noise_seed_delta: ensd },
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const viaServer = Buffer.from(res.body.images[0], 'base64');
    assert.equal(infotextOf(viaServer), text);
    assert.ok(viaServer.equals(cli), `server PNG bytes equal the CLI PNG bytes (largest pixel difference ${await maxPixelDiff(viaServer, cli)})`);
    const out = JSON.parse(res.body.info);
    assert.deepEqual([out.sd_vae_name, out.sd_vae_hash], ['shifted.vae.safetensors', info['VAE hash']]);
  } finally {
    await s.close();
  }
});
