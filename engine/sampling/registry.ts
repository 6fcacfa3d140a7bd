import { rangeFromSigmas, sampleDpmAdaptive, sampleDpmFast } from './dpm-solver.ts';
import { sampleDpm2, sampleDpm2Ancestral, sampleHeun } from './heun.ts';
import { sampleDpmpp2m, sampleDpmpp2mSde, sampleDpmpp2sAncestral, sampleDpmpp3mSde, sampleDpmppSde } from './dpmpp.ts';
import { sampleEuler, sampleEulerAncestral, sampleLcm } from './euler.ts';
import { sampleLms } from './lms.ts';
import { sampleRestart } from './restart.ts';
import { SCHEDULERS, findScheduler, type SchedulerInfo } from './schedulers.ts';
import type { KSampler } from './types.ts';

/**
 * A1111's sampler table (modules/sd_samplers_*.py, v1.10): names, aliases and options in A1111's order, each
 * mapped to its implementation here. A1111 samplers this engine does not implement keep their place in
 * `A1111_SAMPLER_NAMES` but are not listed by the API and resolve to the default sampler. This is the one
 * sampler table: the server's /sdapi/v1/samplers and its name resolution are lookups in it (server/samplers.ts).
 */

export type TimestepKind = 'ddim' | 'plms' | 'unipc';

export interface SamplerEntry {
  name: string;
  aliases: string[];
  /** A1111's options; GET /sdapi/v1/samplers shows them stringified. */
  options: Record<string, string | boolean>;
  /** Default schedule type for "Automatic" (A1111 option `scheduler`); undefined = the model's uniform timesteps. */
  defaultScheduler?: string;
  /** Sample one more step and drop the next-to-last sigma (A1111 option discard_next_to_last_sigma). */
  discardPenultimate: boolean;
  /** Ancestral / SDE samplers take eta (A1111 default eta_ancestral = 1); DDIM takes eta_ddim (default 0). */
  usesEta: boolean;
  /** Brownian noise for the SDE samplers (A1111 option brownian_noise). */
  brownian: boolean;
  /** LCM sees the model through LCM's own 50-timestep denoiser (lcm.ts) instead of CompVisDenoiser. */
  lcm?: boolean;
  impl: { family: 'k'; run: KSampler } | { family: 'timesteps'; kind: TimestepKind };
}

const k = (run: KSampler) => ({ family: 'k' as const, run });

