import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startTestServer } from './server-fixture-backend.ts';

// A1111's own API test of option writes (tests/test_utils.py test_options_write), written from its documented steps.
test('options write as A1111 tests it: read send_seed, post its negation, read it back, restore; saved to config.json', async () => {
  const t = await startTestServer({});
  try {
    const first = await t.get('/sdapi/v1/options');
    assert.equal(first.status, 200);
    const pre = first.body.send_seed;
    assert.equal(pre, true, "A1111's default");
    assert.equal(first.body.send_size, true);
    const w = await t.post('/sdapi/v1/options', { send_seed: !pre });
    assert.equal(w.status, 200);
    assert.equal(w.body, null);
    const after = await t.get('/sdapi/v1/options');
    assert.equal(after.status, 200);
    assert.equal(after.body.send_seed, !pre);
    assert.equal(JSON.parse(await readFile(join(t.dataDir, 'config.json'), 'utf8')).send_seed, !pre);
    assert.equal((await t.post('/sdapi/v1/options', { send_seed: pre })).status, 200);
    assert.equal((await t.get('/sdapi/v1/options')).body.send_seed, pre);
  } finally {
    await t.close();
  }
});

// A1111 1.10's settings, spot-checked against values read from its modules/shared_options.py and built-in
// extensions (not from our own table), and its handling of keys it does not know.
test('options: A1111 1.10 keys and defaults; unknown keys are a KeyError unless sent as null', async () => {
  const t = await startTestServer({});
  try {
    const all = (await t.get('/sdapi/v1/options')).body as Record<string, unknown>;
    assert.ok(Object.keys(all).length >= 300, `only ${Object.keys(all).length} options`);
    const expected: Record<string, unknown> = {
      ESRGAN_tile: 192, ESRGAN_tile_overlap: 8, realesrgan_enabled_models: ['R-ESRGAN 4x+', 'R-ESRGAN 4x+ Anime6B'],
      outdir_save: 'log/images', outdir_init_images: 'outputs/init-images', n_rows: -1, save_images_replace_action: 'Replace',
      emphasis: 'Original', beta_dist_alpha: 0.6, skip_early_cond: 0, sd_noise_schedule: 'Default', memmon_poll_rate: 8,
      interrogate_clip_dict_limit: 1500, keyedit_delimiters_whitespace: ['Tab', 'Carriage Return', 'Line Feed'],
      textual_inversion_add_hashes_to_infotext: true, upscaling_max_images_in_cache: 5, disable_all_extensions: 'none',
      hypertile_max_tile_unet: 256, canvas_hotkey_zoom: 'Alt', lora_preferred_name: 'Alias from file', SWIN_tile: 192,
      ldsr_steps: 100, extra_options_cols: 1, js_modal_lightbox_gamepad_repeat: 250, infotext_styles: 'Apply if any',
      send_seed: true, send_size: true, quicksettings_list: ['sd_model_checkpoint'],
    };
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(all[k], v, k);
    // HTML-only entries are not settings.
    assert.equal('sd_vae_explanation' in all, false);

    const bad = await t.post('/sdapi/v1/options', { jpeg_quality: 90, no_such_option: 1 });
    assert.equal(bad.status, 422);
    assert.equal(bad.body.error, 'KeyError');
    assert.equal(bad.body.errors, 'no_such_option');
    assert.equal((await t.get('/sdapi/v1/options')).body.jpeg_quality, 80, 'nothing set when a key is unknown');

    // A1111 compares with the current value first (None for an unknown key): null is a no-op, not an error.
    const nul = await t.post('/sdapi/v1/options', { jpeg_quality: 90, no_such_option: null });
    assert.equal(nul.status, 200);
    const after = (await t.get('/sdapi/v1/options')).body as Record<string, unknown>;
    assert.equal(after.jpeg_quality, 90);
    assert.equal('no_such_option' in after, false);
  } finally {
    await t.close();
  }
});
