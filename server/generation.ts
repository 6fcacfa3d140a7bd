/**
 * txt2img / img2img as A1111's API runs them: validate the request, resolve everything that is not math
 * (seeds, sampler names, styles, `<lora:…>` tags, checkpoint, VAE), run the backend once per batch inside one
 * queue job, then encode images with their infotexts and answer `{images, parameters, info}`.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join, resolve, relative, isAbsolute } from 'node:path';
import { randomInt } from 'node:crypto';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import { parseInfotext, type InfotextValue } from '../engine/image/png-info.ts';
import { generationInfotext, namedHashes, scheduleTypeLabel, type NamedHash } from '../engine/generate/infotext.ts';
import { UserError } from '../engine/util/errors.ts';
import type { GenerationHooks, GenerationOutput, GenerationParams, Img2ImgParams, LoraRef, RawImage, RefinerParams } from './backend.ts';
import type { ServerContext } from './context.ts';
import { HttpError, ValidationError } from './errors.ts';
import { overLimit } from './limits.ts';
import { checkPrompts } from './prompt-check.ts';
import { checkSamplesFormat, decodeImageInput, encodeImage, makeGrid, prepareMask, resizeForImg2img, toRaw } from './images.ts';
import { OPTION_DEFAULTS, coerceOption, RESTRICTED_OPTIONS } from './options.ts';
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';
import type { JobContext, JobHandle } from './queue.ts';
import { img2imgModel, txt2imgModel } from './requests.ts';
import { SAMPLERS, resolveSampler } from './samplers.ts';
import { fieldsSet, validateModel } from './schema.ts';
import { applyStyle, readStyles } from './styles.ts';
import { applyFirstphaseFields, planHires, upscaleForHires } from './hires.ts';
import { cutArea, inpaintArea, pasteArea, type InpaintArea } from '../engine/image/inpaint-area.ts';
import type { RemoteJob } from './distributed/front-queue.ts';
import { remoteGeneration } from './distributed/generation-work.ts';

export type GenerationKind = 'txt2img' | 'img2img';

export interface GenerationResponse {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

type Req = Record<string, unknown>;

const MAX_SIDE = 8192;
// A1111's UI stops at 64; a blur radius far past the image size only burns time.
const MAX_MASK_BLUR = 256;

/** Infotext keys that fill request fields the client left unset (A1111 `apply_infotext`). */
function applyInfotext(req: Req, set: Set<string>, text: string): void {
  const p = parseInfotext(text);
  const put = (field: string, v: unknown, conv: (x: string) => unknown = (x) => x) => {
    if (set.has(field) || v === undefined) return;
    const c = conv(String(v));
    if (typeof c === 'number' && !Number.isFinite(c)) return;
    req[field] = c;
  };
  put('prompt', p['Prompt']);
  put('negative_prompt', p['Negative prompt']);
  put('steps', p['Steps'], (x) => parseInt(x, 10));
  put('sampler_name', p['Sampler']);
  if (p['Schedule type'] !== 'Automatic') put('scheduler', p['Schedule type']);
  put('cfg_scale', p['CFG scale'], Number);
  put('seed', p['Seed'], (x) => parseInt(x, 10));
  put('width', p['Size-1'], (x) => parseInt(x, 10));
  put('height', p['Size-2'], (x) => parseInt(x, 10));
  put('denoising_strength', p['Denoising strength'], Number);
  put('subseed', p['Variation seed'], (x) => parseInt(x, 10));
  put('subseed_strength', p['Variation seed strength'], Number);
  const clip = Number(p['Clip skip']);
  if (Number.isFinite(clip) && clip > 1) {
    const o = (req['override_settings'] as Req | null) ?? {};
    if (!('CLIP_stop_at_last_layers' in o)) req['override_settings'] = { ...o, CLIP_stop_at_last_layers: clip };
  }
}

function checkScripts(req: Req): void {
  if (req['script_name']) throw new HttpError(422, `Script '${String(req['script_name'])}' not found`);
  const on = (req['alwayson_scripts'] ?? {}) as Req;
  for (const k of Object.keys(on)) throw new HttpError(422, `always on script ${k} not found`);
}

