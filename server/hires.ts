/**
 * The server's side of A1111's hires fix: the request's fields → the engine's plan (engine/sd/hires.ts, the one
 * rule for target size, upscale space, steps and infotext), and the pixel-space upscale for image upscalers
 * (or when the backend returns no latents). Latent upscalers resize the first pass's latents in the backend.
 */
import sharp from 'sharp';
import { applyFirstphase, planHires as enginePlan, type HiresPlan } from '../engine/sd/hires.ts';
import type { RawImage } from './backend.ts';

export type { HiresPlan };

/** The plan for a validated txt2img request (A1111 field names). */
export function planHires(req: Record<string, unknown>, width: number, height: number, steps: number): HiresPlan {
  return enginePlan(
    {
      scale: req['hr_scale'] as number,
      resizeX: req['hr_resize_x'] as number,
      resizeY: req['hr_resize_y'] as number,
      upscaler: req['hr_upscaler'] as string | null,
      secondPassSteps: req['hr_second_pass_steps'] as number,
      denoisingStrength: req['denoising_strength'] as number | null,
      sampler: req['hr_sampler_name'] as string | null,
      scheduler: req['hr_scheduler'] as string | null,
      prompt: req['hr_prompt'] as string,
      negativePrompt: req['hr_negative_prompt'] as string,
      checkpoint: req['hr_checkpoint_name'] as string | null,
    },
    width,
    height,
    steps,
  );
}

/**
 * A1111's legacy `firstphase_width/height` with `enable_hr`: the first pass runs at that size and the requested
 * width × height becomes the hires target. Changes the request in place.
 */
export function applyFirstphaseFields(req: Record<string, unknown>): void {
  if (!req['enable_hr']) return;
  const f = applyFirstphase({
    width: req['width'] as number,
    height: req['height'] as number,
    firstphaseWidth: req['firstphase_width'] as number,
    firstphaseHeight: req['firstphase_height'] as number,
  });
  if (!f) return;
  req['width'] = f.width;
  req['height'] = f.height;
  req['hr_resize_x'] = f.resizeX;
  req['hr_resize_y'] = f.resizeY;
}

/** Upscales first-pass images to the plan's size (its kernel; cover-crop when both sides were given). */
export async function upscaleForHires(images: RawImage[], plan: HiresPlan): Promise<RawImage[]> {
  const out: RawImage[] = [];
  for (const im of images) {
    const { data, info } = await sharp(Buffer.from(im.data.buffer, im.data.byteOffset, im.data.byteLength), { raw: { width: im.width, height: im.height, channels: im.channels } })
      .removeAlpha()
      .resize(plan.width, plan.height, { fit: plan.crop ? 'cover' : 'fill', kernel: plan.pixelKernel })
      .raw()
      .toBuffer({ resolveWithObject: true });
    out.push({ width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) });
  }
  return out;
}
