/**
 * A1111's hires fix plan (txt2img `enable_hr`, v1.10 `calculate_target_resolution` and `sample_hr_pass`), the
 * one rule the pipeline and the server follow: the target size, where the upscale happens (latent upscalers
 * resize the first pass's latents, image upscalers its decoded pixels), the second pass's steps, sampler,
 * prompts and denoising, and the infotext entries it adds.
 */
import type { InfotextValue } from '../image/png-info.ts';
import { UserError } from '../util/errors.ts';

/** Largest side a hires target may have; the server's pixel caps usually stop a request well before this. */
export const HIRES_MAX_SIDE = 8192;

export type LatentUpscaleMode = 'bilinear' | 'nearest' | 'nearest-exact';

/**
 * A1111's latent upscalers (`shared.latent_upscale_modes`) and the resize each one runs here. The bicubic and
 * antialiased variants run as bilinear (noted in the plan).
 */
export const LATENT_UPSCALERS: Readonly<Record<string, { mode: LatentUpscaleMode; exact: boolean }>> = {
  Latent: { mode: 'bilinear', exact: true },
  'Latent (antialiased)': { mode: 'bilinear', exact: false },
  'Latent (bicubic)': { mode: 'bilinear', exact: false },
  'Latent (bicubic antialiased)': { mode: 'bilinear', exact: false },
  'Latent (nearest)': { mode: 'nearest', exact: true },
  'Latent (nearest-exact)': { mode: 'nearest-exact', exact: true },
};

/** Image upscalers done in pixel space; 'None' resizes with Lanczos as A1111 does. */
export const PIXEL_UPSCALERS = ['None', 'Lanczos', 'Nearest'] as const;

/** The request's hires fields (A1111 names in comments). */
export interface HiresRequest {
  /** hr_scale */
  scale: number;
  /** hr_resize_x / hr_resize_y (0 = from the scale or the other side) */
  resizeX: number;
  resizeY: number;
  /** hr_upscaler; null = A1111's default 'Latent' */
  upscaler: string | null;
  /** hr_second_pass_steps; 0 = the first pass's steps */
  secondPassSteps: number;
  /** denoising_strength; null = 0.7 (A1111's UI default) */
  denoisingStrength: number | null;
  /** hr_sampler_name / hr_scheduler; null or 'Use same …' = the first pass's */
  sampler?: string | null;
  scheduler?: string | null;
  /** hr_prompt / hr_negative_prompt; '' = the first pass's */
  prompt?: string;
  negativePrompt?: string;
  /** hr_checkpoint_name: another checkpoint for the second pass (not available; noted) */
  checkpoint?: string | null;
}

export interface HiresPlan {
  /** Size of the second pass and of the final images (the target floored to multiples of 8, as the latents are). */
  width: number;
  height: number;
  /** Crop to the target aspect when both resize sides were given (A1111's truncate_x/y). */
  crop: boolean;
  steps: number;
  denoising: number;
  upscaler: string;
  /** 'latent': resize the first pass's latents with `latentMode`; 'pixel': decode, resize the image, encode. */
  space: 'latent' | 'pixel';
  latentMode: LatentUpscaleMode | null;
  /** Image kernel for the pixel space: Lanczos, or nearest for 'Nearest'. */
  pixelKernel: 'lanczos3' | 'nearest';
  sampler: string | null;
  scheduler: string | null;
  prompt: string | null;
  negativePrompt: string | null;
  infotext: Record<string, InfotextValue>;
  notes: string[];
}

const floor8 = (v: number) => Math.max(8, Math.floor(v / 8) * 8);

