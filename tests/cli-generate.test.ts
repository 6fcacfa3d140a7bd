import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { writeSmallVocabCheckpoint } from './support/small-vocab.ts';
import { readPngText, parseInfotext } from '../engine/image/png-info.ts';

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
