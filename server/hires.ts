/**
 * The server's side of A1111's hires fix: the request's fields → the engine's plan (engine/sd/hires.ts, the one
 * rule for target size, upscale space, steps and infotext), and the pixel-space upscale for image upscalers
 * (or when the backend returns no latents). Latent upscalers resize the first pass's latents in the backend.
 */
import { resizeImageOffThread } from '../engine/image/resize-off-thread.ts';
import { applyFirstphase, planHires as enginePlan, type HiresPlan } from '../engine/sd/hires.ts';
import type { RawImage } from './backend.ts';
import type { Txt2ImgRequest } from './requests/generation.ts';

export type { HiresPlan };

/** The plan for a validated txt2img request. */
export function planHires(req: Txt2ImgRequest): HiresPlan {
  return enginePlan(
    {
      scale: req.hr_scale,
      resizeX: req.hr_resize_x,
      resizeY: req.hr_resize_y,
      upscaler: req.hr_upscaler,
      secondPassSteps: req.hr_second_pass_steps,
      denoisingStrength: req.denoising_strength,
      sampler: req.hr_sampler_name,
      scheduler: req.hr_scheduler,
      prompt: req.hr_prompt,
      negativePrompt: req.hr_negative_prompt,
      checkpoint: req.hr_checkpoint_name,
    },
    req.width,
    req.height,
    req.steps,
  );
}

/**
 * A1111's legacy `firstphase_width/height` with `enable_hr`: the first pass runs at that size and the requested
 * width × height becomes the hires target. Changes the request in place.
 */
export function applyFirstphaseFields(req: Txt2ImgRequest): void {
  if (!req.enable_hr) return;
  const f = applyFirstphase({ width: req.width, height: req.height, firstphaseWidth: req.firstphase_width, firstphaseHeight: req.firstphase_height });
  if (!f) return;
  req.width = f.width;
  req.height = f.height;
  req.hr_resize_x = f.resizeX;
  req.hr_resize_y = f.resizeY;
}

/**
 * Upscales first-pass images to the plan's size as A1111's resize_image (engine/image/resize-mode.ts): mode 1
 * (cover-crop) when both sides were given, else 0, with Nearest or Lanczos as the upscaler says.
 */
export async function upscaleForHires(images: RawImage[], plan: HiresPlan): Promise<RawImage[]> {
  const filter = plan.pixelKernel === 'nearest' ? 'nearest' : 'lanczos';
  return Promise.all(images.map(async (im) => ({ ...(await resizeImageOffThread(plan.crop ? 1 : 0, im, plan.width, plan.height, filter)), channels: im.channels })));
}
