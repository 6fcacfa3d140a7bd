import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { writeSmallVocabCheckpoint } from './support/small-vocab.ts';
import { readPngText, parseInfotext } from '../engine/image/png-info.ts';
import { startTestServer } from './server-fixture-backend.ts';

const sd = join(fixturesDir, 'sd-tiny');
const bin = join(repoRoot, 'bin/lora-scripts.js');

async function setup() {
  const dir = await mkdtemp(join(tmpdir(), 'gen-'));
  await mkdir(join(dir, 'Lora/styles'), { recursive: true });
  await copyFile(join(sd, 'lora-kohya/lora_a.safetensors'), join(dir, 'Lora/styles/style_a.safetensors'));
  await copyFile(join(sd, 'lora-kohya/lora_b.safetensors'), join(dir, 'Lora/style_b.safetensors'));
  return dir;
}

function generate(dir: string, out: string, prompt: string, extra: string[] = []) {
  return spawnSync(
    process.execPath,
    [bin, 'generate', '--ckpt', join(sd, 'sd-tiny.safetensors'), '--tokenizer', join(sd, 'diffusers/tokenizer'), '-p', prompt, '-n', 'blurry',
      '-W', '64', '-H', '64', '--steps', '3', '--seed', '1234', '--lora-dir', join(dir, 'Lora'), '--out-dir', join(dir, out), '--threads', '1', ...extra],
    // In the temporary folder, which stands for the webui root: cache.json and models/ are looked for there.
    { encoding: 'utf8', cwd: dir },
  );
}

async function pixels(file: string) {
  return sharp(file).raw().toBuffer();
}

test('generate writes A1111-style PNGs with infotext; seeds repeat; LoRA tags stack and change the image', async () => {
  const dir = await setup();
  const a = generate(dir, 'a', 'a cube');
  assert.equal(a.status, 0, a.stderr);
  const fileA = a.stdout.trim().split('\n').pop()!;
  const meta = await sharp(fileA).metadata();
  assert.equal(meta.width, 64);
  assert.equal(meta.height, 64);
  const info = parseInfotext(readPngText(await readFile(fileA)).parameters!);
  assert.equal(info['Prompt'], 'a cube');
  assert.equal(info['Negative prompt'], 'blurry');
  assert.equal(String(info['Seed']), '1234');
  assert.equal(String(info['Steps']), '3');
  assert.equal(info['Sampler'], 'Euler a');
  assert.equal(info['Version'], (await import('../server/app.ts')).VERSION, 'the same Version as the server writes');

  const again = generate(dir, 'b', 'a cube');
  assert.deepEqual(await pixels(again.stdout.trim().split('\n').pop()!), await pixels(fileA));

  const lora = generate(dir, 'c', 'a cube <lora:style_a:0.8> <lora:style_b:0.4>');
  assert.equal(lora.status, 0, lora.stderr);
  const fileL = lora.stdout.trim().split('\n').pop()!;
  assert.notDeepEqual(await pixels(fileL), await pixels(fileA));
  const infoL = parseInfotext(readPngText(await readFile(fileL)).parameters!);
  assert.match(String(infoL['Prompt']), /<lora:style_a:0.8>/);
});

test('an unknown LoRA name fails in one line listing the closest names', async () => {
  const dir = await setup();
  const r = generate(dir, 'x', 'a cube <lora:style_c:1>');
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /style_c/);
  assert.match(r.stderr, /style_a|style_b/);
});

test('a custom single file whose text encoder is smaller than the bundled CLIP vocabulary asks for its own tokenizer', async () => {
  const dir = await setup();
  const ckpt = join(dir, 'small-vocab.safetensors');
  await writeSmallVocabCheckpoint(ckpt);
  const r = spawnSync(process.execPath, [bin, 'generate', '--ckpt', ckpt, '-p', 'x', '--out-dir', join(dir, 'o')], { encoding: 'utf8', cwd: dir });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /token embeddings/);
  assert.match(r.stderr, /vocab\.json/);
});

test('--low-memory (every weight fed) gives the same image as baked conv weights, to one 8-bit step', async () => {
  const dir = await setup();
  const baked = generate(dir, 'baked', 'a cube <lora:style_a:0.8>');
  const fed = generate(dir, 'fed', 'a cube <lora:style_a:0.8>', ['--low-memory']);
  assert.equal(fed.status, 0, fed.stderr);
  const a = await pixels(baked.stdout.trim().split('\n').pop()!);
  const b = await pixels(fed.stdout.trim().split('\n').pop()!);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  assert.ok(worst <= 1, `baked and fed differ by ${worst}`);
});

test("the checkpoint is hashed once: a second run reads cache.json (the server's file, key and format); a changed file is hashed again", async () => {
  const dir = await setup();
  const ckpt = join(dir, 'models/Stable-diffusion/sd-tiny.safetensors');
  await mkdir(join(dir, 'models/Stable-diffusion'), { recursive: true });
  await copyFile(join(sd, 'sd-tiny.safetensors'), ckpt);
  const real = createHash('sha256').update(await readFile(ckpt)).digest('hex');
  const run = (out: string) => {
    const r = spawnSync(process.execPath, [bin, 'generate', '--ckpt', ckpt, '--tokenizer', join(sd, 'diffusers/tokenizer'), '-p', 'a cube', '-W', '64', '-H', '64', '--steps', '1', '--seed', '1', '--out-dir', join(dir, out), '--threads', '1'], { encoding: 'utf8', cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    return readFile(r.stdout.trim().split('\n').pop()!).then((png) => parseInfotext(readPngText(png).parameters!));
  };
  const cachePath = join(dir, 'cache.json');
  assert.equal((await run('1'))['Model hash'], real.slice(0, 10));
  const cache = JSON.parse(await readFile(cachePath, 'utf8'));
  const entry = cache.hashes['checkpoint/sd-tiny.safetensors'];
  assert.equal(entry?.sha256, real, 'kept under the name the server lists the checkpoint by');

  // The server over the same folder lists the checkpoint's hash from this entry before loading or hashing anything.
  const server = await startTestServer({ dataDir: dir });
  try {
    const models = (await server.get('/sdapi/v1/sd-models')).body;
    assert.equal(models[0]?.sha256, real);
  } finally {
    await server.close();
  }

  // A second run takes the hash from the cache without reading the file: a planted value shows through.
  entry.sha256 = 'f'.repeat(64);
  await writeFile(cachePath, JSON.stringify(cache));
  assert.equal((await run('2'))['Model hash'], 'ffffffffff');

  // A changed file (new mtime) is hashed again and the entry renewed.
  const later = new Date(Date.now() + 10_000);
  await utimes(ckpt, later, later);
  assert.equal((await run('3'))['Model hash'], real.slice(0, 10));
  assert.equal(JSON.parse(await readFile(cachePath, 'utf8')).hashes['checkpoint/sd-tiny.safetensors'].sha256, real);
});

test('--vae names a file or a VAE of --vae-dir; an unknown one fails naming the flag and the VAEs there', async () => {
  const dir = await setup();
  await mkdir(join(dir, 'models/VAE'), { recursive: true });
  await writeFile(join(dir, 'models/VAE/known.vae.safetensors'), '');
  const unknown = generate(dir, 'u', 'a cube', ['--vae', 'missing.safetensors']);
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /--vae: 'missing.safetensors' is neither a file nor a VAE in .*models\/VAE \(there: known.vae.safetensors\)/);
});