/** Field ranges and the work caps of server/limits.ts; every refusal is a 422 naming the field and the limit. */
function checkWork(ctx: ServerContext, kind: GenerationKind, req: Req): void {
  const L = ctx.limits;
  const num = (k: string) => req[k] as number;
  const range = (k: string, lo: number, hi: number) => {
    const v = num(k);
    if (v < lo || v > hi) throw new ValidationError([{ loc: ['body', k], msg: `${k} must be between ${lo} and ${hi}, got ${v}`, type: 'value_error.number.range' }]);
  };
  range('width', 8, MAX_SIDE);
  range('height', 8, MAX_SIDE);
  const pixels = num('width') * num('height');
  if (pixels > L.maxPixels) throw overLimit('width', `width × height is ${num('width')}×${num('height')} = ${pixels} pixels, over the limit of ${L.maxPixels}`, 'maxPixels');
  if (num('steps') > L.maxSteps) throw overLimit('steps', `steps is ${num('steps')}, over the limit of ${L.maxSteps}`, 'maxSteps');
  range('steps', 1, L.maxSteps);
  range('batch_size', 1, L.maxImages);
  range('n_iter', 1, L.maxImages);
  if (num('batch_size') * num('n_iter') > L.maxImages) {
    throw overLimit('n_iter', `batch_size × n_iter is ${num('batch_size') * num('n_iter')} images, over the limit of ${L.maxImages}`, 'maxImages');
  }
  // Attention memory grows with the batch and the square of the pixels (see server/limits.ts).
  if (num('batch_size') * (pixels / L.maxPixels) ** 2 > 1) {
    const most = Math.max(1, Math.floor((L.maxPixels / pixels) ** 2));
    throw overLimit('batch_size', `batch_size ${num('batch_size')} at ${num('width')}×${num('height')} needs more memory than the limit allows; at most ${most} per batch (use n_iter for more)`, 'maxPixels');
  }
  for (const k of ['seed_resize_from_w', 'seed_resize_from_h']) if (num(k) > 0) range(k, 1, MAX_SIDE);
  for (const k of ['prompt', 'negative_prompt', 'hr_prompt', 'hr_negative_prompt']) {
    const v = req[k];
    if (typeof v === 'string' && v.length > L.maxPromptChars) throw overLimit(k, `${k} has ${v.length} characters, over the limit of ${L.maxPromptChars}`, 'maxPromptChars');
  }
  if (kind === 'img2img') {
    for (const k of ['mask_blur', 'mask_blur_x', 'mask_blur_y']) if (req[k] != null) range(k, 0, MAX_MASK_BLUR);
    range('inpaint_full_res_padding', 0, MAX_SIDE);
    const init = req['init_images'] as string[] | null;
    if (init && init.length > L.maxImages) throw overLimit('init_images', `${init.length} init images, over the limit of ${L.maxImages}`, 'maxImages');
  }
  if (kind === 'txt2img' && req['enable_hr']) {
    const hrSteps = num('hr_second_pass_steps');
    if (hrSteps > L.maxSteps) throw overLimit('hr_second_pass_steps', `hr_second_pass_steps is ${hrSteps}, over the limit of ${L.maxSteps}`, 'maxSteps');
    range('hr_second_pass_steps', 0, L.maxSteps);
    const plan = planHires(req, num('width'), num('height'), num('steps'));
    const target = plan.width * plan.height;
    if (target > L.maxPixels) throw overLimit('hr_scale', `the hires fix target ${plan.width}×${plan.height} = ${target} pixels is over the limit of ${L.maxPixels}`, 'maxPixels');
    if (num('batch_size') * (target / L.maxPixels) ** 2 > 1) throw overLimit('batch_size', `batch_size ${num('batch_size')} at the hires fix target ${plan.width}×${plan.height} needs more memory than the limit allows`, 'maxPixels');
  }
}

/** Effective options for one job: global options with `override_settings` applied (unknown keys noted, restricted ones ignored). */
function effectiveOptions(ctx: ServerContext, req: Req, notes: string[]): Record<string, unknown> {
  const opts: Record<string, unknown> = ctx.options.all();
  const over = (req['override_settings'] ?? {}) as Req;
  for (const [k, v] of Object.entries(over)) {
    if (!(k in OPTION_DEFAULTS)) {
      notes.push(`override_settings: unknown option '${k}' ignored`);
      continue;
    }
    if (RESTRICTED_OPTIONS.has(k)) continue;
    opts[k] = coerceOption(k, v);
  }
  return opts;
}