export const SAMPLERS: readonly SamplerEntry[] = [
  { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], options: { scheduler: 'karras' }, defaultScheduler: 'karras', discardPenultimate: false, usesEta: false, brownian: false, impl: k(sampleDpmpp2m) },
  {
    name: 'DPM++ SDE', aliases: ['k_dpmpp_sde'], options: { scheduler: 'karras', second_order: true, brownian_noise: true },
    defaultScheduler: 'karras', discardPenultimate: false, usesEta: true, brownian: true, impl: k(sampleDpmppSde),
  },
  {
    name: 'DPM++ 2M SDE', aliases: ['k_dpmpp_2m_sde'], options: { scheduler: 'exponential', brownian_noise: true },
    defaultScheduler: 'exponential', discardPenultimate: false, usesEta: true, brownian: true, impl: k((a) => sampleDpmpp2mSde(a, 'midpoint')),
  },
  {
    name: 'DPM++ 2M SDE Heun', aliases: ['k_dpmpp_2m_sde_heun'], options: { scheduler: 'exponential', brownian_noise: true, solver_type: 'heun' },
    defaultScheduler: 'exponential', discardPenultimate: false, usesEta: true, brownian: true, impl: k((a) => sampleDpmpp2mSde(a, 'heun')),
  },
  {
    name: 'DPM++ 2S a', aliases: ['k_dpmpp_2s_a'], options: { scheduler: 'karras', uses_ensd: true, second_order: true },
    defaultScheduler: 'karras', discardPenultimate: false, usesEta: true, brownian: false, impl: k(sampleDpmpp2sAncestral),
  },
  {
    name: 'DPM++ 3M SDE', aliases: ['k_dpmpp_3m_sde'], options: { scheduler: 'exponential', discard_next_to_last_sigma: true, brownian_noise: true },
    defaultScheduler: 'exponential', discardPenultimate: true, usesEta: true, brownian: true, impl: k(sampleDpmpp3mSde),
  },
  { name: 'Euler a', aliases: ['k_euler_a', 'k_euler_ancestral'], options: { uses_ensd: true }, discardPenultimate: false, usesEta: true, brownian: false, impl: k(sampleEulerAncestral) },
  { name: 'Euler', aliases: ['k_euler'], options: {}, discardPenultimate: false, usesEta: false, brownian: false, impl: k(sampleEuler) },
  { name: 'LMS', aliases: ['k_lms'], options: {}, discardPenultimate: false, usesEta: false, brownian: false, impl: k((a) => sampleLms(a)) },
  { name: 'Heun', aliases: ['k_heun'], options: { second_order: true }, discardPenultimate: false, usesEta: false, brownian: false, impl: k(sampleHeun) },
  {
    name: 'DPM2', aliases: ['k_dpm_2'], options: { scheduler: 'karras', discard_next_to_last_sigma: true, second_order: true },
    defaultScheduler: 'karras', discardPenultimate: true, usesEta: false, brownian: false, impl: k(sampleDpm2),
  },
  {
    name: 'DPM2 a', aliases: ['k_dpm_2_a'], options: { scheduler: 'karras', discard_next_to_last_sigma: true, uses_ensd: true, second_order: true },
    defaultScheduler: 'karras', discardPenultimate: true, usesEta: true, brownian: false, impl: k(sampleDpm2Ancestral),
  },
  {
    name: 'DPM fast', aliases: ['k_dpm_fast'], options: { uses_ensd: true }, discardPenultimate: false, usesEta: true, brownian: false,
    impl: k((a) => sampleDpmFast(a, a.sigmaRange ?? rangeFromSigmas(a.sigmas))),
  },
  {
    name: 'DPM adaptive', aliases: ['k_dpm_ad'], options: { uses_ensd: true }, discardPenultimate: false, usesEta: true, brownian: false,
    impl: k((a) => sampleDpmAdaptive(a, a.sigmaRange ?? rangeFromSigmas(a.sigmas))),
  },
  { name: 'Restart', aliases: ['restart'], options: { scheduler: 'karras', second_order: true }, defaultScheduler: 'karras', discardPenultimate: false, usesEta: false, brownian: false, impl: k(sampleRestart) },
  { name: 'DDIM', aliases: ['ddim'], options: {}, discardPenultimate: false, usesEta: true, brownian: false, impl: { family: 'timesteps', kind: 'ddim' } },
  { name: 'PLMS', aliases: ['plms'], options: {}, discardPenultimate: false, usesEta: false, brownian: false, impl: { family: 'timesteps', kind: 'plms' } },
  { name: 'UniPC', aliases: ['unipc'], options: {}, discardPenultimate: false, usesEta: false, brownian: false, impl: { family: 'timesteps', kind: 'unipc' } },
  { name: 'LCM', aliases: ['k_lcm'], options: {}, discardPenultimate: false, usesEta: false, brownian: false, lcm: true, impl: k(sampleLcm) },
];

/** Every name A1111 v1.10 lists, in its order; those missing from SAMPLERS are not implemented here. */
export const A1111_SAMPLER_NAMES: readonly string[] = [
  'DPM++ 2M', 'DPM++ SDE', 'DPM++ 2M SDE', 'DPM++ 2M SDE Heun', 'DPM++ 2S a', 'DPM++ 3M SDE', 'Euler a', 'Euler', 'LMS', 'Heun',
  'DPM2', 'DPM2 a', 'DPM fast', 'DPM adaptive', 'Restart', 'DDIM', 'DDIM CFG++', 'PLMS', 'UniPC', 'LCM',
];

export const DEFAULT_SAMPLER = SAMPLERS[0]!;

/** The implemented samplers in A1111's order; with `available`, only those a backend runs. */
function ordered(available?: readonly string[]): SamplerEntry[] {
  return A1111_SAMPLER_NAMES.map((n) => SAMPLERS.find((s) => s.name === n)).filter((s): s is SamplerEntry => s !== undefined && (!available || available.includes(s.name)));
}

/**
 * GET /sdapi/v1/samplers: [{name, aliases, options}] with option values as strings, as A1111's pydantic model
 * gives them; with `available`, only the samplers a backend runs.
 */
export function listSamplersForApi(available?: readonly string[]): { name: string; aliases: string[]; options: Record<string, string> }[] {
  return ordered(available).map((s) => ({
    name: s.name,
    aliases: [...s.aliases],
    options: Object.fromEntries(Object.entries(s.options).map(([key, v]) => [key, typeof v === 'boolean' ? (v ? 'True' : 'False') : v])),
  }));
}

