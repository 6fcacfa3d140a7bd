import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir, repoRoot } from './support/paths.ts';
import { SafetensorsFile } from '../engine/safetensors/index.ts';
import { LoraMerger } from '../engine/lora/merge.ts';
import { loadLora } from '../engine/lora/load.ts';
import { parseLoraSpec } from '../cli/commands/merge.ts';
import { bakeCheckpoint } from '../engine/lora/bake.ts';
import { convertLora } from '../engine/lora/convert.ts';
import type { WeightMap } from '../engine/lora/types.ts';

const bin = join(repoRoot, 'bin/lora-scripts.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });
const sd = join(fixturesDir, 'sd-tiny');
const ckpt = join(sd, 'sd-tiny.safetensors');
const kohyaA = join(sd, 'lora-kohya/lora_a.safetensors');
const kohyaB = join(sd, 'lora-kohya/lora_b.safetensors');

/** Modules in a LoRA file, counted from its raw tensor names (down / lora_A tensors). */
async function moduleCount(file: string): Promise<number> {
  const f = await SafetensorsFile.open(file);
  const n = f.names().filter((k) => k.endsWith('.lora_down.weight') || k.endsWith('.lora_A.weight')).length;
  await f.close();
  return n;
}

test('merge spec parsing takes multipliers from the right (Windows paths keep their drive colon)', () => {
  assert.deepEqual(parseLoraSpec('a.safetensors'), { path: 'a.safetensors', te: 1, unet: 1 });
  assert.deepEqual(parseLoraSpec('a.safetensors:0.8'), { path: 'a.safetensors', te: 0.8, unet: 0.8 });
  assert.deepEqual(parseLoraSpec('C:\\loras\\a.safetensors:1:-0.5'), { path: 'C:\\loras\\a.safetensors', te: 1, unet: -0.5 });
  assert.deepEqual(parseLoraSpec('C:\\a'), { path: 'C:\\a', te: 1, unet: 1 });
});

test('lora-scripts merge bakes A×0.8 + B×0.5 into a checkpoint equal to the in-memory merge; untouched tensors byte-identical', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-cli-'));
  try {
    const out = join(dir, 'merged.safetensors');
    const r = run('merge', ckpt, '-o', out, '--lora', `${kohyaA}:0.8`, `${join(sd, 'lora-diffusers/lora_b')}:0.5`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`${await moduleCount(kohyaA)} modules applied`));
    assert.match(r.stdout, new RegExp(`${await moduleCount(join(sd, 'lora-diffusers/lora_b/pytorch_lora_weights.safetensors'))} modules applied`));

    const src = await SafetensorsFile.open(ckpt);
    const dst = await SafetensorsFile.open(out);
    const w: WeightMap = new Map();
    for (const [n, i] of src.tensors) w.set(n, { shape: [...i.shape], data: await src.readFloat32(n) });
    const m = await new LoraMerger(w, { log: () => {} }).apply([
      { path: kohyaA, te: 0.8, unet: 0.8 },
      { path: join(sd, 'lora-diffusers/lora_b'), te: 0.5, unet: 0.5 },
    ]);
    const touched = new Set(m.changedKeys);
    assert.deepEqual(dst.names().sort(), src.names().sort());
    for (const n of src.names()) {
      assert.equal(dst.info(n).dtype, src.info(n).dtype);
      if (touched.has(n)) assert.deepEqual(await dst.readFloat32(n), w.get(n)!.data, n);
      else assert.ok((await dst.readBytes(n)).equals(await src.readBytes(n)), n);
    }
    const prov = JSON.parse(dst.metadata.lora_scripts_merged_loras!);
    assert.deepEqual(prov.map((p: { te: number; unet: number }) => [p.te, p.unet]), [[0.8, 0.8], [0.5, 0.5]]);
    await src.close();
    await dst.close();

    // Spawning the CLI costs seconds on a loaded machine; the remaining options go through the same engine call.
    const f16 = join(dir, 'merged16.safetensors');
    await bakeCheckpoint({ checkpoint: ckpt, output: f16, dtype: 'F16', stack: [{ path: kohyaA, te: 1, unet: 1 }] });
    const h = await SafetensorsFile.open(f16);
    assert.ok([...h.tensors.values()].every((t) => t.dtype === 'F16'));
    await h.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('merge resolves names in --lora-dir; errors are one line with exit code 2', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-cli-'));
  try {
    await copyFile(kohyaB, join(dir, 'bee.safetensors'));
    const out = join(dir, 'm.safetensors');
    const ok = run('merge', ckpt, '-o', out, '--lora-dir', dir, '--lora', 'lora_b:0.5');
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`lora_b: ${await moduleCount(kohyaB)} modules applied`));
    const missing = run('merge', ckpt, '-o', out, '--lora-dir', dir, '--lora', 'lora_c');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /LoRA 'lora_c' not found.*closest names: .*lora_b/);
    await assert.rejects(bakeCheckpoint({ checkpoint: ckpt, output: ckpt, stack: [{ path: kohyaA, te: 1, unet: 1 }] }), /is the input checkpoint/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('lora-scripts convert: kohya → diffusers folder → kohya keeps every value', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-cli-'));
  try {
    const r1 = run('convert', kohyaA, join(dir, 'peft'));
    assert.equal(r1.status, 0, r1.stderr);
    assert.match(r1.stdout, new RegExp(`kohya -> peft: ${await moduleCount(kohyaA)} modules`));
    await convertLora({ input: join(dir, 'peft'), output: join(dir, 'back.safetensors'), to: 'kohya' });
    const a = await loadLora(kohyaA), b = await loadLora(join(dir, 'back.safetensors'));
    assert.equal(b.format, 'kohya');
    assert.deepEqual(
      b.modules.map((m) => [m.name, m.scale, m.tensors]).sort(),
      a.modules.map((m) => [m.name, m.scale, m.tensors]).sort(),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('baking into the diffusers folder gives the same LDM checkpoint, byte for byte, as baking into the single file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'lora-cli-'));
  try {
    const stack = [{ path: kohyaA, te: 1, unet: 0.5 }];
    await bakeCheckpoint({ checkpoint: join(sd, 'diffusers'), output: join(dir, 'a.safetensors'), stack });
    await bakeCheckpoint({ checkpoint: ckpt, output: join(dir, 'b.safetensors'), stack });
    const a = await SafetensorsFile.open(join(dir, 'a.safetensors')), b = await SafetensorsFile.open(join(dir, 'b.safetensors'));
    assert.deepEqual(a.names().sort(), b.names().sort());
    for (const k of b.names()) {
      assert.deepEqual(a.info(k).shape, b.info(k).shape, k);
      assert.ok((await a.readBytes(k)).equals(await b.readBytes(k)), k);
    }
    await a.close();
    await b.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
