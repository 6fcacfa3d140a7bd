/**
 * A1111's hires fix (`enable_hr`) as a second backend call: the first-pass images are upscaled in pixel
 * space and refined by img2img at the target size with `denoising_strength`. Target size, second-pass steps,
 * sampler and prompts follow A1111 v1.10's rules; latent upscalers are done in pixel space (noted).
 */
import sharp from 'sharp';
import type { InfotextValue } from '../engine/image/png-info.ts';
import { UserError } from '../engine/util/errors.ts';
import type { RawImage } from './backend.ts';

export interface HiresPlan {
  width: number;
  height: number;
  /** Second-pass steps (A1111: hr_second_pass_steps, 0 = same as the first pass). */
  steps: number;
  denoising: number;
  upscaler: string;
  /** Crop to the target aspect when both hr_resize_x and hr_resize_y are given. */
  crop: boolean;
  /** Sampler / prompts for the second pass when the request names other ones, else null. */
  samplerName: string | null;
  schedulerName: string | null;
  prompt: string | null;
  negativePrompt: string | null;
  infotext: Record<string, InfotextValue>;
  notes: string[];
}

const floor8 = (v: number) => Math.max(8, Math.floor(v / 8) * 8);

export function planHires(req: Record<string, unknown>, width: number, height: number, steps: number): HiresPlan {
  const scale = req['hr_scale'] as number;
  const rx = req['hr_resize_x'] as number;
  const ry = req['hr_resize_y'] as number;
  let tw: number;
  let th: number;
  let crop = false;
  if (rx === 0 && ry === 0) {
    tw = Math.trunc(width * scale);
    th = Math.trunc(height * scale);
  } else if (ry === 0) {
    tw = rx;
    th = Math.trunc((rx * height) / width);
  } else if (rx === 0) {
    tw = Math.trunc((ry * width) / height);
    th = ry;
  } else {
    tw = rx;
    th = ry;
    crop = true;
  }
  if (tw > 8192 || th > 8192) throw new UserError(`hires fix target ${tw}x${th} is too large`, { status: 422 });
  const notes: string[] = [];
  const upscaler = (req['hr_upscaler'] as string | null) ?? 'Latent';
  if (upscaler.startsWith('Latent')) notes.push(`Hires upscaler '${upscaler}' was done in pixel space (Lanczos)`);
  else if (!['None', 'Lanczos', 'Nearest'].includes(upscaler)) notes.push(`Hires upscaler '${upscaler}' is not available; used Lanczos`);
  let denoising = req['denoising_strength'] as number | null;
  if (denoising === null) {
    denoising = 0.7;
    notes.push('enable_hr without denoising_strength: used 0.7 (the A1111 UI default)');
  }
  const hrSteps = req['hr_second_pass_steps'] as number;
  const hrPrompt = req['hr_prompt'] as string;
  const hrNeg = req['hr_negative_prompt'] as string;
  const hrSampler = req['hr_sampler_name'] as string | null;
  const hrScheduler = req['hr_scheduler'] as string | null;
  if (req['hr_checkpoint_name']) notes.push('hr_checkpoint_name is not available; the same checkpoint was used');
  return {
    width: floor8(tw),
    height: floor8(th),
    steps: hrSteps > 0 ? hrSteps : steps,
    denoising,
    upscaler,
    crop,
    samplerName: hrSampler && hrSampler !== 'Use same sampler' ? hrSampler : null,
    schedulerName: hrScheduler && hrScheduler !== 'Use same scheduler' ? hrScheduler : null,
    prompt: hrPrompt !== '' ? hrPrompt : null,
    negativePrompt: hrNeg !== '' ? hrNeg : null,
    infotext: {
      'Hires prompt': hrPrompt !== '' ? hrPrompt : null,
      'Hires negative prompt': hrNeg !== '' ? hrNeg : null,
      'Hires upscale': rx === 0 && ry === 0 ? scale : null,
      'Hires resize': rx === 0 && ry === 0 ? null : `${rx}x${ry}`,
      'Hires steps': hrSteps > 0 ? hrSteps : null,
      'Hires upscaler': upscaler,
      'Hires sampler': hrSampler && hrSampler !== 'Use same sampler' ? hrSampler : null,
    },
    notes,
  };
}

/** Upscales first-pass images to the plan's size (Lanczos, or nearest for `Nearest`; cover-crop when both sides were given). */
export async function upscaleForHires(images: RawImage[], plan: HiresPlan): Promise<RawImage[]> {
  const out: RawImage[] = [];
  for (const im of images) {
    const { data, info } = await sharp(Buffer.from(im.data.buffer, im.data.byteOffset, im.data.byteLength), { raw: { width: im.width, height: im.height, channels: im.channels } })
      .removeAlpha()
      .resize(plan.width, plan.height, { fit: plan.crop ? 'cover' : 'fill', kernel: plan.upscaler === 'Nearest' ? 'nearest' : 'lanczos3' })
      .raw()
      .toBuffer({ resolveWithObject: true });
    out.push({ width: info.width, height: info.height, channels: 3, data: new Uint8Array(data.buffer, data.byteOffset, data.length) });
  }
  return out;
}
