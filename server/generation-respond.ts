/**
 * The last step of txt2img / img2img: a run's images and infotexts → A1111's answer `{images, parameters, info}`
 * (images in `samples_format` with the infotext embedded, a grid first when A1111 makes one, `info` as a JSON
 * string of its Processed fields plus our `notes`), saving images and grids when the request asks to.
 */
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { namedHashes } from '../engine/generate/infotext.ts';
import { writeBufferAtomic } from '../engine/util/atomic-write.ts';
import type { ServerContext } from './context.ts';
import type { GenerationResult } from './generation-run.ts';
import { outputDir, stemOf, type GenerationPlan } from './generation-resolve.ts';
import { checkSamplesFormat, encodeImage, makeGrid } from './images.ts';

export interface GenerationResponse {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

/** Writes `NNNNN-<label>.<ext>` with the next free number in `dir`, atomically. */
async function saveImage(dir: string, label: string, ext: string, bytes: Buffer): Promise<string> {
  await mkdir(dir, { recursive: true });
  const names = await readdir(dir).catch(() => [] as string[]);
  let next = 0;
  for (const n of names) {
    const m = /^(\d+)-/.exec(n);
    if (m?.[1]) next = Math.max(next, parseInt(m[1], 10) + 1);
  }
  const path = join(dir, `${String(next).padStart(5, '0')}-${label}.${ext}`);
  await writeBufferAtomic(path, bytes);
  return path;
}

const extensionOf = (format: string) => (format === 'jpeg' ? 'jpg' : format);

export async function respond(ctx: ServerContext, plan: GenerationPlan, result: GenerationResult): Promise<GenerationResponse> {
  const { options: o, prepared } = plan;
  const { req } = prepared;
  const pnginfo = o['enable_pnginfo'] === true;
  const images: string[] = [];
  const infotexts = [...result.infotexts];
  for (const [i, im] of result.images.entries()) {
    const text = result.infotexts[i] ?? null;
    const bytes = await encodeImage(im, plan.format, pnginfo ? text : null, { jpegQuality: Number(o['jpeg_quality']), webpLossless: o['webp_lossless'] === true });
    if (plan.saveDir) await saveImage(plan.saveDir, String(plan.seeds[i] ?? plan.seed), extensionOf(plan.format), bytes);
    if (req.send_images) images.push(bytes.toString('base64'));
  }

  // A1111's API makes a grid only when saving (do_not_save_grid = !save_images) and there are several images.
  let indexOfFirstImage = 0;
  const wantGrid = req.save_images && !req.do_not_save_grid && (o['return_grid'] || o['grid_save']);
  if (wantGrid && result.images.length > 0 && !(result.images.length < 2 && o['grid_only_if_multiple'])) {
    const grid = await makeGrid(result.images);
    const text = result.infotexts[0] ?? '';
    const gridFormat = checkSamplesFormat(o['grid_format'] ?? 'png');
    const bytes = await encodeImage(grid, gridFormat, pnginfo ? text : null);
    if (o['grid_save']) {
      const configured = String(o['outdir_grids'] || o[`outdir_${plan.kind}_grids`] || `outputs/${plan.kind}-grids`);
      await saveImage(outputDir(ctx, configured, o['save_to_dirs'] === true, `outdir_${plan.kind}_grids`), 'grid', extensionOf(gridFormat), bytes);
    }
    if (o['return_grid']) {
      if (req.send_images) images.unshift(bytes.toString('base64'));
      infotexts.unshift(text);
      indexOfFirstImage = 1;
    }
  }

  const extraGen: Record<string, unknown> = { ...result.extraParams };
  const loraHashes = namedHashes(plan.loraHashes);
  if (loraHashes) extraGen['Lora hashes'] = loraHashes;
  if (plan.denoising != null && plan.kind === 'img2img') extraGen['Denoising strength'] = plan.denoising;
  const count = plan.batchSize * plan.nIter;
  const info = {
    prompt: plan.prompt,
    all_prompts: Array(count).fill(plan.prompt),
    negative_prompt: plan.negativePrompt,
    all_negative_prompts: Array(count).fill(plan.negativePrompt),
    seed: plan.seed,
    all_seeds: plan.seeds,
    subseed: plan.subseed,
    all_subseeds: plan.subseeds,
    subseed_strength: plan.subseedStrength,
    width: plan.width,
    height: plan.height,
    sampler_name: plan.sampler.sampler,
    cfg_scale: plan.cfgScale,
    steps: plan.steps,
    batch_size: plan.batchSize,
    restore_faces: plan.restoreFaces,
    face_restoration_model: null,
    sd_model_name: stemOf(plan.checkpoint.name),
    sd_model_hash: plan.checkpoint.shortHash,
    sd_vae_name: plan.vaeIdentity?.name ?? null,
    sd_vae_hash: plan.vaeIdentity?.shortHash ?? null,
    seed_resize_from_w: plan.seedResizeFromW,
    seed_resize_from_h: plan.seedResizeFromH,
    denoising_strength: plan.denoising,
    extra_generation_params: extraGen,
    index_of_first_image: indexOfFirstImage,
    infotexts,
    styles: plan.styles,
    job_timestamp: result.jobTimestamp,
    clip_skip: plan.clipSkip,
    is_using_inpainting_conditioning: false,
    version: ctx.version,
    notes: [...new Set(result.notes)],
  };
  // A1111 echoes the request; img2img's pictures only with include_init_images.
  const parameters: Record<string, unknown> = prepared.kind === 'img2img' && !prepared.req.include_init_images ? { ...prepared.req, init_images: null, mask: null } : { ...req };
  return { images, parameters, info: JSON.stringify(info) };
}