function randomSeed(): number {
  return randomInt(0, 2 ** 32 - 1);
}

function outputDir(ctx: ServerContext, opts: Record<string, unknown>, kind: GenerationKind): string {
  const configured = String(opts['outdir_samples'] || opts[`outdir_${kind}_samples`] || `outputs/${kind}-images`);
  const dir = resolve(ctx.layout.dataDir, configured);
  const rel = relative(ctx.layout.dataDir, dir);
  if (rel.startsWith('..') || isAbsolute(rel)) {
    throw new UserError(`option outdir_${kind}_samples: '${configured}' is outside the data folder ${ctx.layout.dataDir}`);
  }
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return opts['save_to_dirs'] ? join(dir, `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`) : dir;
}

async function saveImage(dir: string, label: string, ext: string, bytes: Buffer): Promise<string> {
  await mkdir(dir, { recursive: true });
  const names = await readdir(dir).catch(() => [] as string[]);
  let next = 0;
  for (const n of names) {
    const m = /^(\d+)-/.exec(n);
    if (m) next = Math.max(next, parseInt(m[1]!, 10) + 1);
  }
  const path = join(dir, `${String(next).padStart(5, '0')}-${label}.${ext}`);
  await writeBufferAtomic(path, bytes);
  return path;
}

export interface Prepared {
  req: Req;
  initImages: RawImage[];
  mask: RawImage | null;
}

/** Validation and image decoding, done before queueing so bad requests fail at once. */
export async function prepareGeneration(ctx: ServerContext, kind: GenerationKind, body: unknown): Promise<Prepared> {
  const req = validateModel<Req>(kind === 'txt2img' ? txt2imgModel : img2imgModel, body);
  const set = fieldsSet(body);
  if (typeof req['infotext'] === 'string' && req['infotext'] !== '') applyInfotext(req, set, req['infotext']);
  if (kind === 'txt2img') applyFirstphaseFields(req);
  checkScripts(req);
  checkWork(ctx, kind, req);
  await checkPrompts(req, req['steps'] as number);
  const initImages: RawImage[] = [];
  let mask: RawImage | null = null;
  if (kind === 'img2img') {
    const init = req['init_images'] as string[] | null;
    if (!init || init.length === 0) throw new HttpError(404, 'Init image not found');
    const policy = ctx.imagePolicy();
    const w = req['width'] as number;
    const h = req['height'] as number;
    // "Only masked" works on the pictures at their own size (the first one's); the area is cut out when the job runs.
    const onlyMasked = req['inpaint_full_res'] === true && typeof req['mask'] === 'string' && req['mask'] !== '';
    for (const s of init) {
      const raw = await toRaw(await decodeImageInput(s, policy), 3, policy.maxPixels);
      const first = initImages[0];
      initImages.push(onlyMasked ? (first ? await resizeForImg2img(raw, first.width, first.height, req['resize_mode'] as number) : raw) : await resizeForImg2img(raw, w, h, req['resize_mode'] as number));
    }
    if (typeof req['mask'] === 'string' && req['mask'] !== '') {
      const raw = await toRaw(await decodeImageInput(req['mask'], policy), 1, policy.maxPixels);
      const sized = onlyMasked ? await resizeForImg2img(raw, initImages[0]!.width, initImages[0]!.height, req['resize_mode'] as number) : await resizeForImg2img(raw, w, h, 0);
      const blur = req['mask_blur'] as number | null;
      mask = await prepareMask(sized, (req['inpainting_mask_invert'] as number) === 1, blur ?? (req['mask_blur_x'] as number), blur ?? (req['mask_blur_y'] as number));
    }
  }
  return { req, initImages, mask };
}

/**
 * Queues the generation for `owner` (the requesting user, see JobQueue); the handle's promise gives the
 * A1111 response. A `force_task_id` that another waiting or running job has is refused with 409.
 */
