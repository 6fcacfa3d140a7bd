/**
 * The third step of txt2img / img2img: a resolved plan → the backend's calls, once per `n_iter` batch (plus the
 * hires second pass), with progress and stop requests from the queue job, the "only masked" results pasted
 * back, and each image's infotext (the engine's rule). No HTTP here: the result is pixels and text.
 */
import { modelInfotextFields } from '../engine/generate/identity.ts';
import { generationInfotext, scheduleTypeLabel } from '../engine/generate/infotext.ts';
import type { InfotextValue } from '../engine/image/png-info.ts';
import { pasteAreaOffThread } from '../engine/image/resize-off-thread.ts';
import type { GenerationHooks, GenerationOutput, GenerationParams, RawImage } from './backend.ts';
import type { ServerContext } from './context.ts';
import { asRawLike, type GenerationPlan } from './generation-resolve.ts';
import { upscaleForHires } from './hires.ts';
import type { JobContext } from './queue.ts';

export interface GenerationResult {
  /** Every image made, in seed order (fewer than planned after an interrupt). */
  images: RawImage[];
  infotexts: string[];
  /** Infotext entries the backend added (the last batch's win, as A1111's extra_generation_params). */
  extraParams: Record<string, InfotextValue>;
  /** The plan's notes and the backend's. */
  notes: string[];
  jobTimestamp: string;
}

/** The refiner takes part in a pass unless a hires job keeps it to the other pass (A1111 `hires_fix_refiner_pass`). */
function refinerIn(plan: GenerationPlan, pass: 'first pass' | 'second pass') {
  return !plan.hires || plan.refinerPass === pass || plan.refinerPass === 'both passes' ? plan.refiner : null;
}

