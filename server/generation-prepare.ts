/**
 * The first step of txt2img / img2img, done before queueing so that a bad request fails at once: the body
 * through its schema into a typed request, an `infotext` filling the fields the client left unset, the legacy
 * firstphase fields, scripts, the work caps, the prompts' parse budget, and the init images and mask decoded.
 */
import { parseInfotext } from '../engine/image/png-info.ts';
import type { RawImage } from './backend.ts';
import type { ServerContext } from './context.ts';
import { HttpError, ValidationError } from './errors.ts';
import { applyFirstphaseFields, planHires } from './hires.ts';
import { decodeImageInput, prepareMask, resizeForImg2img, toRaw } from './images.ts';
import { overLimit } from './limits.ts';
import { checkPrompts } from './prompt-check.ts';
import { img2imgRequest, txt2imgRequest, type GenerationRequest, type Img2ImgRequest, type Txt2ImgRequest } from './requests/generation.ts';
import { parseOptionValues } from './requests/options.ts';
import { fieldsSet, parseRequest } from './schema.ts';

export type GenerationKind = 'txt2img' | 'img2img';

/** A validated request with its pictures decoded (img2img: at the request size, or the first picture's for "only masked"). */
export type Prepared =
  | { kind: 'txt2img'; req: Txt2ImgRequest; initImages: []; mask: null }
  | { kind: 'img2img'; req: Img2ImgRequest; initImages: RawImage[]; mask: RawImage | null };

/** A validated request of either kind. */
export type TypedRequest = { kind: 'txt2img'; req: Txt2ImgRequest } | { kind: 'img2img'; req: Img2ImgRequest };

const MAX_SIDE = 8192;
// A1111's UI stops at 64; a blur radius far past the image size only burns time.
const MAX_MASK_BLUR = 256;

/** The request fields an infotext can fill (both request kinds have them). */
interface InfotextFields {
  prompt: string;
  negative_prompt: string;
  steps: number;
  sampler_name: string | null;
  scheduler: string | null;
  cfg_scale: number;
  seed: number;
  width: number;
  height: number;
  denoising_strength: number | null;
  subseed: number;
  subseed_strength: number;
  override_settings: Record<string, unknown> | null;
}

/** Infotext keys that fill request fields the client left unset (A1111 `apply_infotext`); they join `set`. */
function applyInfotext(req: InfotextFields, set: Set<string>, text: string): void {
  const p = parseInfotext(text);
  const fill = <K extends keyof InfotextFields>(field: K, v: InfotextFields[K] | undefined) => {
    if (!set.has(field) && v !== undefined) {
      req[field] = v;
      set.add(field);
    }
  };
  const str = (key: string) => (p[key] === undefined ? undefined : String(p[key]));
  const num = (key: string, conv: (x: string) => number) => {
    const v = str(key);
    const n = v === undefined ? NaN : conv(v);
    return Number.isFinite(n) ? n : undefined;
  };
  const int = (key: string) => num(key, (x) => parseInt(x, 10));
  fill('prompt', str('Prompt'));
  fill('negative_prompt', str('Negative prompt'));
  fill('steps', int('Steps'));
  fill('sampler_name', str('Sampler'));
  if (p['Schedule type'] !== 'Automatic') fill('scheduler', str('Schedule type'));
  fill('cfg_scale', num('CFG scale', Number));
  fill('seed', int('Seed'));
  fill('width', int('Size-1'));
  fill('height', int('Size-2'));
  fill('denoising_strength', num('Denoising strength', Number));
  fill('subseed', int('Variation seed'));
  fill('subseed_strength', num('Variation seed strength', Number));
  const clip = num('Clip skip', Number);
  if (clip !== undefined && clip > 1) {
    const o = req.override_settings ?? {};
    if (!('CLIP_stop_at_last_layers' in o)) req.override_settings = { ...o, CLIP_stop_at_last_layers: clip };
  }
}

/** `override_settings` refused before queueing when a known option has a value of the wrong type. */
function checkOverrides(req: GenerationRequest): void {
  if (req.override_settings) parseOptionValues(req.override_settings, ['body', 'override_settings']);
}

