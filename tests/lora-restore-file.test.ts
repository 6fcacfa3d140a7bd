// The LoRA merger of a loaded generator keeps no pristine copies: the base weights come back from the
// checkpoint file, bit for bit, for a float32 file and for a float16 one (widened again on every read).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturesDir } from './support/paths.ts';
import { sdTinySingleFileOptions } from './support/sd-tiny.ts';
import { SdGenerator } from '../engine/generate/generator.ts';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../engine/safetensors/index.ts';
import { f32ToF16 } from '../engine/safetensors/float.ts';
import { UserError } from '../engine/util/errors.ts';

const dir = join(fixturesDir, 'sd-tiny');
const loraA = join(dir, 'lora-kohya', 'lora_a.safetensors');
const loraB = join(dir, 'lora-kohya', 'lora_b.safetensors');

/** sd-tiny with every float tensor stored as float16, beside its sidecar yaml. */
async function halfCopy(to: string): Promise<void> {
  const src = await SafetensorsFile.open(join(dir, 'sd-tiny.safetensors'));
  try {
    const out = new Map<string, TensorToWrite>();
    for (const name of src.names()) {
      const t = await src.read(name);
      out.set(name, t.dtype === 'F32' ? { dtype: 'F16', shape: t.shape, data: f32ToF16(t.data as Float32Array) } : { dtype: t.dtype, shape: t.shape, data: t.data });
    }
    await writeSafetensors(to, out, src.metadata);
  } finally {
    await src.close();
  }
  await copyFile(join(dir, 'sd-tiny.yaml'), to.replace(/\.safetensors$/, '.yaml'));
}

function snapshot(gen: SdGenerator): Map<string, Float32Array> {
  return new Map([...gen.model.weights].map(([k, w]) => [k, w.data.slice()]));
}

function sameBits(gen: SdGenerator, base: Map<string, Float32Array>): string[] {
  const differ: string[] = [];
  for (const [k, w] of gen.model.weights) {
    const a = new Uint32Array(w.data.buffer, w.data.byteOffset, w.data.length);
    const b = new Uint32Array(base.get(k)!.buffer);
    if (a.length !== b.length || a.some((v, i) => v !== b[i])) differ.push(k);
  }
  return differ;
}

test('switching LoRA stacks and back restores the base weights from the file, bit-exact, with no pristine copies kept', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'lora-restore-'));
  try {
    const half = join(tmp, 'sd-tiny-f16.safetensors');
    await halfCopy(half);
    const opts = { threads: 1, tokenizer: join(dir, 'diffusers', 'tokenizer'), ...(await sdTinySingleFileOptions()) };
    const req = { prompt: 'a cat', negativePrompt: '', seeds: [7], width: 64, height: 64, steps: 2, cfgScale: 5, sampler: 'Euler' };
    for (const [label, path, lowMemory] of [['float32 file', join(dir, 'sd-tiny.safetensors'), false], ['float16 file', half, true]] as const) {
      const gen = await SdGenerator.load(path, { ...opts, lowMemory });
      const base = snapshot(gen);
      const before = await gen.generate(req);
      const a = await gen.generate({ ...req, loras: [{ path: loraA, te: 0.8, unet: 0.8 }] });
      assert.ok(a.lora!.changedKeys.length > 0, `${label}: the LoRA changed no weight`);
      assert.notDeepEqual(a.images, before.images, `${label}: the LoRA changed nothing in the image`);
      // The active stack lives in the weights alone; the cache takes it when another stack replaces it.
      assert.equal(gen.merger.cache.bytes, 0, `${label}: the active stack was copied into the cache`);
      // A stack over the first: the weights only the first touched come back from the file, the rest are re-merged.
      await gen.generate({ ...req, loras: [{ path: loraB, te: 1, unet: 0.5 }] });
      assert.equal(gen.merger.cache.pristineBytes, 0, `${label}: pristine copies kept in memory`);
      assert.equal(gen.merger.cache.entries, lowMemory ? 0 : 1, `${label}: the replaced stack's cache entry`);
      if (!lowMemory) {
        const again = await gen.generate({ ...req, loras: [{ path: loraA, te: 0.8, unet: 0.8 }] });
        assert.equal(again.lora?.fromCache, true, `${label}: going back to the first stack did not hit the cache`);
        assert.deepEqual(again.images, a.images, `${label}: the cached stack gives another image`);
      }
      const after = await gen.generate(req);
      assert.deepEqual(sameBits(gen, base), [], `${label}: weights not restored bit-exactly`);
      assert.deepEqual(after.images, before.images, `${label}: base image differs after the round trip`);
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test('a checkpoint rewritten after loading is refused at restore, by name, instead of restoring another model', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'lora-restore-'));
  try {
    const path = join(tmp, 'model.safetensors');
    await copyFile(join(dir, 'sd-tiny.safetensors'), path);
    await copyFile(join(dir, 'sd-tiny.yaml'), join(tmp, 'model.yaml'));
    const gen = await SdGenerator.load(path, { threads: 1, tokenizer: join(dir, 'diffusers', 'tokenizer'), ...(await sdTinySingleFileOptions()) });
    await gen.merger.apply([{ path: loraA, te: 1, unet: 1 }]);
    const later = new Date(Date.now() + 60_000);
    await utimes(path, later, later);
    await assert.rejects(gen.restoreBase(), (e: unknown) => e instanceof UserError && e.message.includes(path) && /changed on disk/.test(e.message));
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
