/**
 * Real clients' requests against a real server (engine backend, sd-tiny checkpoint, loopback):
 * - the payloads of A1111's own API tests (test/test_txt2img.py, test_img2img.py, test_utils.py,
 *   test_extras.py), written here from their documented shapes;
 * - the requests the webuiapi Python client (mix1009/sdwebuiapi) sends for each call it makes, with its
 *   default field values, its `data:image/png;base64,` images, and its bodiless POSTs;
 * each checked for A1111's status and the response fields the client reads.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import sharp from 'sharp';
import { startTestServer, type TestServer } from './server-fixture-backend.ts';

let t: TestServer;
let imageB64 = '';
let maskB64 = '';

before(async () => {
  t = await startTestServer({ withModel: true });
  await t.post('/sdapi/v1/reload-checkpoint');
  // A 64×64 picture and a mask with a white square, as PNGs (the A1111 tests' img2img_basic / mask_basic roles).
  const px = Buffer.alloc(64 * 64 * 3);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) px.set([x * 4, y * 4, 128], (y * 64 + x) * 3);
  imageB64 = (await sharp(px, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer()).toString('base64');
  const m = Buffer.alloc(64 * 64);
  for (let y = 16; y < 40; y++) m.fill(255, y * 64 + 20, y * 64 + 44);
  maskB64 = (await sharp(m, { raw: { width: 64, height: 64, channels: 1 } }).png().toBuffer()).toString('base64');
});
after(() => t.close());

/** A POST with no body at all, as `requests.post(url)` sends it. */
async function bare(path: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(t.server.url + path, { method: 'POST' });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : text };
}

async function generated(path: string, payload: object, images = 1): Promise<Record<string, any>> {
  const r = await t.post(path, payload);
  assert.equal(r.status, 200, `${path}: ${JSON.stringify(r.body).slice(0, 400)}`);
  assert.equal(r.body.images.length, images, path);
  for (const im of r.body.images) assert.ok((await sharp(Buffer.from(im, 'base64')).metadata()).width! > 0);
  assert.equal(typeof JSON.parse(r.body.info), 'object');
  assert.equal(typeof r.body.parameters, 'object');
  return r.body;
}

// test/test_txt2img.py's request.
const a1111Txt2img = {
  batch_size: 1, cfg_scale: 7, denoising_strength: 0, enable_hr: false, eta: 0, firstphase_height: 0, firstphase_width: 0,
  height: 64, n_iter: 1, negative_prompt: '', prompt: 'example prompt', restore_faces: false, s_churn: 0, s_noise: 1,
  s_tmax: 0, s_tmin: 0, sampler_index: 'Euler a', seed: -1, seed_resize_from_h: -1, seed_resize_from_w: -1, steps: 3,
  styles: [], subseed: -1, subseed_strength: 0, tiling: false, width: 64,
};

test("A1111's test_txt2img payloads", async () => {
  await generated('/sdapi/v1/txt2img', a1111Txt2img);
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, negative_prompt: 'example negative prompt' });
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, prompt: '((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]' });
  const tall = await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, height: 128 });
  assert.equal((await sharp(Buffer.from(tall.images[0], 'base64')).metadata()).height, 128);
  const hr = await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, enable_hr: true });
  assert.equal((await sharp(Buffer.from(hr.images[0], 'base64')).metadata()).width, 128, 'hires fix at the default hr_scale 2');
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, tiling: true });
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, restore_faces: true });
  for (const sampler of ['PLMS', 'DDIM', 'UniPC']) {
    const r = await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, sampler_index: sampler });
    assert.equal(JSON.parse(r.info).sampler_name, sampler);
  }
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, n_iter: 2 }, 2);
  await generated('/sdapi/v1/txt2img', { ...a1111Txt2img, batch_size: 2 }, 2);
});

