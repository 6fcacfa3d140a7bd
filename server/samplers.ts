/**
 * /sdapi/v1/samplers, /sdapi/v1/schedulers and request sampler names, as lookups in the engine's one sampler
 * table (engine/sampling/registry.ts): this module only shapes them for the API.
 */
import { listSamplersForApi, resolutionNotes, resolveSampler as resolveInRegistry } from '../engine/sampling/registry.ts';
import { listSchedulersForApi } from '../engine/sampling/schedulers.ts';

export type SamplerInfo = ReturnType<typeof listSamplersForApi>[number];
export type SchedulerInfo = ReturnType<typeof listSchedulersForApi>[number];

/** The A1111 samplers the engine runs, in A1111's order, as GET /sdapi/v1/samplers shows them. */
export const SAMPLERS: SamplerInfo[] = listSamplersForApi();

export const SCHEDULERS: SchedulerInfo[] = listSchedulersForApi();

export interface ResolvedSampler {
  sampler: string;
  /** Scheduler name (`automatic`, `karras`, …). */
  scheduler: string;
  /** Label for the infotext's `Schedule type`. */
  schedulerLabel: string;
  notes: string[];
}

/** A request's sampler and scheduler names resolved in the registry, among the samplers `available` (a backend's). */
export function resolveSampler(samplerName: string | null, schedulerName: string | null, available: readonly SamplerInfo[] = SAMPLERS): ResolvedSampler {
  const r = resolveInRegistry(samplerName, schedulerName, available.map((s) => s.name));
  return { sampler: r.sampler.name, scheduler: r.scheduler.name, schedulerLabel: r.schedulerLabel, notes: resolutionNotes(r) };
}