/** A1111's `get_script` and `init_script_args`: no scripts exist here, so any name is "not found". */
function checkScripts(req: GenerationRequest): void {
  // null and "" mean no script, as A1111's `if script_name is None or script_name == ""`.
  if (req.script_name) throw new HttpError(422, `Script '${req.script_name}' not found`);
  for (const k of Object.keys(req.alwayson_scripts)) throw new HttpError(422, `always on script ${k} not found`);
}

const rangeError = (k: string, v: number, lo: number, hi: number) =>
  new ValidationError([{ loc: ['body', k], msg: `${k} must be between ${lo} and ${hi}, got ${v}`, type: 'value_error.number.range' }]);

function range(k: string, v: number, lo: number, hi: number): void {
  if (v < lo || v > hi) throw rangeError(k, v, lo, hi);
}

/** Field ranges and the work caps of server/limits.ts; every refusal is a 422 naming the field and the limit. */
function checkWork(ctx: ServerContext, p: TypedRequest): void {
  const L = ctx.limits;
  const r = p.req;
  range('width', r.width, 8, MAX_SIDE);
  range('height', r.height, 8, MAX_SIDE);
  const pixels = r.width * r.height;
  if (pixels > L.maxPixels) throw overLimit('width', `width × height is ${r.width}×${r.height} = ${pixels} pixels, over the limit of ${L.maxPixels}`, 'maxPixels');
  if (r.steps > L.maxSteps) throw overLimit('steps', `steps is ${r.steps}, over the limit of ${L.maxSteps}`, 'maxSteps');
  range('steps', r.steps, 1, L.maxSteps);
  range('batch_size', r.batch_size, 1, L.maxImages);
  range('n_iter', r.n_iter, 1, L.maxImages);
  if (r.batch_size * r.n_iter > L.maxImages) {
    throw overLimit('n_iter', `batch_size × n_iter is ${r.batch_size * r.n_iter} images, over the limit of ${L.maxImages}`, 'maxImages');
  }
  // Attention memory grows with the batch and the square of the pixels (see server/limits.ts).
  if (r.batch_size * (pixels / L.maxPixels) ** 2 > 1) {
    const most = Math.max(1, Math.floor((L.maxPixels / pixels) ** 2));
    throw overLimit('batch_size', `batch_size ${r.batch_size} at ${r.width}×${r.height} needs more memory than the limit allows; at most ${most} per batch (use n_iter for more)`, 'maxPixels');
  }
  if (r.seed_resize_from_w > 0) range('seed_resize_from_w', r.seed_resize_from_w, 1, MAX_SIDE);
  if (r.seed_resize_from_h > 0) range('seed_resize_from_h', r.seed_resize_from_h, 1, MAX_SIDE);
  const prompts: [string, string][] = [
    ['prompt', r.prompt],
    ['negative_prompt', r.negative_prompt],
  ];
  if (p.kind === 'txt2img') prompts.push(['hr_prompt', p.req.hr_prompt], ['hr_negative_prompt', p.req.hr_negative_prompt]);
  for (const [k, v] of prompts) {
    if (v.length > L.maxPromptChars) throw overLimit(k, `${k} has ${v.length} characters, over the limit of ${L.maxPromptChars}`, 'maxPromptChars');
  }
  if (p.kind === 'img2img') {
    const q = p.req;
    if (q.mask_blur !== null) range('mask_blur', q.mask_blur, 0, MAX_MASK_BLUR);
    range('mask_blur_x', q.mask_blur_x, 0, MAX_MASK_BLUR);
    range('mask_blur_y', q.mask_blur_y, 0, MAX_MASK_BLUR);
    range('inpaint_full_res_padding', q.inpaint_full_res_padding, 0, MAX_SIDE);
    if (q.init_images && q.init_images.length > L.maxImages) throw overLimit('init_images', `${q.init_images.length} init images, over the limit of ${L.maxImages}`, 'maxImages');
  }
  if (p.kind === 'txt2img' && p.req.enable_hr) {
    const q = p.req;
    if (q.hr_second_pass_steps > L.maxSteps) throw overLimit('hr_second_pass_steps', `hr_second_pass_steps is ${q.hr_second_pass_steps}, over the limit of ${L.maxSteps}`, 'maxSteps');
    range('hr_second_pass_steps', q.hr_second_pass_steps, 0, L.maxSteps);
    const plan = planHires(q);
    const target = plan.width * plan.height;
    if (target > L.maxPixels) throw overLimit('hr_scale', `the hires fix target ${plan.width}×${plan.height} = ${target} pixels is over the limit of ${L.maxPixels}`, 'maxPixels');
    if (q.batch_size * (target / L.maxPixels) ** 2 > 1) throw overLimit('batch_size', `batch_size ${q.batch_size} at the hires fix target ${plan.width}×${plan.height} needs more memory than the limit allows`, 'maxPixels');
  }
}

