/**
 * The second step of txt2img / img2img, run inside the queue job: the typed request with the options and the
 * server's state → a fully resolved plan. Everything that is not math is decided here (effective options,
 * checkpoint, VAE, sampler, styles, `<lora:…>` stacks and their hashes, seeds, hires plan, refiner, the
 * "only masked" inpaint area, output folder) and every fallback is written into `notes`.
 */
import { isAbsolute, join, relative, resolve } from 'node:path';
import type { VaeIdentity } from '../engine/generate/identity.ts';
import type { NamedHash } from '../engine/generate/infotext.ts';
import type { Pixels } from '../engine/image/crop.ts';
import { inpaintArea, type InpaintArea } from '../engine/image/inpaint-area.ts';
import { cutAreaOffThread } from '../engine/image/resize-off-thread.ts';
import { extractPromptTags } from '../engine/lora/prompt-tags.ts';
import { batchSeeds, fixSeed } from '../engine/rng/seeds.ts';
import { UserError } from '../engine/util/errors.ts';
import type { GenerationParams, LoraRef, RawImage, RefinerParams, VaeRef } from './backend.ts';
import type { ServerContext } from './context.ts';
import { HttpError } from './errors.ts';
import type { GenerationKind, Prepared } from './generation-prepare.ts';
import { planHires, type HiresPlan } from './hires.ts';
import { checkSamplesFormat, resizeForImg2img, type SamplesFormat } from './images.ts';
import type { CheckpointEntry } from './models.ts';
import { OPTION_DEFAULTS, RESTRICTED_OPTIONS, type OptionValue } from './options.ts';
import type { Img2ImgRequest } from './requests/generation.ts';
import { parseOptionValues } from './requests/options.ts';
import { SAMPLERS, resolveSampler, type ResolvedSampler, type SamplerInfo } from './samplers.ts';
import { applyStyle, readStyles } from './styles.ts';

/** The hires second pass, resolved: the engine's plan, its own sampler and (with `hr_prompt`) its own LoRA stack. */
export interface HiresPass {
  plan: HiresPlan;
  sampler: ResolvedSampler;
  /** `hr_prompt` without its tags, or null for the first pass's prompt. */
  prompt: string | null;
  /** `hr_prompt`'s own LoRAs, or null for the first pass's. */
  loras: LoraRef[] | null;
}

/** img2img's inputs, resolved: the pictures the backend gets and, for "only masked", where results go back. */
export interface Img2ImgInputs {
  initImages: RawImage[];
  mask: RawImage | null;
  onlyMasked: { area: InpaintArea; originals: RawImage[] } | null;
  denoising: number;
  inpaintingFill: number;
  inpaintFullRes: boolean;
  inpaintFullResPadding: number;
  initialNoiseMultiplier: number;
  imageCfgScale: number | null;
}

/** The sampler settings pass to the backend as they are (server/backend.ts names them). */
type SamplerSettings = Pick<GenerationParams, 'eta' | 'sChurn' | 'sTmin' | 'sTmax' | 'sNoise' | 'randnSource' | 'etaNoiseSeedDelta' | 'tiling'>;

export interface GenerationPlan extends SamplerSettings {
  kind: GenerationKind;
  /** The validated request, as the response's `parameters` echoes it. */
  prepared: Prepared;
  /** Global options with `override_settings` applied. */
  options: Readonly<Record<string, OptionValue>>;
  /** The typed `override_settings` (known keys only), for `override_settings_restore_afterwards: false`. */
  overrides: Record<string, OptionValue>;
  format: SamplesFormat;
  checkpoint: CheckpointEntry;
  /** Whether `override_settings.sd_model_checkpoint` chose the checkpoint (then it is not remembered as current). */
  checkpointOverridden: boolean;
  vae: VaeRef | null;
  /** The separate VAE's file name and short hash, for the infotext (engine/generate/identity.ts). */
  vaeIdentity: VaeIdentity | null;
  sampler: ResolvedSampler;
  /** The prompts with styles applied (the infotext's); `bare` is the positive one without extra-network tags. */
  prompt: string;
  negativePrompt: string;
  bare: string;
  styles: string[];
  loras: LoraRef[];
  loraHashes: NamedHash[];
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  batchSize: number;
  nIter: number;
  seed: number;
  subseed: number;
  subseedStrength: number;
  /** One per image of the whole job. */
  seeds: number[];
  subseeds: number[];
  seedResizeFromW: number;
  seedResizeFromH: number;
  clipSkip: number;
  /** The denoising strength the job used (img2img's, or the hires pass's), and whether the infotext names it. */
  denoising: number | null;
  infotextDenoising: number | null;
  hires: HiresPass | null;
  refiner: RefinerParams | null;
  /** A1111's `hires_fix_refiner_pass`: which passes of a hires job the refiner joins. */
  refinerPass: 'first pass' | 'second pass' | 'both passes';
  img2img: Img2ImgInputs | null;
  restoreFaces: boolean;
  /** Folder for saved images, or null when the request does not save. */
  saveDir: string | null;
  notes: string[];
}

