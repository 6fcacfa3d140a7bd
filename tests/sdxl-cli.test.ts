// The SDXL "done when" through the command line, as a user runs it on the sdxl-tiny fixture: `lora-scripts generate`
// with the SGM single file and kohya SDXL LoRAs (a stack changes the image, weight 0 is the base exactly, an SD 1.x
// LoRA is refused naming both families), with `--refiner` (A1111's refiner and infotext), and `lora-scripts train`
// with an SDXL base_model through the YAML, both text encoders trained, whose LoRA generates back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { writeTinyRefiner } from './support/sdxl-refiner.ts';
import { writePatternDataset, tinyConfigYaml } from './support/train-fixture.ts';
import { parseInfotext, readPngText } from '../engine/image/png-info.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';

const xl = join(fixturesDir, 'sdxl-tiny');
const ckpt = join(xl, 'sdxl-tiny.safetensors');
const tokenizer = join(xl, 'diffusers', 'tokenizer');
const bin = join(repoRoot, 'bin/lora-scripts.js');
let dir: string;
let refiner: string;

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    // In the test's own folder: generate keeps its hash cache (cache.json) in the working folder.
    const p = spawn(process.execPath, [bin, ...args], { cwd: dir, env: { ...process.env, OMP_NUM_THREADS: '1' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** One 64² SDXL image (Euler, 4 steps, seed 11); returns the PNG's path, its infotext entries and its stderr. */
async function generate(out: string, prompt: string, extra: string[] = []): Promise<{ file: string; info: Record<string, unknown>; stderr: string }> {
  const r = await cli(['generate', '--ckpt', ckpt, '--tokenizer', tokenizer, '-p', prompt, '-n', 'blurry', '-W', '64', '-H', '64', '--steps', '4',
    '--sampler', 'Euler', '--cfg-scale', '5', '--seed', '11', '--lora-dir', join(dir, 'Lora'), '--out-dir', join(dir, out), '--threads', '1', ...extra]);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stderr}`);
  const file = r.stdout.trim().split('\n').pop()!;
  return { file, info: parseInfotext(readPngText(await readFile(file)).parameters!), stderr: r.stderr };
}

async function maxDiff(a: string, b: string): Promise<number> {
  const [pa, pb] = [await sharp(a).raw().toBuffer(), await sharp(b).raw().toBuffer()];
  assert.equal(pa.length, pb.length);
  let m = 0;
  for (let i = 0; i < pa.length; i++) m = Math.max(m, Math.abs(pa[i]! - pb[i]!));
  return m;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sdxl-cli-'));
  await mkdir(join(dir, 'Lora'), { recursive: true });
  for (const n of ['lora_a', 'lora_b']) await copyFile(join(xl, 'lora-kohya', `${n}.safetensors`), join(dir, 'Lora', `xl_${n}.safetensors`));
  await copyFile(join(fixturesDir, 'sd-tiny', 'lora-kohya', 'lora_a.safetensors'), join(dir, 'Lora', 'sd1_a.safetensors'));
  refiner = await writeTinyRefiner(dir, 'tiny-refiner');
});
after(() => rm(dir, { recursive: true, force: true }));

let base: string;

test('generate with an SDXL single file and kohya SDXL LoRAs: a stack changes the image, weight 0 is the base exactly, an SD 1.x LoRA is refused', async () => {
  const plain = await generate('plain', 'a cat');
  base = plain.file;
  assert.deepEqual([plain.info['Size-1'], plain.info['Size-2']], ['64', '64']);
  assert.equal(plain.info['Model'], 'sdxl-tiny');
  const one = await generate('one', 'a cat <lora:xl_lora_a:0.8>');
  assert.ok((await maxDiff(one.file, base)) > 8, 'the kohya SDXL LoRA changes the image');
  const stack = await generate('stack', 'a cat <lora:xl_lora_a:0.8> <lora:xl_lora_b:0.4>');
  assert.ok((await maxDiff(stack.file, one.file)) > 0, 'the second LoRA stacks on the first');
  assert.match(String(stack.info['Lora hashes']), /xl_lora_a: [0-9a-f]{12}, xl_lora_b: [0-9a-f]{12}/);
  const zero = await generate('zero', 'a cat <lora:xl_lora_a:0>');
  assert.equal(await maxDiff(zero.file, base), 0, 'weight 0 is the base model exactly');
  const wrong = await cli(['generate', '--ckpt', ckpt, '--tokenizer', tokenizer, '-p', 'a cat <lora:sd1_a:1>', '-W', '64', '-H', '64', '--steps', '1',
    '--lora-dir', join(dir, 'Lora'), '--out-dir', join(dir, 'wrong'), '--threads', '1']);
  assert.notEqual(wrong.code, 0);
  assert.match(wrong.stderr, /made for SD 1\.x, but the loaded checkpoint is SDXL/);
});

test('generate --refiner: the refiner finishes the run from --refiner-switch-at, named in the infotext as A1111 does', async () => {
  assert.ok(base, 'runs after the first test');
  const refined = await generate('refined', 'a cat', ['--refiner', refiner, '--refiner-switch-at', '0.5']);
  assert.match(String(refined.info['Refiner']), /^tiny-refiner \[[0-9a-f]{10}\]$/);
  assert.equal(refined.info['Refiner switch at'], '0.5');
  assert.ok((await maxDiff(refined.file, base)) > 0, 'the refiner changes the image');
  // A switch point the run never reaches, and the base as its own refiner, leave the base's image and name nothing.
  for (const [out, args] of [['never', ['--refiner', refiner, '--refiner-switch-at', '1']], ['self', ['--refiner', ckpt]]] as const) {
    const same = await generate(out, 'a cat', [...args]);
    assert.equal(same.info['Refiner'], undefined, out);
    assert.equal(await maxDiff(same.file, base), 0, out);
  }
  const bad = await cli(['generate', '--ckpt', ckpt, '--tokenizer', tokenizer, '-p', 'x', '--refiner', refiner, '--refiner-switch-at', '1.5', '--out-dir', join(dir, 'bad')]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--refiner-switch-at: expected a number from 0 to 1, got '1\.5'/);
});

test('train with an SDXL base_model through the YAML, both text encoders trained: a kohya SDXL LoRA with lora_te1_/lora_te2_ modules that generates back', async () => {
  assert.ok(base, 'runs after the first test');
  await writePatternDataset(join(dir, 'data'), 4);
  const cfg = join(dir, 'cfg.yaml');
  await writeFile(cfg, tinyConfigYaml(join(dir, 'data'), join(dir, 'out'), { base_model: ckpt, tokenizer, train_text_encoder: true, learning_rate: 1e-2, text_encoder_lr: 1e-2, epochs: 2, output_name: 'xl_trained' }));
  const r = await cli(['train', '--config', cfg, '--no-progress']);
  assert.equal(r.code, 0, `exit ${r.code}\n${r.stdout}\n${r.stderr}`);
  const file = join(dir, 'out', 'xl_trained.safetensors');
  const f = await SafetensorsFile.open(file);
  let names: string[];
  try {
    assert.equal(f.metadata['ss_base_model_version'], 'sdxl_base_v1-0');
    names = f.names();
  } finally {
    await f.close();
  }
  for (const prefix of ['lora_unet_', 'lora_te1_', 'lora_te2_']) assert.ok(names.some((n) => n.startsWith(prefix)), `${prefix} modules in ${file}`);
  await copyFile(file, join(dir, 'Lora', 'xl_trained.safetensors'));
  const withIt = await generate('trained', 'a cat <lora:xl_trained:1>');
  assert.ok((await maxDiff(withIt.file, base)) > 0, 'the trained LoRA changes the image');
  const zero = await generate('trained0', 'a cat <lora:xl_trained:0>');
  assert.equal(await maxDiff(zero.file, base), 0, 'weight 0 is the base model exactly');
});
