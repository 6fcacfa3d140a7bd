/**
 * A1111 options (`/sdapi/v1/options`): every key with its A1111 v1.10 default, current values persisted
 * atomically to `<data-dir>/config.json` (the same file name and flat layout A1111 uses).
 */
import { readFile } from 'node:fs/promises';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { UserError } from '../engine/util/errors.ts';
import { HttpError } from './errors.ts';

export type OptionValue = string | number | boolean | null | unknown[] | Record<string, unknown>;

/** Defaults as in A1111 v1.10 (`modules/shared_options.py` and the built-in extensions), except where noted. */
export const OPTION_DEFAULTS: Record<string, OptionValue> = {
  samples_save: true,
  samples_format: 'png',
  samples_filename_pattern: '',
  save_images_add_number: true,
  grid_save: true,
  grid_format: 'png',
  grid_extended_filename: false,
  grid_only_if_multiple: true,
  return_grid: true,
  enable_pnginfo: true,
  save_txt: false,
  jpeg_quality: 80,
  webp_lossless: false,
  export_for_4chan: true,
  img_downscale_threshold: 4.0,
  target_side_length: 4000,
  img_max_size_mp: 200,
  outdir_samples: '',
  outdir_txt2img_samples: 'outputs/txt2img-images',
  outdir_img2img_samples: 'outputs/img2img-images',
  outdir_extras_samples: 'outputs/extras-images',
  outdir_grids: '',
  outdir_txt2img_grids: 'outputs/txt2img-grids',
  outdir_img2img_grids: 'outputs/img2img-grids',
  save_to_dirs: true,
  directories_filename_pattern: '[date]',
  sd_model_checkpoint: null,
  sd_checkpoint_hash: '',
  sd_checkpoints_limit: 1,
  sd_checkpoints_keep_in_cpu: true,
  sd_checkpoint_cache: 0,
  sd_unet: 'Automatic',
  enable_quantization: false,
  emphasis: 'Original',
  enable_batch_seeds: true,
  comma_padding_backtrack: 20,
  CLIP_stop_at_last_layers: 1,
  upcast_attn: false,
  randn_source: 'GPU',
  tiling: false,
  hires_fix_refiner_pass: 'second pass',
  sdxl_crop_top: 0,
  sdxl_crop_left: 0,
  sdxl_refiner_low_aesthetic_score: 2.5,
  sdxl_refiner_high_aesthetic_score: 6.0,
  sdxl_clip_l_skip: false,
  sd_vae: 'Automatic',
  sd_vae_overrides_per_model_preferences: true,
  auto_vae_precision: true,
  sd_vae_encode_method: 'Full',
  sd_vae_decode_method: 'Full',
  inpainting_mask_weight: 1.0,
  initial_noise_multiplier: 1.0,
  img2img_extra_noise: 0.0,
  img2img_color_correction: false,
  img2img_fix_steps: false,
  img2img_background_color: '#ffffff',
  eta_noise_seed_delta: 0,
  eta_ddim: 0.0,
  eta_ancestral: 1.0,
  ddim_discretize: 'uniform',
  s_churn: 0.0,
  s_tmin: 0.0,
  s_tmax: 0.0,
  s_noise: 1.0,
  s_min_uncond: 0.0,
  sigma_min: 0.0,
  sigma_max: 0.0,
  rho: 0.0,
  always_discard_next_to_last_sigma: false,
  sgm_noise_multiplier: false,
  uni_pc_variant: 'bh1',
  uni_pc_skip_type: 'time_uniform',
  uni_pc_order: 3,
  uni_pc_lower_order_final: true,
  sd_noise_schedule: 'Default',
  live_previews_enable: true,
  live_previews_image_format: 'png',
  show_progress_grid: true,
  show_progress_every_n_steps: 10,
  show_progress_type: 'Approx NN',
  live_preview_content: 'Prompt',
  live_preview_refresh_period: 1000,
  hide_samplers: [],
  sd_lora: 'None',
  lora_preferred_name: 'Alias from file',
  lora_add_hashes_to_infotext: true,
  lora_show_all: false,
  lora_hide_unknown_for_versions: [],
  lora_in_memory_limit: 0,
  lora_not_found_warning_console: false,
  lora_not_found_gradio_warning: false,
  lora_functional: false,
  extra_networks_default_multiplier: 1.0,
  sd_hypernetwork: 'None',
  add_model_hash_to_info: true,
  add_model_name_to_info: true,
  add_user_name_to_info: false,
  add_version_to_infotext: true,
  add_vae_name_to_info: true,
  add_vae_hash_to_info: true,
  // The UI's "send to img2img" switches; API clients (and A1111's own test_options_write) read and flip them.
  send_seed: true,
  send_size: true,
  face_restoration: false,
  face_restoration_model: 'CodeFormer',
  code_former_weight: 0.5,
  face_restoration_unload: false,
  upscaler_for_img2img: null,
  token_merging_ratio: 0.0,
  token_merging_ratio_img2img: 0.0,
  token_merging_ratio_hr: 0.0,
  pad_cond_uncond: false,
  pad_cond_uncond_v0: false,
  persistent_cond_cache: true,
  batch_cond_uncond: true,
  use_old_emphasis_implementation: false,
  use_old_karras_scheduler_sigmas: false,
  no_dpmpp_sde_batch_determinism: false,
  use_old_hires_fix_width_height: false,
  dont_fix_second_order_samplers_schedule: false,
  hires_fix_use_firstpass_conds: false,
  use_old_scheduling: false,
  use_downcasted_alpha_bar: false,
  refiner_switch_by_sample_steps: false,
  interrupt_after_current: true,
  quicksettings_list: ['sd_model_checkpoint'],
  // Deviation: A1111 defaults this to true. Fetching URLs on behalf of a client is off unless the operator
  // turns it on (--api-enable-requests or config.json), as issue 6 asks.
  api_enable_requests: false,
  api_forbid_local_requests: true,
  api_useragent: '',
};