const REFINER_PASSES = ['first pass', 'second pass', 'both passes'] as const;

/** Global options with `override_settings` applied: unknown keys noted, restricted ones ignored. */
function effectiveOptions(ctx: ServerContext, over: Record<string, unknown> | null, notes: string[]): { options: Record<string, OptionValue>; overrides: Record<string, OptionValue> } {
  const options = ctx.options.all();
  const overrides: Record<string, OptionValue> = {};
  const values = parseOptionValues(over ?? {}, ['body', 'override_settings']);
  for (const [k, v] of Object.entries(values)) {
    if (!(k in OPTION_DEFAULTS)) {
      notes.push(`override_settings: unknown option '${k}' ignored`);
      continue;
    }
    if (RESTRICTED_OPTIONS.has(k)) continue;
    options[k] = v;
    overrides[k] = v;
  }
  return { options, overrides };
}

/** `outdir_samples` (or the kind's folder), kept inside the data folder; with `save_to_dirs`, a folder per day. */
export function outputDir(ctx: ServerContext, configured: string, saveToDirs: boolean, option: string): string {
  const dir = resolve(ctx.layout.dataDir, configured);
  const rel = relative(ctx.layout.dataDir, dir);
  if (rel.startsWith('..') || isAbsolute(rel)) throw new UserError(`option ${option}: '${configured}' is outside the data folder ${ctx.layout.dataDir}`);
  const d = new Date();
  const p = (n: number) => String(n).padStart(2, '0');
  return saveToDirs ? join(dir, `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`) : dir;
}

/** A crop or paste of `like` (engine/image/inpaint-area.ts keeps the channel count) as the backend's picture type. */
export function asRawLike(like: RawImage, p: Pixels): RawImage {
  return { width: p.width, height: p.height, channels: like.channels, data: p.data };
}

export function stemOf(name: string): string {
  const base = name.split('/').pop() ?? name;
  return base.replace(/\.safetensors$/i, '');
}

/**
 * `refiner_checkpoint` as A1111 resolves it (closest match; "None" or empty for none). An unknown name fails the
 * request with A1111's own message and status (an Exception, 500 through its API middleware).
 */
async function resolveRefiner(ctx: ServerContext, name: string | null, switchAt: number | null, bySteps: boolean): Promise<RefinerParams | null> {
  if (name === null || ['', 'None', 'none'].includes(name)) return null;
  const entry = ctx.models.closestCheckpoint(name);
  if (!entry) throw new HttpError(500, `Could not find checkpoint with name ${name}`, 'Exception');
  const hashed = await ctx.models.ensureHashed(entry);
  return { checkpoint: hashed, title: `${stemOf(hashed.name)} [${hashed.shortHash}]`, switchAt, bySteps };
}

/** `<lora:…>` tags → files in the LoRA folder (rescanned once before a name is given up, as A1111). */
async function resolveLoras(ctx: ServerContext, tags: ReturnType<typeof extractPromptTags>['loras'], withHashes: boolean): Promise<{ loras: LoraRef[]; hashes: NamedHash[]; notFound: string[] }> {
  const loras: LoraRef[] = [];
  const hashes: NamedHash[] = [];
  const notFound: string[] = [];
  let rescanned = false;
  for (const lt of tags) {
    let e = ctx.loras.resolve(lt.name);
    if (!e && !rescanned) {
      await ctx.loras.refresh();
      rescanned = true;
      e = ctx.loras.resolve(lt.name);
    }
    if (!e) {
      notFound.push(lt.name);
      continue;
    }
    loras.push({ name: lt.name, path: e.path, teMultiplier: lt.te, unetMultiplier: lt.unet, dynDim: lt.dyn ?? null });
    if (withHashes) hashes.push({ name: lt.name, hash: await ctx.loras.shortHash(e) });
  }
  return { loras, hashes, notFound };
}

