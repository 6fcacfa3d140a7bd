/**
 * ESRGAN-family upscaling against goldens computed by PyTorch + Pillow (tests/golden/esrgan/make_golden.py):
 * a tiny RRDBNet in BasicSR's layout (×4, and ×2 with pixel-unshuffle), whole images, A1111's tiling with
 * its overlap blending, A1111's Upscaler.upscale loop, and the built-in Lanczos/Nearest. The same weights
 * renamed into the two older ESRGAN layouts must give the same pixels.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../engine/image/decode-rgb.ts';
import { EsrganModel } from '../engine/upscale/esrgan.ts';
import { UpscalerLibrary } from '../engine/upscale/upscalers.ts';
import { postprocessUpscale } from '../engine/upscale/postprocess.ts';
import { SafetensorsFile, writeSafetensors } from '../engine/safetensors/index.ts';
import { repoRoot } from './support/paths.ts';

const dir = join(repoRoot, 'tests/golden/esrgan');
interface Case {
  file: string;
  width: number;
  height: number;
}
const manifest = JSON.parse(await readFile(join(dir, 'manifest.json'), 'utf8')) as { input: string; models: Record<string, string>; cases: Record<string, Case> };

async function input(): Promise<RgbImage> {
  const { data, info } = await sharp(join(dir, manifest.input)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

async function golden(name: string): Promise<RgbImage> {
  const c = manifest.cases[name];
  if (!c) throw new Error(`no golden case ${name}`);
  return { width: c.width, height: c.height, data: new Uint8Array(await readFile(join(dir, c.file))) };
}

/** Same size; every channel within `maxDiff` levels, and nearly all exact (float32 rounding may move a few by one). */
function assertClose(got: RgbImage, want: RgbImage, what: string, maxDiff = 1): void {
  assert.deepEqual([got.width, got.height], [want.width, want.height], `${what}: size`);
  let worst = 0;
  let off = 0;
  for (let i = 0; i < want.data.length; i++) {
    const d = Math.abs(got.data[i]! - want.data[i]!);
    worst = Math.max(worst, d);
    if (d) off++;
  }
  assert.ok(worst <= maxDiff, `${what}: a channel differs by ${worst} levels`);
  assert.ok(off <= want.data.length * 0.01, `${what}: ${off} of ${want.data.length} values differ`);
}

const modelPath = (k: string) => join(dir, manifest.models[k]!);

test('RRDBNet ×4 and ×2 (pixel-unshuffle, odd sizes reflect-padded) match PyTorch on a whole image', async () => {
  const img = await input();
  const x4 = await EsrganModel.load(modelPath('x4'));
  assert.deepEqual(x4.arch, { channels: 3, features: 8, growth: 4, blocks: 2, upsamples: 2, unshuffle: 1, scale: 4 });
  assertClose(await x4.upscalePatch(img), await golden('x4_whole'), 'x4');
  const x2 = await EsrganModel.load(modelPath('x2'));
  assert.equal(x2.arch.scale, 2);
  assert.equal(x2.arch.unshuffle, 2);
  assertClose(await x2.upscalePatch(img), await golden('x2_whole'), 'x2');
});

test("A1111's tiling: tiles with overlap blended, and a tile larger than the image (black padding)", async () => {
  const img = await input();
  const x4 = await EsrganModel.load(modelPath('x4'));
  assertClose(await x4.upscale(img, 8, 2), await golden('x4_tiles_8_2'), 'tiles 8/2');
  assertClose(await x4.upscale(img, 16, 4), await golden('x4_tile_16_4'), 'tile 16/4');
  // The tiles are not the whole image: seams differ, so the tiled golden is not the untiled one.
  const whole = await golden('x4_whole');
  const tiled = await golden('x4_tiles_8_2');
  assert.ok(tiled.data.some((v, i) => v !== whole.data[i]));
});

