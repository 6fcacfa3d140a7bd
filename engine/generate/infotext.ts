/**
 * The one infotext rule (A1111 1.10 `create_infotext`): the `parameters` text every image carries, whoever made
 * it (`lora-scripts generate`, the server's txt2img/img2img, a training sample). Keys come in A1111's order;
 * a key whose value is null is left out, as A1111 leaves out `None`.
 */
import { formatInfotext, pyStr, type InfotextValue } from '../image/png-info.ts';
import { effectiveScheduler, resolveSampler, samplerUsesEnsd } from '../sampling/registry.ts';

/** A network named in the prompt with its short hash (`Lora hashes`, `TI hashes`). */
export interface NamedHash {
  name: string;
  hash: string;
}

export interface InfotextFields {
  /** The prompt as written, `<lora:…>` tags included (A1111 keeps them in the infotext). */
  prompt: string;
  negativePrompt: string;
  steps: number;
  sampler: string;
  /** The schedule actually used, as labelled in A1111 (see `scheduleTypeLabel`). */
  scheduleType: string;
  cfgScale: number;
  imageCfgScale?: number | null;
  seed: number;
  width: number;
  height: number;
  /** First 10 hex digits of the checkpoint's sha256, or null (option add_model_hash_to_info, unhashed file). */
  modelHash?: string | null;
  /** Checkpoint file stem (option add_model_name_to_info). */
  model?: string | null;
  /** First 10 hex digits of a separate VAE's sha256 (option add_vae_hash_to_info). */
  vaeHash?: string | null;
  /** A separate VAE's file name, extension included (option add_vae_name_to_info). */
  vae?: string | null;
  /** Variation seed and strength; left out at strength 0. */
  subseed?: number | null;
  subseedStrength?: number;
  /** Seed resize from W×H; left out unless both are positive. */
  seedResizeFromW?: number;
  seedResizeFromH?: number;
  /** img2img, and txt2img with a hires pass. */
  denoisingStrength?: number | null;
  /** A1111 `CLIP_stop_at_last_layers`; written when above 1. */
  clipSkip: number;
  /** A1111 `eta_noise_seed_delta`; written when not 0 and the sampler uses it (see `samplerUsesEnsd`). */
  ensd?: number;
  /** The request's eta (null: the sampler's default), which decides whether ENSD is written. */
  eta?: number | null;
  /** A1111 `randn_source`; written when not GPU. */
  rng?: string;
  tiling?: boolean;
  /** A hires pass's entries (HiresPlan.infotext). */
  hires?: Record<string, InfotextValue> | null;
  loraHashes?: readonly NamedHash[];
  /** Textual-inversion embeddings used by the prompts. */
  tiHashes?: readonly NamedHash[];
  /** Further entries A1111 puts into extra_generation_params (mask blur, …), written before Version. */
  extra?: Record<string, InfotextValue>;
  /** engine/version.ts's VERSION, or null when option add_version_to_infotext is off. */
  version: string | null;
}

/** Python prints floats as 7.0; A1111's float fields (CFG scale, strengths) carry that form. */
export function formatFloat(x: number): string {
  return pyStr(x, true);
}

/**
 * The `Schedule type` A1111 writes: the schedule the sampler really used, so Automatic becomes the sampler's
 * own default (Karras for DPM++ 2M) and stays Automatic only for samplers without one.
 */
export function scheduleTypeLabel(sampler: string, scheduler: string | null | undefined): string {
  return effectiveScheduler(resolveSampler(sampler, scheduler))?.label ?? 'Automatic';
}

/** `Lora hashes` / `TI hashes`: `name: hash, …` with `:` and `,` taken out of names, as A1111 writes them. */
export function namedHashes(list: readonly NamedHash[] | undefined): string | null {
  if (!list || list.length === 0) return null;
  return list.map((l) => `${l.name.replace(/[:,]/g, '')}: ${l.hash}`).join(', ');
}

/** The infotext entries after the prompts, in A1111's order. */
export function infotextParams(f: InfotextFields): Record<string, InfotextValue> {
  const strength = f.subseedStrength ?? 0;
  const rw = f.seedResizeFromW ?? 0;
  const rh = f.seedResizeFromH ?? 0;
  return {
    Steps: f.steps,
    Sampler: f.sampler,
    'Schedule type': f.scheduleType,
    'CFG scale': formatFloat(f.cfgScale),
    'Image CFG scale': f.imageCfgScale == null ? null : formatFloat(f.imageCfgScale),
    Seed: f.seed,
    Size: `${f.width}x${f.height}`,
    'Model hash': f.modelHash ?? null,
    Model: f.model ?? null,
    'VAE hash': f.vaeHash ?? null,
    VAE: f.vae ?? null,
    'Variation seed': strength === 0 ? null : (f.subseed ?? null),
    'Variation seed strength': strength === 0 ? null : formatFloat(strength),
    'Seed resize from': rw > 0 && rh > 0 ? `${rw}x${rh}` : null,
    'Denoising strength': f.denoisingStrength == null ? null : formatFloat(f.denoisingStrength),
    'Clip skip': f.clipSkip <= 1 ? null : f.clipSkip,
    ENSD: f.ensd && samplerUsesEnsd(f.sampler, f.eta) ? f.ensd : null,
    RNG: f.rng && f.rng !== 'GPU' ? f.rng : null,
    Tiling: f.tiling ? 'True' : null,
    ...(f.hires ?? {}),
    'Lora hashes': namedHashes(f.loraHashes),
    'TI hashes': namedHashes(f.tiHashes),
    ...(f.extra ?? {}),
    Version: f.version,
  };
}

/**
 * A1111's refiner entries (`apply_refiner`), written only once the refiner took over: the checkpoint's short
 * title (`<stem> [<short hash>]`) and the switch point as Python prints the float; a null switch point is left out.
 */
export function refinerParams(title: string, switchAt: number | null): Record<string, string | null> {
  return { Refiner: title, 'Refiner switch at': switchAt === null ? null : formatFloat(switchAt) };
}

export function generationInfotext(f: InfotextFields): string {
  return formatInfotext(f.prompt, f.negativePrompt, infotextParams(f));
}