export function submitGeneration(ctx: ServerContext, kind: GenerationKind, prepared: Prepared, owner: string | null = null): JobHandle<GenerationResponse> {
  const req = prepared.req;
  const id = typeof req['force_task_id'] === 'string' && req['force_task_id'] !== '' ? req['force_task_id'] : undefined;
  const work: RemoteJob<GenerationResponse> = { kind: `scripts_${kind}`, run: (job) => runGeneration(ctx, kind, prepared, job), remote: remoteGeneration(kind, prepared) };
  return ctx.queue.submit(work, { id, owner });
}

/**
 * img2img with `inpaint_full_res` ("only masked"): the pictures and mask arrive at the pictures' size; the area
 * around the mask is cut out at the request size for the backend, and the originals are kept to paste the
 * results back into (engine/image/inpaint-area.ts). A blank mask runs plain img2img, as A1111.
 */
async function cutInpaintArea(prepared: Prepared, notes: string[]): Promise<Prepared & { onlyMasked: { area: InpaintArea; originals: RawImage[] } | null }> {
  const { req, initImages, mask } = prepared;
  const w = req['width'] as number;
  const h = req['height'] as number;
  if (req['inpaint_full_res'] !== true || !mask) return { ...prepared, onlyMasked: null };
  const area = inpaintArea(mask, req['inpaint_full_res_padding'] as number, w, h);
  if (!area) {
    notes.push('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.');
    const images = await Promise.all(initImages.map((im) => resizeForImg2img(im, w, h, req['resize_mode'] as number)));
    return { req, initImages: images, mask: null, onlyMasked: null };
  }
  return {
    req,
    initImages: initImages.map((im) => cutArea(im, area, w, h) as RawImage),
    mask: cutArea(mask, area, w, h) as RawImage,
    onlyMasked: { area, originals: initImages },
  };
}