/** The plan for a first pass of `width` × `height` at `steps` steps. */
export function planHires(r: HiresRequest, width: number, height: number, steps: number): HiresPlan {
  let tw: number;
  let th: number;
  let crop = false;
  if (r.resizeX === 0 && r.resizeY === 0) {
    if (!(r.scale > 0)) throw new UserError(`hr_scale must be above 0, got ${r.scale}`, { status: 422 });
    tw = Math.trunc(width * r.scale);
    th = Math.trunc(height * r.scale);
  } else if (r.resizeY === 0) {
    tw = r.resizeX;
    th = Math.trunc((r.resizeX * height) / width);
  } else if (r.resizeX === 0) {
    tw = Math.trunc((r.resizeY * width) / height);
    th = r.resizeY;
  } else {
    tw = r.resizeX;
    th = r.resizeY;
    crop = true;
  }
  if (tw > HIRES_MAX_SIDE || th > HIRES_MAX_SIDE) throw new UserError(`hires fix target ${tw}x${th} is over ${HIRES_MAX_SIDE} pixels on a side`, { status: 422 });
  const notes: string[] = [];
  const upscaler = r.upscaler ?? 'Latent';
  const latent = LATENT_UPSCALERS[upscaler];
  if (latent && !latent.exact) notes.push(`Hires upscaler '${upscaler}' ran as bilinear latent resize`);
  // A crop to both given sides is an image operation; A1111 does it in pixel space too for latent upscalers.
  const space = latent && !crop ? 'latent' : 'pixel';
  if (latent && crop) notes.push(`Hires upscaler '${upscaler}' with both hr_resize_x and hr_resize_y: resized and cropped in pixel space (Lanczos)`);
  if (!latent && !(PIXEL_UPSCALERS as readonly string[]).includes(upscaler)) notes.push(`Hires upscaler '${upscaler}' is not available; used Lanczos`);
  let denoising = r.denoisingStrength;
  if (denoising === null) {
    denoising = 0.7;
    notes.push('enable_hr without denoising_strength: used 0.7 (the A1111 UI default)');
  }
  if (!(denoising >= 0 && denoising <= 1)) throw new UserError(`denoising_strength must be between 0 and 1, got ${denoising}`, { status: 422 });
  if (r.checkpoint && r.checkpoint !== 'Use same checkpoint') notes.push('hr_checkpoint_name is not available; the same checkpoint was used');
  const sampler = r.sampler && r.sampler !== 'Use same sampler' ? r.sampler : null;
  const scheduler = r.scheduler && r.scheduler !== 'Use same scheduler' ? r.scheduler : null;
  const prompt = r.prompt ? r.prompt : null;
  const negativePrompt = r.negativePrompt ? r.negativePrompt : null;
  const byScale = r.resizeX === 0 && r.resizeY === 0;
  return {
    width: floor8(tw),
    height: floor8(th),
    crop,
    steps: r.secondPassSteps > 0 ? r.secondPassSteps : steps,
    denoising,
    upscaler,
    space,
    latentMode: space === 'latent' && latent ? latent.mode : null,
    pixelKernel: upscaler === 'Nearest' ? 'nearest' : 'lanczos3',
    sampler,
    scheduler,
    prompt,
    negativePrompt,
    infotext: {
      'Hires prompt': prompt,
      'Hires negative prompt': negativePrompt,
      'Hires upscale': byScale ? r.scale : null,
      'Hires resize': byScale ? null : `${r.resizeX}x${r.resizeY}`,
      'Hires steps': r.secondPassSteps > 0 ? r.secondPassSteps : null,
      'Hires upscaler': upscaler,
      'Hires sampler': sampler,
      'Hires schedule type': scheduler,
    },
    notes,
  };
}

/**
 * A1111's legacy `firstphase_width/height`: when set, the first pass runs at that size and the request's
 * width × height becomes the hires target.
 */
export function applyFirstphase(r: { width: number; height: number; firstphaseWidth: number; firstphaseHeight: number }): { width: number; height: number; resizeX: number; resizeY: number } | null {
  if (r.firstphaseWidth === 0 && r.firstphaseHeight === 0) return null;
  const width = r.firstphaseWidth || r.width;
  const height = r.firstphaseHeight || r.height;
  return { width, height, resizeX: r.width, resizeY: r.height };
}