test("A1111's test_img2img payloads (plain, masked, inverted mask)", async () => {
  const req = {
    batch_size: 1, cfg_scale: 7, denoising_strength: 0.75, eta: 0, height: 64, include_init_images: false, init_images: [imageB64],
    inpaint_full_res: false, inpaint_full_res_padding: 0, inpainting_fill: 0, inpainting_mask_invert: false, mask: null, mask_blur: 4,
    n_iter: 1, negative_prompt: '', override_settings: {}, prompt: 'example prompt', resize_mode: 0, restore_faces: false, s_churn: 0,
    s_noise: 1, s_tmax: 0, s_tmin: 0, sampler_index: 'Euler a', seed: -1, seed_resize_from_h: -1, seed_resize_from_w: -1, steps: 3,
    styles: [], subseed: -1, subseed_strength: 0, tiling: false, width: 64,
  };
  await generated('/sdapi/v1/img2img', req);
  await generated('/sdapi/v1/img2img', { ...req, mask: maskB64 });
  await generated('/sdapi/v1/img2img', { ...req, mask: maskB64, inpainting_mask_invert: true });
});

test("A1111's test_utils and test_extras payloads", async () => {
  for (const url of ['cmd-flags', 'samplers', 'upscalers', 'sd-models', 'hypernetworks', 'face-restorers', 'realesrgan-models', 'prompt-styles', 'embeddings']) {
    assert.equal((await t.get(`/sdapi/v1/${url}`)).status, 200, url);
  }
  const upscale = await t.post('/sdapi/v1/extra-single-image', {
    resize_mode: 0, show_extras_results: true, gfpgan_visibility: 0, codeformer_visibility: 0, codeformer_weight: 0, upscaling_resize: 2,
    upscaling_resize_w: 128, upscaling_resize_h: 128, upscaling_crop: true, upscaler_1: 'Lanczos', upscaler_2: 'None', extras_upscaler_2_visibility: 0,
    image: imageB64,
  });
  assert.equal(upscale.status, 200);
  assert.equal((await sharp(Buffer.from(upscale.body.image, 'base64')).metadata()).width, 128);
  // test_png_info_performed and test_interrogate_performed post these to extra-single-image too.
  assert.equal((await t.post('/sdapi/v1/extra-single-image', { image: imageB64 })).status, 200);
  assert.equal((await t.post('/sdapi/v1/extra-single-image', { image: imageB64, model: 'clip' })).status, 200);
});