/** Runs one generation inside a queue job: in this process, or on a worker (server/distributed/handlers.ts). */
export async function runGeneration(ctx: ServerContext, kind: GenerationKind, prepared: Prepared, job: JobContext): Promise<GenerationResponse> {
  const notes: string[] = [];
  const { req, initImages, mask, onlyMasked } = await cutInpaintArea(prepared, notes);
  const opts = effectiveOptions(ctx, req, notes);
  const format = checkSamplesFormat(opts['samples_format']);
  const overrideCkpt = ((req['override_settings'] ?? {}) as Req)['sd_model_checkpoint'];
  const ckpt = await ctx.checkpoints.ensureLoaded(typeof overrideCkpt === 'string' ? overrideCkpt : null, opts['sd_vae'], notes);
  const vae = ctx.checkpoints.vaeFor(ckpt, opts['sd_vae'], notes);

  // Sampler: A1111 uses sampler_index when sampler_name is null or empty; names the backend lacks fall back.
  const available = ctx.backend.samplers ? SAMPLERS.filter((s) => ctx.backend.samplers!.includes(s.name)) : SAMPLERS;
  const sampler = resolveSampler((req['sampler_name'] as string | null) || (req['sampler_index'] as string), req['scheduler'] as string | null, available.length ? available : SAMPLERS);
  notes.push(...sampler.notes);

  // Prompts: styles first, then extra-network tags from the first prompt (A1111 uses it for the whole batch).
  let prompt = req['prompt'] as string;
  let negative = req['negative_prompt'] as string;
  const styleNames = (req['styles'] as string[] | null) ?? [];
  if (styleNames.length > 0) {
    const styles = await readStyles(ctx.layout.stylesPath);
    for (const n of styleNames) {
      const st = styles.find((s) => s.name === n);
      if (!st) continue; // A1111 ignores unknown style names
      prompt = applyStyle(prompt, st.prompt);
      negative = applyStyle(negative, st.negative_prompt);
    }
  }
  const sdLora = opts['sd_lora'];
  if (typeof sdLora === 'string' && sdLora !== 'None' && sdLora !== '' && !prompt.includes(`<lora:${sdLora}:`)) {
    prompt += `<lora:${sdLora}:${String(opts['extra_networks_default_multiplier'])}>`;
  }
  const parsed = extractPromptTags(prompt, { defaultMultiplier: Number(opts['extra_networks_default_multiplier'] ?? 1) });
  const bare = parsed.prompt;
  const loraTags = req['disable_extra_networks'] ? [] : parsed.loras;
  if (!req['disable_extra_networks']) for (const o of parsed.other) notes.push(`Skipping unknown extra network: ${o.type}`);
  const loras: LoraRef[] = [];
  const loraHashes: NamedHash[] = [];
  const notFound: string[] = [];
  let rescanned = false;
  for (const lt of loraTags) {
    let e = ctx.loras.resolve(lt.name);
    if (!e && !rescanned) {
      await ctx.loras.refresh(); // A1111 rescans before giving up on a name
      rescanned = true;
      e = ctx.loras.resolve(lt.name);
    }
    if (!e) {
      notFound.push(lt.name);
      continue;
    }
    loras.push({ name: lt.name, path: e.path, teMultiplier: lt.te, unetMultiplier: lt.unet, dynDim: lt.dyn ?? null });
    if (opts['lora_add_hashes_to_infotext']) loraHashes.push({ name: lt.name, hash: await ctx.loras.shortHash(e) });
  }
  if (notFound.length > 0) notes.push(`Lora not found: ${notFound.join(', ')}`);

  for (const [field, label] of [['restore_faces', 'restore_faces (face restoration)']] as const) {
    if (req[field]) notes.push(`${label} is not available in lora-scripts; ignored`);
  }
  const refiner = await resolveRefiner(ctx, req, opts);
  // With a hires fix the refiner joins the pass(es) the option names (A1111 `hires_fix_refiner_pass`).
  const refinerPass = String(opts['hires_fix_refiner_pass'] ?? 'second pass');
  const refinerIn = (pass: 'first pass' | 'second pass', hr: boolean) => (!hr || pass === refinerPass || refinerPass === 'both passes' ? refiner : null);
  if (kind === 'img2img' && (req['resize_mode'] as number) === 3) notes.push('resize_mode 3 (latent upscale) was done as resize_mode 0');

  const batchSize = req['batch_size'] as number;
  const nIter = req['n_iter'] as number;
  const count = batchSize * nIter;
  const seed = (req['seed'] as number) === -1 ? randomSeed() : (req['seed'] as number);
  const subseed = (req['subseed'] as number) === -1 ? randomSeed() : (req['subseed'] as number);
  const subseedStrength = req['subseed_strength'] as number;
  const allSeeds = Array.from({ length: count }, (_, i) => seed + (subseedStrength === 0 ? i : 0));
  const allSubseeds = Array.from({ length: count }, (_, i) => subseed + i);
  const clipSkip = Number(opts['CLIP_stop_at_last_layers']);
  const hires = kind === 'txt2img' && req['enable_hr'] ? planHires(req, req['width'] as number, req['height'] as number, req['steps'] as number) : null;
  if (hires) notes.push(...hires.notes);
  const denoising = kind === 'img2img' ? (req['denoising_strength'] as number) : hires ? hires.denoising : (req['denoising_strength'] as number | null);
  // txt2img writes a denoising strength into the infotext only when a hires pass used it.
  const infotextDenoising = kind === 'img2img' || hires ? denoising : null;
  // The second pass may name its own sampler and prompts; its LoRA tags are then its own (A1111 parses hr_prompt separately).
  const hrSampler = hires && (hires.sampler || hires.scheduler) ? resolveSampler(hires.sampler ?? sampler.sampler, hires.scheduler ?? sampler.scheduler, available.length ? available : SAMPLERS) : sampler;
  const hrTags = hires?.prompt ? extractPromptTags(hires.prompt, { defaultMultiplier: Number(opts['extra_networks_default_multiplier'] ?? 1) }) : null;
  const hrLoras: LoraRef[] = [];
  for (const lt of hrTags && !req['disable_extra_networks'] ? hrTags.loras : []) {
    const e = ctx.loras.resolve(lt.name);
    if (e) hrLoras.push({ name: lt.name, path: e.path, teMultiplier: lt.te, unetMultiplier: lt.unet, dynDim: lt.dyn ?? null });
    else if (!notFound.includes(lt.name)) notes.push(`Lora not found (hr_prompt): ${lt.name}`);
  }

  const infotextFor = (i: number, extra: Record<string, InfotextValue>): string =>
    generationInfotext({
      prompt,
      negativePrompt: negative,
      steps: req['steps'] as number,
      sampler: sampler.sampler,
      scheduleType: scheduleTypeLabel(sampler.sampler, sampler.scheduler),
      cfgScale: req['cfg_scale'] as number,
      imageCfgScale: req['image_cfg_scale'] as number | null,
      seed: allSeeds[i] ?? seed,
      width: req['width'] as number,
      height: req['height'] as number,
      modelHash: opts['add_model_hash_to_info'] ? ckpt.shortHash : null,
      model: opts['add_model_name_to_info'] ? stemOf(ckpt.name) : null,
      vae: opts['add_vae_name_to_info'] && vae ? stemOf(vae.name) : null,
      subseed: allSubseeds[i] ?? subseed,
      subseedStrength,
      seedResizeFromW: req['seed_resize_from_w'] as number,
      seedResizeFromH: req['seed_resize_from_h'] as number,
      denoisingStrength: infotextDenoising,
      clipSkip,
      ensd: Number(opts['eta_noise_seed_delta']),
      rng: String(opts['randn_source']),
      tiling: Boolean(req['tiling'] ?? opts['tiling']),
      hires: hires ? hires.infotext : null,
      loraHashes,
      extra,
      version: opts['add_version_to_infotext'] ? ctx.version : null,
    });

  job.progress({ jobNo: 0, jobCount: nIter, step: 0, total: req['steps'] as number });
  const images: string[] = [];
  const infotexts: string[] = [];
  const made: RawImage[] = [];
  const extraParams: Record<string, InfotextValue> = {};
  const saveDir = req['save_images'] && !req['do_not_save_samples'] ? outputDir(ctx, opts, kind) : null;
  for (let n = 0; n < nIter; n++) {
    if (job.stopRequest() === 'interrupt') break;
    job.progress({ jobNo: n, step: 0 });
    const seeds = allSeeds.slice(n * batchSize, (n + 1) * batchSize);
    const base: GenerationParams = {
      prompt: bare,
      negativePrompt: negative,
      seeds,
      subseeds: allSubseeds.slice(n * batchSize, (n + 1) * batchSize),
      subseedStrength,
      seedResizeFromW: req['seed_resize_from_w'] as number,
      seedResizeFromH: req['seed_resize_from_h'] as number,
      width: req['width'] as number,
      height: req['height'] as number,
      steps: req['steps'] as number,
      cfgScale: req['cfg_scale'] as number,
      sampler: sampler.sampler,
      scheduler: sampler.scheduler,
      clipSkip,
      loras,
      eta: (req['eta'] as number | null) ?? null,
      sChurn: (req['s_churn'] as number | null) ?? null,
      sTmin: (req['s_tmin'] as number | null) ?? null,
      sTmax: (req['s_tmax'] as number | null) ?? null,
      sNoise: (req['s_noise'] as number | null) ?? null,
      randnSource: String(opts['randn_source']),
      etaNoiseSeedDelta: Number(opts['eta_noise_seed_delta']),
      tiling: Boolean(req['tiling'] ?? opts['tiling']),
      options: Object.freeze({ ...opts }),
      refiner: refinerIn('first pass', !!hires),
    };
    const showPreview = Boolean(opts['live_previews_enable']);
    const hooks: GenerationHooks = {
      onStep: (step, total, preview) => job.progress({ step, total, preview: showPreview && preview ? preview : null }),
      shouldStop: () => job.stopRequest(),
    };
    let out: GenerationOutput;
    if (kind === 'txt2img') out = await ctx.backend.txt2img(base, hooks);
    else {
      const p: Img2ImgParams = {
        ...base,
        // One init image per output image: A1111 cycles through the given ones.
        initImages: seeds.map((_, i) => initImages[(n * batchSize + i) % initImages.length]!),
        mask,
        denoisingStrength: denoising as number,
        inpaintingFill: req['inpainting_fill'] as number,
        inpaintFullRes: req['inpaint_full_res'] as boolean,
        inpaintFullResPadding: req['inpaint_full_res_padding'] as number,
        initialNoiseMultiplier: (req['initial_noise_multiplier'] as number | null) ?? Number(opts['initial_noise_multiplier']),
        imageCfgScale: (req['image_cfg_scale'] as number | null) ?? null,
      };
      out = await ctx.backend.img2img(p, hooks);
    }
    if (out.images.length !== seeds.length) throw new Error(`backend returned ${out.images.length} images for a batch of ${seeds.length}`);
    if (onlyMasked) {
      const { area, originals } = onlyMasked;
      const images = out.images.map((im, i) => pasteArea(originals[(n * batchSize + i) % originals.length]!, im, area) as RawImage);
      out = { ...out, images, extraParams: { ...out.extraParams, 'Inpaint area': 'Only masked', 'Masked area padding': req['inpaint_full_res_padding'] as number } };
    }
    if (hires && job.stopRequest() !== 'interrupt') {
      // A1111 skips the second pass of an interrupted job but runs it after a skip.
      if (job.stopRequest() === 'skip') job.clearSkip();
      // Latent upscalers resize the first pass's latents in the backend; one that returns none gets the pixel path.
      const latentUpscale = hires.space === 'latent' && hires.latentMode && out.latents ? { batch: out.latents, mode: hires.latentMode } : null;
      if (hires.space === 'latent' && !latentUpscale) notes.push(`Hires upscaler '${hires.upscaler}' was done in pixel space (Lanczos): the backend returned no latents`);
      const second = await ctx.backend.img2img(
        {
          ...base,
          prompt: hrTags ? hrTags.prompt : base.prompt,
          negativePrompt: hires.negativePrompt ?? base.negativePrompt,
          loras: hrTags ? hrLoras : base.loras,
          refiner: refinerIn('second pass', true),
          width: hires.width,
          height: hires.height,
          steps: hires.steps,
          sampler: hrSampler.sampler,
          scheduler: hrSampler.scheduler,
          initImages: latentUpscale ? [] : await upscaleForHires(out.images, hires),
          initLatents: latentUpscale,
          mask: null,
          denoisingStrength: hires.denoising,
          inpaintingFill: 1,
          inpaintFullRes: false,
          inpaintFullResPadding: 0,
          initialNoiseMultiplier: 1,
          imageCfgScale: null,
        },
        hooks,
      );
      if (second.images.length !== seeds.length) throw new Error(`backend returned ${second.images.length} images for a batch of ${seeds.length}`);
      for (const note of second.notes ?? []) if (!notes.includes(note)) notes.push(note);
      out = { ...out, images: second.images, extraParams: { ...out.extraParams, ...refinerParams(second.extraParams) } };
    }
    if (hires && out.extraParams?.['Refiner'] !== undefined && refinerPass !== 'second pass') {
      out = { ...out, extraParams: { ...out.extraParams, 'Hires refiner': refinerPass } };
    }
    Object.assign(extraParams, out.extraParams ?? {});
    for (const note of out.notes ?? []) if (!notes.includes(note)) notes.push(note);
    for (let i = 0; i < out.images.length; i++) {
      const idx = n * batchSize + i;
      const text = infotextFor(idx, out.extraParams ?? {});
      const bytes = await encodeImage(out.images[i]!, format, opts['enable_pnginfo'] ? text : null, {
        jpegQuality: Number(opts['jpeg_quality']),
        webpLossless: Boolean(opts['webp_lossless']),
      });
      made.push(out.images[i]!);
      if (saveDir) await saveImage(saveDir, String(allSeeds[idx]!), format === 'jpeg' ? 'jpg' : format, bytes);
      if (req['send_images']) images.push(bytes.toString('base64'));
      infotexts.push(text);
    }
    const stop = job.stopRequest();
    if (stop === 'interrupt') break;
    if (stop === 'skip') job.clearSkip();
  }
  if (ctx.backend.currentCheckpoint() && !overrideCkpt) ctx.checkpoints.remember(ckpt);
  if (req['override_settings_restore_afterwards'] === false && req['override_settings']) {
    // A1111 then keeps the overrides as the new settings.
    const keepers = { ...(req['override_settings'] as Req) };
    delete keepers['sd_model_checkpoint'];
    for (const k of Object.keys(keepers)) if (!(k in OPTION_DEFAULTS)) delete keepers[k];
    ctx.options.setFromApi(keepers);
    if (typeof overrideCkpt === 'string') ctx.checkpoints.remember(ckpt);
    await ctx.options.save();
  }

  // A1111's API makes a grid only when saving (do_not_save_grid = !save_images) and there are several images.
  let indexOfFirstImage = 0;
  const wantGrid = req['save_images'] && !req['do_not_save_grid'] && (opts['return_grid'] || opts['grid_save']);
  if (wantGrid && made.length > 0 && !(made.length < 2 && opts['grid_only_if_multiple'])) {
    const grid = await makeGrid(made);
    const text = infotexts[0]!;
    const bytes = await encodeImage(grid, checkSamplesFormat(opts['grid_format'] ?? 'png'), opts['enable_pnginfo'] ? text : null);
    if (opts['grid_save']) {
      const gridDir = outputDir(ctx, { ...opts, outdir_samples: opts['outdir_grids'], [`outdir_${kind}_samples`]: opts[`outdir_${kind}_grids`] }, kind);
      await saveImage(gridDir, 'grid', opts['grid_format'] === 'jpeg' ? 'jpg' : String(opts['grid_format'] ?? 'png'), bytes);
    }
    if (opts['return_grid']) {
      if (req['send_images']) images.unshift(bytes.toString('base64'));
      infotexts.unshift(text);
      indexOfFirstImage = 1;
    }
  }

  const extraGen: Record<string, unknown> = { ...extraParams };
  if (loraHashes.length > 0) extraGen['Lora hashes'] = namedHashes(loraHashes);
  if (denoising != null && kind === 'img2img') extraGen['Denoising strength'] = denoising;
  const info = {
    prompt,
    all_prompts: Array(count).fill(prompt),
    negative_prompt: negative,
    all_negative_prompts: Array(count).fill(negative),
    seed,
    all_seeds: allSeeds,
    subseed,
    all_subseeds: allSubseeds,
    subseed_strength: subseedStrength,
    width: req['width'],
    height: req['height'],
    sampler_name: sampler.sampler,
    cfg_scale: req['cfg_scale'],
    steps: req['steps'],
    batch_size: batchSize,
    restore_faces: req['restore_faces'] ?? false,
    face_restoration_model: null,
    sd_model_name: stemOf(ckpt.name),
    sd_model_hash: ckpt.shortHash,
    sd_vae_name: vae ? stemOf(vae.name) : null,
    sd_vae_hash: null,
    seed_resize_from_w: req['seed_resize_from_w'],
    seed_resize_from_h: req['seed_resize_from_h'],
    denoising_strength: denoising,
    extra_generation_params: extraGen,
    index_of_first_image: indexOfFirstImage,
    infotexts,
    styles: styleNames,
    job_timestamp: ctx.queue.current()?.timestamp ?? '',
    clip_skip: clipSkip,
    is_using_inpainting_conditioning: false,
    version: ctx.version,
    notes: [...new Set(notes)],
  };
  const parameters: Record<string, unknown> = { ...req };
  if (kind === 'img2img' && !req['include_init_images']) {
    parameters['init_images'] = null;
    parameters['mask'] = null;
  }
  return { images, parameters, info: JSON.stringify(info) };
}

