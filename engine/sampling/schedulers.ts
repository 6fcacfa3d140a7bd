import { UserError } from '../util/errors.ts';
import { betaPpf } from './beta-distribution.ts';
import type { DiscreteSchedule } from './training-schedule.ts';

/**
 * A1111's "Schedule type" discretizations (modules/sd_schedulers.py, v1.10): how `steps` noise levels are
 * picked between the model's sigma_min and sigma_max. Every function returns the decreasing sigmas a
 * k-diffusion sampler walks, normally ending in 0 (KL Optimal ends at sigma_min, as in A1111).
 * Values are rounded to float32, as A1111 holds them in float32 tensors.
 */

export interface SchedulerContext {
  /** The model's discrete schedule (Uniform, SGM Uniform, Simple, Normal, DDIM need it; all use its sigma range). */
  model: DiscreteSchedule;
  /** Rho for Karras (default 7) / Polyexponential (default 1); A1111 option `rho`, 0 = default. */
  rho?: number;
  /** Beta schedule shape (A1111 options beta_dist_alpha / beta_dist_beta, default 0.6 / 0.6). */
  betaAlpha?: number;
  betaBeta?: number;
  /** Align Your Steps uses NVIDIA's SDXL table instead of the SD 1.5 one. */
  isSdxl?: boolean;
}

export interface SchedulerInfo {
  name: string;
  label: string;
  aliases: string[] | null;
  /** -1 where the schedule has no rho (A1111's API field). */
  defaultRho: number;
  needInnerModel: boolean;
  /** null for Automatic, which means "the sampler's own default". */
  sigmas: ((n: number, ctx: SchedulerContext) => number[]) | null;
}

const f32 = (v: number[]): number[] => v.map((x) => Math.fround(x));

function linspace(a: number, b: number, n: number): number[] {
  if (n === 1) return [a];
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(a + ((b - a) * i) / (n - 1));
  return out;
}

function checkSteps(n: number): void {
  if (!Number.isInteger(n) || n < 1) throw new UserError(`steps must be a positive integer, got ${n}`);
}

export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 7): number[] {
  checkSteps(n);
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return [...f32(linspace(0, 1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho)), 0];
}

export function exponentialSigmas(n: number, sigmaMin: number, sigmaMax: number): number[] {
  checkSteps(n);
  return [...f32(linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp)), 0];
}

export function polyexponentialSigmas(n: number, sigmaMin: number, sigmaMax: number, rho = 1): number[] {
  checkSteps(n);
  const lmin = Math.log(sigmaMin);
  const lmax = Math.log(sigmaMax);
  return [...f32(linspace(1, 0, n).map((r) => Math.exp(r ** rho * (lmax - lmin) + lmin))), 0];
}

/** k-diffusion DiscreteSchedule.get_sigmas(n): timesteps evenly spaced from the last to 0, log-sigma interpolated. */
export function uniformSigmas(n: number, model: DiscreteSchedule): number[] {
  checkSteps(n);
  return [...linspace(model.numTimesteps - 1, 0, n).map((t) => model.tToSigma(t)), 0];
}

/** Timesteps evenly spaced from sigma_max's to sigma_min's, n + 1 of them with the last dropped. */
export function sgmUniformSigmas(n: number, model: DiscreteSchedule): number[] {
  checkSteps(n);
  const start = model.sigmaToT(model.sigmaMax);
  const end = model.sigmaToT(model.sigmaMin);
  return [...linspace(start, end, n + 1).slice(0, n).map((t) => model.tToSigma(t)), 0];
}

export function normalSigmas(n: number, model: DiscreteSchedule): number[] {
  checkSteps(n);
  const start = model.sigmaToT(model.sigmaMax);
  const end = model.sigmaToT(model.sigmaMin);
  return [...linspace(start, end, n).map((t) => model.tToSigma(t)), 0];
}

/** Every (N / n)-th training sigma counted from the top, truncated to an index. */
export function simpleSigmas(n: number, model: DiscreteSchedule): number[] {
  checkSteps(n);
  const s = model.sigmas;
  const ss = s.length / n;
  const out: number[] = [];
  for (let x = 0; x < n; x++) out.push(s[s.length - 1 - Math.trunc(x * ss)]!);
  return [...out, 0];
}

/** Training sigmas 1, 1 + N//n, ... below N, reversed; n + 1 of them when n does not divide N (as A1111). */
export function ddimSigmas(n: number, model: DiscreteSchedule): number[] {
  checkSteps(n);
  const s = model.sigmas;
  const ss = Math.max(Math.floor(s.length / n), 1);
  const out: number[] = [];
  for (let x = 1; x < s.length; x += ss) out.push(s[x]!);
  return [...out.reverse(), 0];
}

export function betaSigmas(n: number, sigmaMin: number, sigmaMax: number, alpha = 0.6, beta = 0.6): number[] {
  checkSteps(n);
  const ts = linspace(0, 1, n).map((v) => betaPpf(1 - v, alpha, beta));
  return [...f32(ts.map((x) => sigmaMin + x * (sigmaMax - sigmaMin))), 0];
}