/** The infotext entries a backend writes when its refiner took over. */
function refinerParams(extra: GenerationOutput['extraParams']): Record<string, string | number | boolean | null> {
  const out: Record<string, string | number | boolean | null> = {};
  for (const k of ['Refiner', 'Refiner switch at']) {
    const v = extra?.[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}

function infotextFor(ctx: ServerContext, plan: GenerationPlan, i: number, extra: Record<string, InfotextValue>): string {
  const o = plan.options;
  return generationInfotext({
    prompt: plan.prompt,
    negativePrompt: plan.negativePrompt,
    steps: plan.steps,
    sampler: plan.sampler.sampler,
    scheduleType: scheduleTypeLabel(plan.sampler.sampler, plan.sampler.scheduler),
    cfgScale: plan.cfgScale,
    imageCfgScale: plan.img2img?.imageCfgScale ?? null,
    seed: plan.seeds[i] ?? plan.seed,
    width: plan.width,
    height: plan.height,
    ...modelInfotextFields(ctx.models.identity(plan.checkpoint), plan.vaeIdentity, o),
    subseed: plan.subseeds[i] ?? plan.subseed,
    subseedStrength: plan.subseedStrength,
    seedResizeFromW: plan.seedResizeFromW,
    seedResizeFromH: plan.seedResizeFromH,
    denoisingStrength: plan.infotextDenoising,
    clipSkip: plan.clipSkip,
    ensd: plan.etaNoiseSeedDelta,
    eta: plan.eta,
    rng: plan.randnSource,
    tiling: plan.tiling,
    hires: plan.hires ? plan.hires.plan.infotext : null,
    loraHashes: plan.loraHashes,
    extra,
    version: o['add_version_to_infotext'] ? ctx.version : null,
  });
}

function checkCount(out: GenerationOutput, n: number): void {
  if (out.images.length !== n) throw new Error(`backend returned ${out.images.length} images for a batch of ${n}`);
}

/** Runs the plan inside its queue job: in this process, or on a worker (server/distributed/handlers.ts). */
export async function runPlan(ctx: ServerContext, plan: GenerationPlan, job: JobContext): Promise<GenerationResult> {
  const notes = [...plan.notes];
  const addNotes = (more: string[] | undefined) => {
    for (const note of more ?? []) if (!notes.includes(note)) notes.push(note);
  };
  const { batchSize, nIter, hires, img2img } = plan;
  const images: RawImage[] = [];
  const infotexts: string[] = [];
  const extraParams: Record<string, InfotextValue> = {};
  const showPreview = plan.options['live_previews_enable'] === true;
  const hooks: GenerationHooks = {
    onStep: (step, total, preview) => job.progress({ step, total, preview: showPreview && preview ? preview : null }),
    shouldStop: () => job.stopRequest(),
  };
  job.progress({ jobNo: 0, jobCount: nIter, step: 0, total: plan.steps });
  for (let n = 0; n < nIter; n++) {
    if (job.stopRequest() === 'interrupt') break;
    job.progress({ jobNo: n, step: 0 });
    const first = n * batchSize;
    const seeds = plan.seeds.slice(first, first + batchSize);
    const base: GenerationParams = {
      prompt: plan.bare,
      negativePrompt: plan.negativePrompt,
      seeds,
      subseeds: plan.subseeds.slice(first, first + batchSize),
      subseedStrength: plan.subseedStrength,
      seedResizeFromW: plan.seedResizeFromW,
      seedResizeFromH: plan.seedResizeFromH,
      width: plan.width,
      height: plan.height,
      steps: plan.steps,
      cfgScale: plan.cfgScale,
      sampler: plan.sampler.sampler,
      scheduler: plan.sampler.scheduler,
      clipSkip: plan.clipSkip,
      loras: plan.loras,
      eta: plan.eta,
      sChurn: plan.sChurn,
      sTmin: plan.sTmin,
      sTmax: plan.sTmax,
      sNoise: plan.sNoise,
      randnSource: plan.randnSource,
      etaNoiseSeedDelta: plan.etaNoiseSeedDelta,
      tiling: plan.tiling,
      options: Object.freeze({ ...plan.options }),
      refiner: refinerIn(plan, 'first pass'),
    };
    let out: GenerationOutput;
    if (!img2img) out = await ctx.backend.txt2img(base, hooks);
    else {
      // One init image per output image: A1111 cycles through the given ones.
      const initImages = seeds.flatMap((_, i) => img2img.initImages[(first + i) % img2img.initImages.length] ?? []);
      out = await ctx.backend.img2img(
        {
          ...base,
          initImages,
          mask: img2img.mask,
          denoisingStrength: img2img.denoising,
          inpaintingFill: img2img.inpaintingFill,
          inpaintFullRes: img2img.inpaintFullRes,
          inpaintFullResPadding: img2img.inpaintFullResPadding,
          initialNoiseMultiplier: img2img.initialNoiseMultiplier,
          imageCfgScale: img2img.imageCfgScale,
        },
        hooks,
      );
    }
    checkCount(out, seeds.length);
    const onlyMasked = img2img?.onlyMasked;
    if (onlyMasked) {
      const { area, originals } = onlyMasked;
      const pasted = await Promise.all(
        out.images.map(async (im, i) => {
          const original = originals[(first + i) % originals.length];
          return original ? asRawLike(original, await pasteAreaOffThread(original, im, area)) : im;
        }),
      );
      out = { ...out, images: pasted, extraParams: { ...out.extraParams, 'Inpaint area': 'Only masked', 'Masked area padding': img2img.inpaintFullResPadding } };
    }
    if (hires && job.stopRequest() !== 'interrupt') {
      // A1111 skips the second pass of an interrupted job but runs it after a skip.
      if (job.stopRequest() === 'skip') job.clearSkip();
      const hp = hires.plan;
      // Latent upscalers resize the first pass's latents in the backend; one that returns none gets the pixel path.
      const latentUpscale = hp.space === 'latent' && hp.latentMode && out.latents ? { batch: out.latents, mode: hp.latentMode } : null;
      if (hp.space === 'latent' && !latentUpscale) notes.push(`Hires upscaler '${hp.upscaler}' was done in pixel space (Lanczos): the backend returned no latents`);
      const second = await ctx.backend.img2img(
        {
          ...base,
          prompt: hires.prompt ?? base.prompt,
          negativePrompt: hp.negativePrompt ?? base.negativePrompt,
          loras: hires.loras ?? base.loras,
          refiner: refinerIn(plan, 'second pass'),
          width: hp.width,
          height: hp.height,
          steps: hp.steps,
          sampler: hires.sampler.sampler,
          scheduler: hires.sampler.scheduler,
          initImages: latentUpscale ? [] : await upscaleForHires(out.images, hp),
          initLatents: latentUpscale,
          mask: null,
          denoisingStrength: hp.denoising,
          inpaintingFill: 1,
          inpaintFullRes: false,
          inpaintFullResPadding: 0,
          initialNoiseMultiplier: 1,
          imageCfgScale: null,
        },
        hooks,
      );
      checkCount(second, seeds.length);
      addNotes(second.notes);
      out = { ...out, images: second.images, extraParams: { ...out.extraParams, ...refinerParams(second.extraParams) } };
    }
    if (hires && out.extraParams?.['Refiner'] !== undefined && plan.refinerPass !== 'second pass') {
      out = { ...out, extraParams: { ...out.extraParams, 'Hires refiner': plan.refinerPass } };
    }
    Object.assign(extraParams, out.extraParams ?? {});
    addNotes(out.notes);
    out.images.forEach((im, i) => {
      images.push(im);
      infotexts.push(infotextFor(ctx, plan, first + i, out.extraParams ?? {}));
    });
    const stop = job.stopRequest();
    if (stop === 'interrupt') break;
    if (stop === 'skip') job.clearSkip();
  }
  return { images, infotexts, extraParams, notes, jobTimestamp: ctx.queue.current()?.timestamp ?? '' };
}