/** The infotext entries a backend writes when its refiner took over. */
function refinerParams(extra: GenerationOutput['extraParams']): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const k of ['Refiner', 'Refiner switch at']) if (extra?.[k] !== undefined) out[k] = extra[k]!;
  return out;
}

/**
 * `refiner_checkpoint` as A1111 resolves it (closest match; "None" or empty for none). An unknown name fails the
 * request with A1111's own message and status (an Exception, 500 through its API middleware).
 */
async function resolveRefiner(ctx: ServerContext, req: Req, opts: Record<string, unknown>): Promise<RefinerParams | null> {
  const name = req['refiner_checkpoint'];
  if (typeof name !== 'string' || ['', 'None', 'none'].includes(name)) return null;
  const entry = ctx.models.closestCheckpoint(name);
  if (!entry) throw new HttpError(500, `Could not find checkpoint with name ${name}`, 'Exception');
  const hashed = await ctx.models.ensureHashed(entry);
  const switchAt = req['refiner_switch_at'];
  return {
    checkpoint: hashed,
    title: `${stemOf(hashed.name)} [${hashed.shortHash}]`,
    switchAt: typeof switchAt === 'number' ? switchAt : null,
    bySteps: opts['refiner_switch_by_sample_steps'] === true,
  };
}

function stemOf(name: string): string {
  const base = name.split('/').pop() ?? name;
  return base.replace(/\.safetensors$/i, '');
}