/**
 * img2img with `inpaint_full_res` ("only masked"): the pictures and mask arrive at the pictures' size; the area
 * around the mask is cut out at the request size for the backend, and the originals are kept to paste the
 * results back into (engine/image/inpaint-area.ts). A blank mask runs plain img2img, as A1111.
 */
async function img2imgInputs(req: Img2ImgRequest, initImages: RawImage[], mask: RawImage | null, options: Record<string, OptionValue>, notes: string[]): Promise<Img2ImgInputs> {
  const base = {
    denoising: req.denoising_strength,
    inpaintingFill: req.inpainting_fill,
    inpaintFullRes: req.inpaint_full_res,
    inpaintFullResPadding: req.inpaint_full_res_padding,
    initialNoiseMultiplier: req.initial_noise_multiplier ?? Number(options['initial_noise_multiplier']),
    imageCfgScale: req.image_cfg_scale,
  };
  if (!req.inpaint_full_res || !mask) return { ...base, initImages, mask, onlyMasked: null };
  const area = inpaintArea(mask, req.inpaint_full_res_padding, req.width, req.height);
  if (!area) {
    notes.push('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.');
    const images = await Promise.all(initImages.map((im) => resizeForImg2img(im, req.width, req.height, req.resize_mode)));
    return { ...base, initImages: images, mask: null, onlyMasked: null };
  }
  return {
    ...base,
    initImages: await Promise.all(initImages.map(async (im) => asRawLike(im, await cutAreaOffThread(im, area, req.width, req.height)))),
    mask: asRawLike(mask, await cutAreaOffThread(mask, area, req.width, req.height)),
    onlyMasked: { area, originals: initImages },
  };
}

