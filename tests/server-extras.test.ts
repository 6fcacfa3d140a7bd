/**
 * A1111's extras API on a real server: /sdapi/v1/upscalers lists the ESRGAN folder, extra-single-image and
 * extra-batch-images upscale with an RRDBNet model and the built-ins, and the pixels equal the PyTorch +
 * Pillow goldens of tests/golden/esrgan (computed independently, see make_golden.py).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { readPngText } from '../engine/image/png-info.ts';
import { startTestServer } from './server-fixture-backend.ts';
import { repoRoot } from './support/paths.ts';

const gdir = join(repoRoot, 'tests/golden/esrgan');
const manifest = JSON.parse(await readFile(join(gdir, 'manifest.json'), 'utf8')) as { input: string; models: Record<string, string>; cases: Record<string, { file: string; width: number; height: number }> };
const inputB64 = (await readFile(join(gdir, manifest.input))).toString('base64');

async function pixels(b64: string): Promise<{ width: number; height: number; data: Uint8Array }> {
  const { data, info } = await sharp(Buffer.from(b64, 'base64')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

async function assertGolden(b64: string, name: string): Promise<void> {
  const c = manifest.cases[name]!;
  const got = await pixels(b64);
  assert.deepEqual([got.width, got.height], [c.width, c.height], name);
  const want = new Uint8Array(await readFile(join(gdir, c.file)));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got.data[i]! - want[i]!));
  assert.ok(worst <= 1, `${name}: differs by up to ${worst} levels`);
}

test('extras: upscalers list, single and batch upscales equal the goldens, A1111 errors for bad requests', async () => {
  const t = await startTestServer({});
  try {
    const esrgan = join(t.dataDir, 'models/ESRGAN');
    await mkdir(esrgan, { recursive: true });
    await copyFile(join(gdir, manifest.models['x4']!), join(esrgan, 'rrdb-x4.safetensors'));
    await writeFile(join(esrgan, '4x-UltraSharp.pth'), 'never opened');

    const list = await t.get('/sdapi/v1/upscalers');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body[0], { name: 'None', model_name: null, model_path: null, model_url: null, scale: 4 });
    assert.deepEqual(list.body.map((u: { name: string }) => u.name), ['None', 'Lanczos', 'Nearest', '4x-UltraSharp', 'rrdb-x4']);
    const x4 = list.body.find((u: { name: string }) => u.name === 'rrdb-x4');
    assert.deepEqual(x4, { name: 'rrdb-x4', model_name: 'ESRGAN_4x', model_path: join(esrgan, 'rrdb-x4.safetensors'), model_url: null, scale: 4 });

    // Whole-image run (ESRGAN_tile 0), as the golden was made.
    assert.equal((await t.post('/sdapi/v1/options', { ESRGAN_tile: 0 })).status, 200);
    const one = await t.post('/sdapi/v1/extra-single-image', { image: inputB64, upscaler_1: 'rrdb-x4', upscaling_resize: 3 });
    assert.equal(one.status, 200, JSON.stringify(one.body));
    assert.equal(one.body.html_info, '<p>Postprocess upscale by: 3.0, Postprocess upscaler: rrdb-x4</p>');
    await assertGolden(one.body.image, 'x4_upscale_by_3');
    assert.equal(readPngText(Buffer.from(one.body.image, 'base64'))['postprocessing'], 'Postprocess upscale by: 3.0, Postprocess upscaler: rrdb-x4');

    const batch = await t.post('/sdapi/v1/extra-batch-images', {
      imageList: [
        { data: inputB64, name: 'a.png' },
        { data: `data:image/png;base64,${inputB64}`, name: 'b.png' },
      ],
      upscaler_1: 'Lanczos',
      upscaling_resize: 2,
    });
    assert.equal(batch.status, 200, JSON.stringify(batch.body));
    assert.equal(batch.body.images.length, 2);
    for (const im of batch.body.images) await assertGolden(im, 'lanczos_by_2');

    // No upscaler: the image comes back at its size with an empty infotext.
    const none = await t.post('/sdapi/v1/extra-single-image', { image: inputB64 });
    assert.equal(none.status, 200);
    assert.equal(none.body.html_info, '<p></p>');
    assert.deepEqual([(await pixels(none.body.image)).width, (await pixels(none.body.image)).height], [13, 11]);

    const unknown = await t.post('/sdapi/v1/extra-single-image', { image: inputB64, upscaler_1: 'R-ESRGAN 4x+' });
    assert.equal(unknown.status, 422);
    assert.match(unknown.body.errors, /could not find upscaler named R-ESRGAN 4x\+/);
    const pickle = await t.post('/sdapi/v1/extra-single-image', { image: inputB64, upscaler_1: '4x-UltraSharp' });
    assert.equal(pickle.status, 422);
    assert.match(pickle.body.errors, /pickle.*\.safetensors/s);
    const range = await t.post('/sdapi/v1/extra-single-image', { image: inputB64, upscaler_1: 'Lanczos', upscaling_resize: 9 });
    assert.equal(range.status, 422);
    assert.deepEqual(range.body.detail[0].loc, ['body', 'upscaling_resize']);
    const noName = await t.post('/sdapi/v1/extra-batch-images', { imageList: [{ data: inputB64 }], upscaler_1: 'Lanczos' });
    assert.equal(noName.status, 422);
    assert.deepEqual(noName.body.detail, [{ loc: ['body', 'imageList', 0, 'name'], msg: 'field required', type: 'value_error.missing' }]);
    const huge = await t.post('/sdapi/v1/extra-single-image', { image: inputB64, upscaler_1: 'Lanczos', resize_mode: 1, upscaling_resize_w: 100000, upscaling_resize_h: 100000 });
    assert.equal(huge.status, 422);
    assert.equal(huge.body.detail[0].type, 'value_error.limit');
  } finally {
    await t.close();
  }
});