test('the original ESRGAN (model.N) and RRDB_trunk layouts load to the same network', async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'esrgan-layouts-'));
  try {
    const f = await SafetensorsFile.open(modelPath('x4'));
    const tensors = new Map<string, { name: string; data: Float32Array; shape: number[] }>();
    for (const n of f.names()) tensors.set(n, { name: n, data: await f.readFloat32(n), shape: [...f.info(n).shape] });
    await f.close();
    const rename = (map: (k: string) => string) => {
      const out = new Map<string, { dtype: 'F32'; shape: number[]; data: Float32Array }>();
      for (const [k, t] of tensors) out.set(map(k), { dtype: 'F32', shape: t.shape, data: t.data });
      return out;
    };
    const blocks = 2;
    const old = (k: string): string => {
      const [mod, part] = [k.slice(0, k.lastIndexOf('.')), k.slice(k.lastIndexOf('.') + 1)];
      const m = /^body\.(\d+)\.rdb(\d)\.conv(\d)$/.exec(mod);
      if (m) return `model.1.sub.${m[1]}.RDB${m[2]}.conv${m[3]}.0.${part}`;
      const table: Record<string, string> = { conv_first: 'model.0', conv_body: `model.1.sub.${blocks}`, conv_up1: 'model.3', conv_up2: 'model.6', conv_hr: 'model.8', conv_last: 'model.10' };
      return `${table[mod]}.${part}`;
    };
    const trunk = (k: string): string =>
      k
        .replace(/^body\.(\d+)\.rdb(\d)/, 'RRDB_trunk.$1.RDB$2')
        .replace(/^conv_body\./, 'trunk_conv.')
        .replace(/^conv_up(\d)\./, 'upconv$1.')
        .replace(/^conv_hr\./, 'HRconv.');
    await writeSafetensors(join(tmp, 'old.safetensors'), rename(old));
    await writeSafetensors(join(tmp, 'trunk.safetensors'), rename(trunk));
    const img = await input();
    const ref = await (await EsrganModel.load(modelPath('x4'))).upscalePatch(img);
    for (const name of ['old', 'trunk']) {
      const m = await EsrganModel.load(join(tmp, `${name}.safetensors`));
      assert.deepEqual(m.arch, { channels: 3, features: 8, growth: 4, blocks: 2, upsamples: 2, unshuffle: 1, scale: 4 }, name);
      assert.deepEqual((await m.upscalePatch(img)).data, ref.data, name);
    }
    // Weights of another network are refused with the file and what is missing.
    await writeSafetensors(join(tmp, 'vae.safetensors'), { 'decoder.conv_in.weight': { dtype: 'F32', shape: [1], data: new Float32Array(1) } });
    await assert.rejects(EsrganModel.load(join(tmp, 'vae.safetensors')), /vae\.safetensors: not ESRGAN\/RRDBNet weights/);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});

test("A1111's Upscaler.upscale: passes until the target, Lanczos onto it; Lanczos/Nearest built-ins; pickles refused", async () => {
  const tmp = await mkdtemp(join(tmpdir(), 'esrgan-lib-'));
  try {
    await mkdir(join(tmp, 'sub'));
    await copyFile(modelPath('x4'), join(tmp, 'rrdb-x4.safetensors'));
    await copyFile(modelPath('x2'), join(tmp, 'sub', 'rrdb-x2.safetensors'));
    // A pickle is listed (A1111 lists every model file) but never opened: its bytes here are not even a pickle.
    await writeFile(join(tmp, 'RealESRGAN_x4plus.pth'), 'not read');
    const lib = new UpscalerLibrary(tmp);
    const list = await lib.refresh();
    assert.deepEqual(
      list.map((u) => [u.name, u.scale]),
      [['None', 4], ['Lanczos', 4], ['Nearest', 4], ['RealESRGAN_x4plus', 4], ['rrdb-x4', 4], ['rrdb-x2', 2]],
    );
    const img = await input();
    const tiles = { tile: 0, overlap: 0 };
    assertClose(await lib.upscale(img, 'rrdb-x4', 3, tiles), await golden('x4_upscale_by_3'), 'x4 by 3');
    // A ×2 model needs three passes to reach ×8.
    assertClose(await lib.upscale(img, 'rrdb-x2', 8, tiles), await golden('x2_upscale_by_8'), 'x2 by 8');
    assertClose(await lib.upscale(img, 'Lanczos', 2, tiles), await golden('lanczos_by_2'), 'Lanczos', 0);
    assertClose(await lib.upscale(img, 'Nearest', 2.5, tiles), await golden('nearest_by_2.5'), 'Nearest', 0);
    assert.deepEqual((await lib.upscale(img, 'None', 2, tiles)).width, 24, 'None still lands on the target size');
    await assert.rejects(lib.upscale(img, 'RealESRGAN_x4plus', 2, tiles), (e: Error) => /pickle/.test(e.message) && /\.safetensors/.test(e.message) && /weights_only=True/.test(e.message));
    await assert.rejects(lib.upscale(img, 'nope', 2, tiles), /could not find upscaler named nope/);

    // Extras: to a size with crop centres the upscale on a black canvas; a second upscaler blends in.
    const r = await postprocessUpscale(lib, img, { mode: 1, by: 2, toWidth: 40, toHeight: 40, crop: true, upscaler1: 'Lanczos', upscaler2: 'Nearest', upscaler2Visibility: 0.5 }, tiles);
    assert.deepEqual([r.image.width, r.image.height], [40, 40]);
    assert.deepEqual(r.info, [['Postprocess upscale to', '40x40'], ['Postprocess crop to', '40x40'], ['Postprocess upscaler', 'Lanczos'], ['Postprocess upscaler 2', 'Nearest']]);
    const none = await postprocessUpscale(lib, img, { mode: 0, by: 2, toWidth: 1, toHeight: 1, crop: false, upscaler1: 'None', upscaler2: null, upscaler2Visibility: 0 }, tiles);
    assert.equal(none.image, img);
    assert.deepEqual(none.info, []);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
});