/** The plan for one prepared request. */
export async function resolveGeneration(ctx: ServerContext, prepared: Prepared): Promise<GenerationPlan> {
  const { kind, req } = prepared;
  const notes: string[] = [];
  const { options, overrides } = effectiveOptions(ctx, req.override_settings, notes);
  const img2img = prepared.kind === 'img2img' ? await img2imgInputs(prepared.req, prepared.initImages, prepared.mask, options, notes) : null;
  const format = checkSamplesFormat(options['samples_format']);
  const overrideCkpt = overrides['sd_model_checkpoint'];
  const wantedCkpt = typeof overrideCkpt === 'string' ? overrideCkpt : null;
  const checkpoint = await ctx.checkpoints.ensureLoaded(wantedCkpt, options['sd_vae'], notes);
  const vae = ctx.checkpoints.vaeFor(checkpoint, options['sd_vae'], notes);

  // Sampler: A1111 uses sampler_index when sampler_name is null or empty; names the backend lacks fall back.
  const backendSamplers = ctx.backend.samplers;
  const offered: readonly SamplerInfo[] = backendSamplers ? SAMPLERS.filter((s) => backendSamplers.includes(s.name)) : SAMPLERS;
  const available = offered.length ? offered : SAMPLERS;
  const sampler = resolveSampler(req.sampler_name || req.sampler_index, req.scheduler, available);
  notes.push(...sampler.notes);

  // Prompts: styles first, then extra-network tags from the first prompt (A1111 uses it for the whole batch).
  let prompt = req.prompt;
  let negativePrompt = req.negative_prompt;
  const styleNames = req.styles ?? [];
  if (styleNames.length > 0) {
    const styles = await readStyles(ctx.layout.stylesPath);
    for (const n of styleNames) {
      const st = styles.find((s) => s.name === n);
      if (!st) continue; // A1111 ignores unknown style names
      prompt = applyStyle(prompt, st.prompt);
      negativePrompt = applyStyle(negativePrompt, st.negative_prompt);
    }
  }
  const multiplier = Number(options['extra_networks_default_multiplier'] ?? 1);
  const sdLora = options['sd_lora'];
  if (typeof sdLora === 'string' && sdLora !== 'None' && sdLora !== '' && !prompt.includes(`<lora:${sdLora}:`)) {
    prompt += `<lora:${sdLora}:${String(options['extra_networks_default_multiplier'])}>`;
  }
  const parsed = extractPromptTags(prompt, { defaultMultiplier: multiplier });
  if (!req.disable_extra_networks) for (const o of parsed.other) notes.push(`Skipping unknown extra network: ${o.type}`);
  const stack = await resolveLoras(ctx, req.disable_extra_networks ? [] : parsed.loras, options['lora_add_hashes_to_infotext'] === true);
  if (stack.notFound.length > 0) notes.push(`Lora not found: ${stack.notFound.join(', ')}`);
  if (req.restore_faces) notes.push('restore_faces (face restoration) is not available in lora-scripts; ignored');

  const refiner = await resolveRefiner(ctx, req.refiner_checkpoint, req.refiner_switch_at, options['refiner_switch_by_sample_steps'] === true);
  const refinerPass = REFINER_PASSES.find((p) => p === options['hires_fix_refiner_pass']) ?? 'second pass';
  if (prepared.kind === 'img2img' && prepared.req.resize_mode === 3) notes.push('resize_mode 3 (latent upscale) was done as resize_mode 0');

  const count = req.batch_size * req.n_iter;
  const seed = fixSeed(req.seed);
  const subseed = fixSeed(req.subseed);
  const { seeds, subseeds } = batchSeeds(seed, subseed, req.subseed_strength, count);

  let hires: HiresPass | null = null;
  if (prepared.kind === 'txt2img' && prepared.req.enable_hr) {
    const plan = planHires(prepared.req);
    notes.push(...plan.notes);
    // The second pass may name its own sampler and prompts; its LoRA tags are then its own (A1111 parses hr_prompt separately).
    const hrSampler = plan.sampler || plan.scheduler ? resolveSampler(plan.sampler ?? sampler.sampler, plan.scheduler ?? sampler.scheduler, available) : sampler;
    const hrTags = plan.prompt ? extractPromptTags(plan.prompt, { defaultMultiplier: multiplier }) : null;
    let hrLoras: LoraRef[] | null = null;
    if (hrTags) {
      const hrStack = await resolveLoras(ctx, req.disable_extra_networks ? [] : hrTags.loras, false);
      hrLoras = hrStack.loras;
      for (const name of hrStack.notFound) if (!stack.notFound.includes(name)) notes.push(`Lora not found (hr_prompt): ${name}`);
    }
    hires = { plan, sampler: hrSampler, prompt: hrTags ? hrTags.prompt : null, loras: hrLoras };
  }
  const denoising = img2img ? img2img.denoising : hires ? hires.plan.denoising : req.denoising_strength;
  const saveDir = req.save_images && !req.do_not_save_samples
    ? outputDir(ctx, String(options['outdir_samples'] || options[`outdir_${kind}_samples`] || `outputs/${kind}-images`), options['save_to_dirs'] === true, `outdir_${kind}_samples`)
    : null;

  return {
    kind,
    prepared,
    options,
    overrides,
    format,
    checkpoint,
    checkpointOverridden: wantedCkpt !== null,
    vae,
    vaeIdentity: vae ? await ctx.models.vaeIdentity(vae) : null,
    sampler,
    prompt,
    negativePrompt,
    bare: parsed.prompt,
    styles: styleNames,
    loras: stack.loras,
    loraHashes: stack.hashes,
    width: req.width,
    height: req.height,
    steps: req.steps,
    cfgScale: req.cfg_scale,
    batchSize: req.batch_size,
    nIter: req.n_iter,
    seed,
    subseed,
    subseedStrength: req.subseed_strength,
    seeds,
    subseeds,
    seedResizeFromW: req.seed_resize_from_w,
    seedResizeFromH: req.seed_resize_from_h,
    clipSkip: Number(options['CLIP_stop_at_last_layers']),
    eta: req.eta,
    sChurn: req.s_churn,
    sTmin: req.s_tmin,
    sTmax: req.s_tmax,
    sNoise: req.s_noise,
    randnSource: String(options['randn_source']),
    etaNoiseSeedDelta: Number(options['eta_noise_seed_delta']),
    tiling: req.tiling ?? options['tiling'] === true,
    denoising,
    // txt2img writes a denoising strength into the infotext only when a hires pass used it.
    infotextDenoising: img2img || hires ? denoising : null,
    hires,
    refiner,
    refinerPass,
    img2img,
    restoreFaces: req.restore_faces ?? false,
    saveDir,
    notes,
  };
}