/** KL Optimal: n + 1 sigmas evenly spaced in arctan(sigma), from sigma_max down to sigma_min (no final 0). */
export function klOptimalSigmas(n: number, sigmaMin: number, sigmaMax: number): number[] {
  checkSteps(n);
  const amin = Math.atan(sigmaMin);
  const amax = Math.atan(sigmaMax);
  const out: number[] = [];
  for (let i = 0; i <= n; i++) out.push(Math.tan((i / n) * amin + (1 - i / n) * amax));
  return f32(out);
}

// NVIDIA's published Align Your Steps tables (11 noise levels each).
const AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029];
const AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.38, 0.234, 0.113, 0.029];

/** The table, log-linearly resampled to n levels when n is not its length, then 0. */
export function alignYourStepsSigmas(n: number, isSdxl = false): number[] {
  checkSteps(n);
  const table = isSdxl ? AYS_SDXL : AYS_SD15;
  if (n === table.length) return [...f32(table), 0];
  const ys = table.map(Math.log).reverse();
  const xs = linspace(0, 1, ys.length);
  const out: number[] = [];
  for (const nx of linspace(0, 1, n)) {
    let k = 0;
    while (k < xs.length - 2 && nx > xs[k + 1]!) k++;
    const w = (nx - xs[k]!) / (xs[k + 1]! - xs[k]!);
    out.push(Math.exp(ys[k]! + Math.min(1, Math.max(0, w)) * (ys[k + 1]! - ys[k]!)));
  }
  return [...f32(out.reverse()), 0];
}

const rhoOr = (rho: number | undefined, dflt: number): number => (rho !== undefined && rho !== 0 ? rho : dflt);

/** A1111's scheduler table, in its order (GET /sdapi/v1/schedulers). */
export const SCHEDULERS: readonly SchedulerInfo[] = [
  { name: 'automatic', label: 'Automatic', aliases: null, defaultRho: -1, needInnerModel: false, sigmas: null },
  { name: 'uniform', label: 'Uniform', aliases: null, defaultRho: -1, needInnerModel: true, sigmas: (n, c) => uniformSigmas(n, c.model) },
  {
    name: 'karras', label: 'Karras', aliases: null, defaultRho: 7, needInnerModel: false,
    sigmas: (n, c) => karrasSigmas(n, c.model.sigmaMin, c.model.sigmaMax, rhoOr(c.rho, 7)),
  },
  {
    name: 'exponential', label: 'Exponential', aliases: null, defaultRho: -1, needInnerModel: false,
    sigmas: (n, c) => exponentialSigmas(n, c.model.sigmaMin, c.model.sigmaMax),
  },
  {
    name: 'polyexponential', label: 'Polyexponential', aliases: null, defaultRho: 1, needInnerModel: false,
    sigmas: (n, c) => polyexponentialSigmas(n, c.model.sigmaMin, c.model.sigmaMax, rhoOr(c.rho, 1)),
  },
  { name: 'sgm_uniform', label: 'SGM Uniform', aliases: ['SGMUniform'], defaultRho: -1, needInnerModel: true, sigmas: (n, c) => sgmUniformSigmas(n, c.model) },
  { name: 'kl_optimal', label: 'KL Optimal', aliases: null, defaultRho: -1, needInnerModel: false, sigmas: (n, c) => klOptimalSigmas(n, c.model.sigmaMin, c.model.sigmaMax) },
  { name: 'align_your_steps', label: 'Align Your Steps', aliases: null, defaultRho: -1, needInnerModel: false, sigmas: (n, c) => alignYourStepsSigmas(n, c.isSdxl) },
  { name: 'simple', label: 'Simple', aliases: null, defaultRho: -1, needInnerModel: true, sigmas: (n, c) => simpleSigmas(n, c.model) },
  { name: 'normal', label: 'Normal', aliases: null, defaultRho: -1, needInnerModel: true, sigmas: (n, c) => normalSigmas(n, c.model) },
  { name: 'ddim', label: 'DDIM', aliases: null, defaultRho: -1, needInnerModel: true, sigmas: (n, c) => ddimSigmas(n, c.model) },
  {
    name: 'beta', label: 'Beta', aliases: null, defaultRho: -1, needInnerModel: true,
    sigmas: (n, c) => betaSigmas(n, c.model.sigmaMin, c.model.sigmaMax, c.betaAlpha ?? 0.6, c.betaBeta ?? 0.6),
  },
];

/** Looks a scheduler up by name, label or alias (case-sensitive, as A1111); undefined if unknown. */
export function findScheduler(nameOrLabel: string): SchedulerInfo | undefined {
  return SCHEDULERS.find((s) => s.name === nameOrLabel || s.label === nameOrLabel || (s.aliases ?? []).includes(nameOrLabel));
}

/** GET /sdapi/v1/schedulers */
export function listSchedulersForApi(): { name: string; label: string; aliases: string[] | null; default_rho: number; need_inner_model: boolean }[] {
  return SCHEDULERS.map((s) => ({ name: s.name, label: s.label, aliases: s.aliases, default_rho: s.defaultRho, need_inner_model: s.needInnerModel }));
}
