/** A1111 v1.10 request models for txt2img and img2img: field names, types and API defaults. */
import type { ModelSpec, RequestOf } from './schema.ts';

const common = {
  prompt: { type: 'str', default: '', description: 'may contain <lora:name:weight> tags' },
  negative_prompt: { type: 'str', default: '' },
  styles: { type: 'str[]', default: null, description: 'names from /sdapi/v1/prompt-styles' },
  seed: { type: 'int', default: -1, description: '-1 = random' },
  subseed: { type: 'int', default: -1 },
  subseed_strength: { type: 'float', default: 0 },
  seed_resize_from_h: { type: 'int', default: -1 },
  seed_resize_from_w: { type: 'int', default: -1 },
  sampler_name: { type: 'str', default: null, description: 'null = sampler_index' },
  scheduler: { type: 'str', default: null, description: 'null = Automatic' },
  batch_size: { type: 'int', default: 1 },
  n_iter: { type: 'int', default: 1, description: 'batch count' },
  steps: { type: 'int', default: 50 },
  cfg_scale: { type: 'float', default: 7.0 },
  width: { type: 'int', default: 512 },
  height: { type: 'int', default: 512 },
  restore_faces: { type: 'bool', default: null, description: 'accepted; not available (noted in info)' },
  tiling: { type: 'bool', default: null, description: 'seamless tiling; null = option tiling' },
  do_not_save_samples: { type: 'bool', default: false },
  do_not_save_grid: { type: 'bool', default: false },
  eta: { type: 'float', default: null },
  denoising_strength: { type: 'float', default: null },
  s_min_uncond: { type: 'float', default: null },
  s_churn: { type: 'float', default: null },
  s_tmax: { type: 'float', default: null },
  s_tmin: { type: 'float', default: null },
  s_noise: { type: 'float', default: null },
  override_settings: { type: 'dict', default: null, description: 'option → value for this job only' },
  override_settings_restore_afterwards: { type: 'bool', default: true },
  refiner_checkpoint: { type: 'str', default: null },
  refiner_switch_at: { type: 'float', default: null },
  disable_extra_networks: { type: 'bool', default: false },
  firstpass_image: { type: 'str', default: null },
  comments: { type: 'dict', default: null },
  sampler_index: { type: 'str', default: 'Euler' },
  script_name: { type: 'str', default: null },
  script_args: { type: 'list', default: [] },
  send_images: { type: 'bool', default: true },
  save_images: { type: 'bool', default: false },
  alwayson_scripts: { type: 'dict', default: {} },
  force_task_id: { type: 'str', default: null },
  infotext: { type: 'str', default: null, description: 'an infotext; fills every field the request did not set' },
} as const satisfies ModelSpec;

export const txt2imgModel = {
  ...common,
  enable_hr: { type: 'bool', default: false, description: 'accepted; hires fix not available (noted in info)' },
  firstphase_width: { type: 'int', default: 0 },
  firstphase_height: { type: 'int', default: 0 },
  hr_scale: { type: 'float', default: 2.0 },
  hr_upscaler: { type: 'str', default: null },
  hr_second_pass_steps: { type: 'int', default: 0 },
  hr_resize_x: { type: 'int', default: 0 },
  hr_resize_y: { type: 'int', default: 0 },
  hr_checkpoint_name: { type: 'str', default: null },
  hr_sampler_name: { type: 'str', default: null },
  hr_scheduler: { type: 'str', default: null },
  hr_prompt: { type: 'str', default: '' },
  hr_negative_prompt: { type: 'str', default: '' },
} as const satisfies ModelSpec;

export const img2imgModel = {
  ...common,
  init_images: { type: 'str[]', default: null, description: 'base64 images (data: URLs accepted)' },
  resize_mode: { type: 'int', default: 0, description: '0 just resize, 1 crop and resize, 2 resize and fill, 3 latent' },
  denoising_strength: { type: 'float', default: 0.75 },
  image_cfg_scale: { type: 'float', default: null },
  mask: { type: 'str', default: null },
  mask_blur_x: { type: 'int', default: 4 },
  mask_blur_y: { type: 'int', default: 4 },
  mask_blur: { type: 'int', default: null },
  mask_round: { type: 'bool', default: true },
  inpainting_fill: { type: 'int', default: 0 },
  inpaint_full_res: { type: 'bool', default: true },
  inpaint_full_res_padding: { type: 'int', default: 0 },
  inpainting_mask_invert: { type: 'int', default: 0 },
  initial_noise_multiplier: { type: 'float', default: null },
  latent_mask: { type: 'str', default: null },
  include_init_images: { type: 'bool', default: false },
} as const satisfies ModelSpec;

export const pngInfoModel = {
  image: { type: 'str', default: '' },
} as const satisfies ModelSpec;

export type RequestBody = Record<string, unknown>;

/** The typed requests these models validate to (server/schema.ts `parseRequest`). */
export type Txt2ImgRequest = RequestOf<typeof txt2imgModel>;
export type Img2ImgRequest = RequestOf<typeof img2imgModel>;
export type PngInfoRequest = RequestOf<typeof pngInfoModel>;