test('webuiapi: every call it makes, with its default payloads', async () => {
  // WebUIApi() probes the scripts list for ControlNet and ADetailer.
  const scripts = await t.get('/sdapi/v1/scripts');
  assert.equal(scripts.status, 200);
  assert.ok(Array.isArray(scripts.body.txt2img) && Array.isArray(scripts.body.img2img));

  const b64 = (s: string) => `data:image/png;base64,${s}`;
  const txt2img = {
    enable_hr: false, hr_scale: 2, hr_upscaler: 'Latent', hr_second_pass_steps: 0, hr_resize_x: 0, hr_resize_y: 0, denoising_strength: 0.7,
    firstphase_width: 0, firstphase_height: 0, prompt: 'a cat', styles: [], seed: 1, subseed: -1, subseed_strength: 0.0, seed_resize_from_h: 0,
    seed_resize_from_w: 0, batch_size: 1, n_iter: 1, steps: 3, cfg_scale: 7.0, width: 64, height: 64, restore_faces: false, tiling: false,
    do_not_save_samples: false, do_not_save_grid: false, negative_prompt: '', eta: 1.0, s_churn: 0, s_tmax: 0, s_tmin: 0, s_noise: 1,
    override_settings: {}, override_settings_restore_afterwards: true, sampler_name: 'Euler a', sampler_index: 'Euler a', script_name: null,
    script_args: [], send_images: true, save_images: false, alwayson_scripts: {},
  };
  const r1 = await generated('/sdapi/v1/txt2img', txt2img);
  assert.equal(JSON.parse(r1.info).seed, 1);
  await generated('/sdapi/v1/txt2img', { ...txt2img, enable_hr: true, hr_scale: 1.5, hr_second_pass_steps: 2 });

  const img2img = {
    init_images: [b64(imageB64)], resize_mode: 0, denoising_strength: 0.75, mask_blur: 4, inpainting_fill: 0, inpaint_full_res: true,
    inpaint_full_res_padding: 0, inpainting_mask_invert: 0, initial_noise_multiplier: 1, prompt: 'a cat', styles: [], seed: -1, subseed: -1,
    subseed_strength: 0, seed_resize_from_h: 0, seed_resize_from_w: 0, batch_size: 1, n_iter: 1, steps: 3, cfg_scale: 7.0,
    image_cfg_scale: 1.5, width: 64, height: 64, restore_faces: false, tiling: false, do_not_save_samples: false, do_not_save_grid: false,
    negative_prompt: '', eta: 1.0, s_churn: 0, s_tmax: 0, s_tmin: 0, s_noise: 1, override_settings: {}, override_settings_restore_afterwards: true,
    sampler_name: 'Euler a', sampler_index: 'Euler a', include_init_images: false, script_name: null, script_args: [], send_images: true,
    save_images: false, alwayson_scripts: {},
  };
  await generated('/sdapi/v1/img2img', img2img);
  await generated('/sdapi/v1/img2img', { ...img2img, mask: b64(maskB64) });

  const extrasBase = {
    resize_mode: 0, show_extras_results: true, gfpgan_visibility: 0, codeformer_visibility: 0, codeformer_weight: 0, upscaling_resize: 2,
    upscaling_resize_w: 512, upscaling_resize_h: 512, upscaling_crop: true, upscaler_1: 'Lanczos', upscaler_2: 'None', extras_upscaler_2_visibility: 0,
    upscale_first: false,
  };
  const single = await t.post('/sdapi/v1/extra-single-image', { ...extrasBase, image: b64(imageB64) });
  assert.equal(single.status, 200);
  assert.equal(typeof single.body.html_info, 'string');
  const batch = await t.post('/sdapi/v1/extra-batch-images', { ...extrasBase, imageList: [{ data: b64(imageB64), name: 'image00001' }, { data: b64(imageB64), name: 'image00002' }] });
  assert.equal(batch.status, 200);
  assert.equal(batch.body.images.length, 2);

  const info = await t.post('/sdapi/v1/png-info', { image: b64(r1.images[0]) });
  assert.equal(info.status, 200);
  assert.match(info.body.info, /^a cat\n/);

  for (const p of ['interrupt', 'skip', 'refresh-checkpoints', 'refresh-vae', 'refresh-loras', 'refresh-embeddings']) {
    assert.equal((await bare(`/sdapi/v1/${p}`)).status, 200, p);
  }
  for (const p of ['options', 'cmd-flags', 'progress', 'samplers', 'schedulers', 'sd-vae', 'upscalers', 'latent-upscale-modes', 'loras', 'sd-models', 'hypernetworks', 'face-restorers', 'realesrgan-models', 'prompt-styles', 'scripts', 'embeddings', 'memory']) {
    assert.equal((await t.get(`/sdapi/v1/${p}`)).status, 200, p);
  }
  // util_wait_for_ready reads progress and state.job_count; util_get_current_model reads the option.
  const progress = (await t.get('/sdapi/v1/progress')).body;
  assert.equal(progress.progress, 0);
  assert.equal(progress.state.job_count, 0);
  // util_set_model posts a title from sd-models as the option.
  const title = (await t.get('/sdapi/v1/sd-models')).body[0].title as string;
  assert.equal((await t.post('/sdapi/v1/options', { sd_model_checkpoint: title })).status, 200);
  assert.equal((await t.get('/sdapi/v1/options')).body.sd_model_checkpoint, title);
  // set_options with a plain setting, as clients change samplers' eta and clip skip.
  assert.equal((await t.post('/sdapi/v1/options', { CLIP_stop_at_last_layers: 2, eta_ancestral: 0.9 })).status, 200);
});