/** A sampler by exact name, or by name / alias ignoring case. */
export function findSampler(name: string): SamplerEntry | undefined {
  const exact = SAMPLERS.find((s) => s.name === name);
  if (exact) return exact;
  const lower = name.toLowerCase();
  return SAMPLERS.find((s) => s.name.toLowerCase() === lower || s.aliases.some((a) => a.toLowerCase() === lower));
}

export interface ResolvedSampler {
  sampler: SamplerEntry;
  /** The schedule to use; Automatic means the sampler's default (see `effectiveScheduler`). */
  scheduler: SchedulerInfo;
  /** What the infotext says: "Automatic" when the choice equals the sampler's default, as A1111 reports it. */
  schedulerLabel: string;
  /** Set when the requested sampler is unknown or not implemented and the default was used instead (A1111 falls back silently). */
  fallbackFrom?: string;
  /** Set when the requested schedule type is unknown and Automatic was used instead. */
  unknownScheduler?: string;
}

/** What a caller tells the user when a requested sampler fell back (A1111 only logs it). */
export function samplerFallbackNote(from: string, used: string): string {
  return `Sampler '${from}' is not available; used ${used}`;
}

/** The notes a resolution deserves: a sampler that fell back, a schedule type that is unknown. */
export function resolutionNotes(r: ResolvedSampler): string[] {
  const notes: string[] = [];
  if (r.fallbackFrom) notes.push(samplerFallbackNote(r.fallbackFrom, r.sampler.name));
  if (r.unknownScheduler) notes.push(`Scheduler '${r.unknownScheduler}' is not available; used Automatic`);
  return notes;
}

/**
 * A1111's get_sampler_and_scheduler: a legacy combined name ("DPM++ 2M Karras") is split into sampler and
 * schedule type, an unknown sampler becomes the default (the first in A1111's order; with `available`, the
 * first a backend runs), an explicit scheduler is looked up by name or label (unknown = Automatic), and a
 * schedule equal to the sampler's default is reported as Automatic.
 */
export function resolveSampler(samplerName: string | null | undefined, schedulerName?: string | null, available?: readonly string[]): ResolvedSampler {
  const offered = ordered(available);
  const fallback = offered[0] ?? DEFAULT_SAMPLER;
  const find = (n: string) => {
    const s = findSampler(n);
    return s && (!available || offered.includes(s)) ? s : undefined;
  };
  const requested = schedulerName ? findScheduler(schedulerName) : undefined;
  let scheduler = requested ?? SCHEDULERS[0]!;
  let name = samplerName || fallback.name;
  for (const s of SCHEDULERS) {
    const option = [s.label, s.name, ...(s.aliases ?? [])].find((o) => name.endsWith(' ' + o));
    if (option !== undefined && !findSampler(name)) {
      scheduler = s;
      name = name.slice(0, -(option.length + 1));
      break;
    }
  }
  const found = find(name);
  const sampler = found ?? fallback;
  if (sampler.defaultScheduler === scheduler.name) scheduler = SCHEDULERS[0]!;
  const out: ResolvedSampler = { sampler, scheduler, schedulerLabel: scheduler.label };
  if (!found) out.fallbackFrom = samplerName ?? '';
  if (schedulerName && !requested) out.unknownScheduler = schedulerName;
  return out;
}

/** A1111's eta when the request gives none: option eta_ancestral (1) for k-diffusion samplers, eta_ddim (0) for DDIM. */
export function defaultEta(sampler: SamplerEntry): number {
  return sampler.impl.family === 'k' ? 1 : 0;
}

/**
 * A1111's is_sampler_using_eta_noise_seed_delta, which decides whether the infotext carries `ENSD`: the
 * sampler's options say `uses_ensd` (the ancestral ones, DPM fast / adaptive) and its eta is not 0. The SDE
 * samplers and DDIM draw noise too but A1111 does not mark them, so their infotexts carry no ENSD.
 */
export function samplerUsesEnsd(samplerName: string, eta: number | null | undefined): boolean {
  const s = findSampler(samplerName);
  if (!s || s.options['uses_ensd'] !== true) return false;
  return (eta ?? defaultEta(s)) !== 0;
}

/** The schedule actually used: an explicit one, else the sampler's default, else undefined = model's uniform timesteps. */
export function effectiveScheduler(r: Pick<ResolvedSampler, 'sampler' | 'scheduler'>): SchedulerInfo | undefined {
  if (r.scheduler.sigmas !== null) return r.scheduler;
  return r.sampler.defaultScheduler ? findScheduler(r.sampler.defaultScheduler) : undefined;
}
