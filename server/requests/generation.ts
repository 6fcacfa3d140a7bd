/** A1111 v1.10 request models for txt2img, img2img and png-info: field names, types and API defaults. */
import type { z } from 'zod';
import { A1111_DEFAULT_SIZE } from '../../engine/sd/sidecar.ts';
import { f, requestModel } from '../schema.ts';

const common = {
  prompt: f.str('', 'may contain <lora:name:weight> tags'),
  negative_prompt: f.str(''),
  styles: f.strList(null, 'names from /sdapi/v1/prompt-styles'),
  seed: f.int(-1, '-1 = random'),
  subseed: f.int(-1),
  subseed_strength: f.float(0),
  seed_resize_from_h: f.int(-1),
  seed_resize_from_w: f.int(-1),
  sampler_name: f.str(null, 'null or "" = sampler_index'),
  scheduler: f.str(null, 'null = Automatic'),
  batch_size: f.int(1),
  n_iter: f.int(1, 'batch count'),
  steps: f.int(50),
  cfg_scale: f.float(7.0),
  width: f.int(A1111_DEFAULT_SIZE, "txt2img with neither width nor height: the checkpoint's native size where its config states one"),
  height: f.int(A1111_DEFAULT_SIZE, "txt2img with neither width nor height: the checkpoint's native size where its config states one"),
  restore_faces: f.bool(null, 'accepted; not available (noted in info)'),
  tiling: f.bool(null, 'seamless tiling; null = option tiling'),
  do_not_save_samples: f.bool(false),
  do_not_save_grid: f.bool(false),
  eta: f.float(null),
  denoising_strength: f.float(null),
  s_min_uncond: f.float(null),
  s_churn: f.float(null),
  s_tmax: f.float(null),
  s_tmin: f.float(null),
  s_noise: f.float(null),
  override_settings: f.dict(null, 'option → value for this job only'),
  override_settings_restore_afterwards: f.bool(true),
  refiner_checkpoint: f.str(null),
  refiner_switch_at: f.float(null),
  disable_extra_networks: f.bool(false),
  firstpass_image: f.str(null),
  comments: f.dict(null),
  sampler_index: f.str('Euler'),
  script_name: f.str(null, 'null or "" = none; no scripts exist here, so any name is refused (422)'),
  script_args: f.list([]),
  send_images: f.bool(true),
  save_images: f.bool(false),
  alwayson_scripts: f.dict({}),
  force_task_id: f.str(null),
  infotext: f.str(null, 'an infotext; fills every field the request did not set'),
};

export const txt2imgRequest = requestModel({
  ...common,
  enable_hr: f.bool(false, 'hires fix: a second pass at the hr_scale or hr_resize_x/y size'),
  firstphase_width: f.int(0),
  firstphase_height: f.int(0),
  hr_scale: f.float(2.0),
  hr_upscaler: f.str(null),
  hr_second_pass_steps: f.int(0),
  hr_resize_x: f.int(0),
  hr_resize_y: f.int(0),
  hr_checkpoint_name: f.str(null),
  hr_sampler_name: f.str(null),
  hr_scheduler: f.str(null),
  hr_prompt: f.str(''),
  hr_negative_prompt: f.str(''),
});

export const img2imgRequest = requestModel({
  ...common,
  init_images: f.strList(null, 'base64 images (data: URLs accepted)'),
  resize_mode: f.int(0, '0 just resize, 1 crop and resize, 2 resize and fill, 3 latent'),
  denoising_strength: f.float(0.75),
  image_cfg_scale: f.float(null),
  mask: f.str(null),
  mask_blur_x: f.int(4),
  mask_blur_y: f.int(4),
  mask_blur: f.int(null),
  mask_round: f.bool(true),
  inpainting_fill: f.int(0),
  inpaint_full_res: f.bool(true),
  inpaint_full_res_padding: f.int(0),
  inpainting_mask_invert: f.int(0),
  initial_noise_multiplier: f.float(null),
  latent_mask: f.str(null),
  include_init_images: f.bool(false),
});

export const pngInfoRequest = requestModel({
  image: f.str(''),
});

/** The typed requests these models validate to (server/schema.ts `parseRequest`). */
export type Txt2ImgRequest = z.output<typeof txt2imgRequest>;
export type Img2ImgRequest = z.output<typeof img2imgRequest>;
export type PngInfoRequest = z.output<typeof pngInfoRequest>;
/** The fields both requests share. */
export type GenerationRequest = Txt2ImgRequest | Img2ImgRequest;