/** A1111 `restrict_api`: POST /options silently ignores these; only config.json or the command line sets them. */
export const RESTRICTED_OPTIONS = new Set(['api_enable_requests', 'api_forbid_local_requests', 'api_useragent']);

/** Checks a value against the default's JSON type; numeric strings are accepted for numbers. */
export function coerceOption(key: string, value: unknown): OptionValue {
  const def = OPTION_DEFAULTS[key];
  if (def === undefined) throw new HttpError(422, key, 'KeyError');
  if (def === null || value === null) return value as OptionValue;
  if (typeof def === 'number') {
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isFinite(n)) throw new UserError(`option '${key}' must be a number, got ${JSON.stringify(value)}`, { status: 422 });
    return n;
  }
  if (typeof def === 'boolean') {
    if (typeof value !== 'boolean') throw new UserError(`option '${key}' must be true or false, got ${JSON.stringify(value)}`, { status: 422 });
    return value;
  }
  if (typeof def === 'string') {
    if (typeof value !== 'string') throw new UserError(`option '${key}' must be a string, got ${JSON.stringify(value)}`, { status: 422 });
    return value;
  }
  if (Array.isArray(def)) {
    if (!Array.isArray(value)) throw new UserError(`option '${key}' must be a list, got ${JSON.stringify(value)}`, { status: 422 });
    return value;
  }
  return value as OptionValue;
}

export class OptionsStore {
  private data: Record<string, OptionValue>;

  private constructor(
    readonly path: string,
    saved: Record<string, OptionValue>,
    /** Values forced by the command line; they win over config.json. */
    private readonly forced: Record<string, OptionValue>,
  ) {
    this.data = { ...structuredClone(OPTION_DEFAULTS), ...saved, ...forced };
  }

  /** Loads `<data-dir>/config.json` if present. Unknown keys in it are kept (A1111 keeps extension options). */
  static async load(path: string, forced: Record<string, OptionValue> = {}): Promise<OptionsStore> {
    let saved: Record<string, OptionValue> = {};
    const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return null;
      throw e;
    });
    if (text !== null) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(text);
      } catch (e) {
        throw new UserError(`${path}: not valid JSON (${(e as Error).message})`);
      }
      if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UserError(`${path}: expected a JSON object of option → value`);
      saved = parsed as Record<string, OptionValue>;
    }
    return new OptionsStore(path, saved, forced);
  }

  get(key: string): OptionValue {
    return this.data[key] ?? null;
  }

  all(): Record<string, OptionValue> {
    return structuredClone(this.data);
  }

  /** Sets options from the API: unknown keys → KeyError (422; A1111: 500); restricted keys are ignored. Returns the keys that changed. */
  setFromApi(values: Record<string, unknown>): string[] {
    for (const k of Object.keys(values)) if (!(k in OPTION_DEFAULTS) && !(k in this.data)) throw new HttpError(422, k, 'KeyError');
    const changed: string[] = [];
    for (const [k, v] of Object.entries(values)) {
      if (RESTRICTED_OPTIONS.has(k)) continue;
      const value = k in OPTION_DEFAULTS ? coerceOption(k, v) : (v as OptionValue);
      if (JSON.stringify(this.data[k]) !== JSON.stringify(value)) changed.push(k);
      this.data[k] = value;
    }
    return changed;
  }

  /** Set by the server itself (e.g. the loaded checkpoint's title), not subject to restrictions. */
  setInternal(key: string, value: OptionValue): void {
    this.data[key] = value;
  }

  async save(): Promise<void> {
    const out: Record<string, OptionValue> = {};
    // Command-line values are not written back, so removing the flag restores the saved setting.
    for (const [k, v] of Object.entries(this.data)) if (!(k in this.forced)) out[k] = v;
    await writeBufferAtomic(this.path, JSON.stringify(out, null, 4) + '\n');
  }
}