/** img2img's pictures: decoded, sized (the request size, or the first picture's for "only masked"), the mask inverted and blurred. */
async function decodeImg2img(ctx: ServerContext, req: Img2ImgRequest, init: string[]): Promise<{ initImages: RawImage[]; mask: RawImage | null }> {
  const policy = ctx.imagePolicy();
  const maskText = req.mask !== null && req.mask !== '' ? req.mask : null;
  // "Only masked" works on the pictures at their own size (the first one's); the area is cut out when the job runs.
  const onlyMasked = req.inpaint_full_res && maskText !== null;
  const initImages: RawImage[] = [];
  for (const s of init) {
    const raw = await toRaw(await decodeImageInput(s, policy), 3, policy.maxPixels);
    const first = initImages[0];
    const size = onlyMasked ? (first ?? raw) : req;
    initImages.push(onlyMasked && !first ? raw : await resizeForImg2img(raw, size.width, size.height, req.resize_mode));
  }
  if (maskText === null) return { initImages, mask: null };
  const raw = await toRaw(await decodeImageInput(maskText, policy), 1, policy.maxPixels);
  const first = initImages[0];
  const sized = onlyMasked && first ? await resizeForImg2img(raw, first.width, first.height, req.resize_mode) : await resizeForImg2img(raw, req.width, req.height, 0);
  const blur = req.mask_blur;
  const mask = await prepareMask(sized, req.inpainting_mask_invert === 1, blur ?? req.mask_blur_x, blur ?? req.mask_blur_y);
  return { initImages, mask };
}

/**
 * A txt2img that names no size (nor its infotext, nor the legacy firstphase fields) is made at the size the
 * checkpoint's config says it was trained at; A1111's 512 stays where the config says nothing. A 512² picture
 * from a 64² model is a field of small shapes at 64 times the work, and a 512² one from a 768² SD 2 model is
 * the broken picture A1111 users learn to avoid.
 */
function nativeSizeUnlessGiven(ctx: ServerContext, req: Txt2ImgRequest, set: Set<string>): void {
  if (['width', 'height', 'firstphase_width', 'firstphase_height'].some((k) => set.has(k))) return;
  const wanted = req.override_settings?.['sd_model_checkpoint'];
  const native = ctx.checkpoints.planned(typeof wanted === 'string' ? wanted : null)?.resolution;
  if (native) req.width = req.height = native;
}

/** Validation and image decoding of one txt2img or img2img body. */
export async function prepareGeneration(ctx: ServerContext, kind: GenerationKind, body: unknown): Promise<Prepared> {
  const set = fieldsSet(body);
  if (kind === 'txt2img') {
    const req = parseRequest(txt2imgRequest, body);
    if (req.infotext) applyInfotext(req, set, req.infotext);
    nativeSizeUnlessGiven(ctx, req, set);
    applyFirstphaseFields(req);
    checkScripts(req);
    checkOverrides(req);
    checkWork(ctx, { kind, req });
    await checkPrompts(req, req.steps);
    return { kind, req, initImages: [], mask: null };
  }
  const req = parseRequest(img2imgRequest, body);
  // A1111 looks for the init images before anything else.
  const init = req.init_images;
  if (!init || init.length === 0) throw new HttpError(404, 'Init image not found');
  if (req.infotext) applyInfotext(req, set, req.infotext);
  checkScripts(req);
  checkOverrides(req);
  checkWork(ctx, { kind, req });
  await checkPrompts(req, req.steps);
  return { kind, req, ...(await decodeImg2img(ctx, req, init)) };
}
