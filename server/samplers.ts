/** A1111 v1.10 sampler and scheduler tables (reference §8) and `get_sampler_and_scheduler` name resolution. */

export interface SamplerInfo {
  name: string;
  aliases: string[];
  options: Record<string, string>;
}

const s = (name: string, aliases: string[], options: Record<string, string | boolean> = {}): SamplerInfo => ({
  name,
  aliases,
  options: Object.fromEntries(Object.entries(options).map(([k, v]) => [k, String(v === true ? 'True' : v)])),
});

export const SAMPLERS: SamplerInfo[] = [
  s('DPM++ 2M', ['k_dpmpp_2m'], { scheduler: 'karras' }),
  s('DPM++ SDE', ['k_dpmpp_sde'], { scheduler: 'karras', second_order: true, brownian_noise: true }),
  s('DPM++ 2M SDE', ['k_dpmpp_2m_sde'], { scheduler: 'exponential', brownian_noise: true }),
  s('DPM++ 2M SDE Heun', ['k_dpmpp_2m_sde_heun'], { scheduler: 'exponential', brownian_noise: true, solver_type: 'heun' }),
  s('DPM++ 2S a', ['k_dpmpp_2s_a'], { scheduler: 'karras', uses_ensd: true, second_order: true }),
  s('DPM++ 3M SDE', ['k_dpmpp_3m_sde'], { scheduler: 'exponential', discard_next_to_last_sigma: true, brownian_noise: true }),
  s('Euler a', ['k_euler_a', 'k_euler_ancestral'], { uses_ensd: true }),
  s('Euler', ['k_euler']),
  s('LMS', ['k_lms']),
  s('Heun', ['k_heun'], { second_order: true }),
  s('DPM2', ['k_dpm_2'], { scheduler: 'karras', discard_next_to_last_sigma: true, second_order: true }),
  s('DPM2 a', ['k_dpm_2_a'], { scheduler: 'karras', discard_next_to_last_sigma: true, uses_ensd: true, second_order: true }),
  s('DPM fast', ['k_dpm_fast'], { uses_ensd: true }),
  s('DPM adaptive', ['k_dpm_ad'], { uses_ensd: true }),
  s('Restart', ['restart'], { scheduler: 'karras', second_order: true }),
  s('DDIM', ['ddim']),
  s('DDIM CFG++', ['ddim_cfgpp']),
  s('PLMS', ['plms']),
  s('UniPC', ['unipc']),
  s('LCM', ['k_lcm']),
];

export interface SchedulerInfo {
  name: string;
  label: string;
  aliases: string[] | null;
  default_rho: number;
  need_inner_model: boolean;
}

const sch = (name: string, label: string, extra: Partial<SchedulerInfo> = {}): SchedulerInfo => ({
  name,
  label,
  aliases: null,
  default_rho: -1,
  need_inner_model: false,
  ...extra,
});

export const SCHEDULERS: SchedulerInfo[] = [
  sch('automatic', 'Automatic'),
  sch('uniform', 'Uniform', { need_inner_model: true }),
  sch('karras', 'Karras', { default_rho: 7.0 }),
  sch('exponential', 'Exponential'),
  sch('polyexponential', 'Polyexponential', { default_rho: 1.0 }),
  sch('sgm_uniform', 'SGM Uniform', { aliases: ['SGMUniform'], need_inner_model: true }),
  sch('kl_optimal', 'KL Optimal'),
  sch('align_your_steps', 'Align Your Steps'),
  sch('simple', 'Simple', { need_inner_model: true }),
  sch('normal', 'Normal', { need_inner_model: true }),
  sch('ddim', 'DDIM', { need_inner_model: true }),
  sch('beta', 'Beta', { need_inner_model: true }),
];

function findSampler(name: string, available: SamplerInfo[]): SamplerInfo | undefined {
  const n = name.toLowerCase();
  return available.find((x) => x.name.toLowerCase() === n || x.aliases.some((a) => a.toLowerCase() === n));
}

function findScheduler(name: string): SchedulerInfo | undefined {
  const n = name.toLowerCase();
  return SCHEDULERS.find((x) => x.name === n || x.label.toLowerCase() === n || (x.aliases ?? []).some((a) => a.toLowerCase() === n));
}

export interface ResolvedSampler {
  sampler: string;
  /** Scheduler name (`automatic`, `karras`, …). */
  scheduler: string;
  /** Label for the infotext's `Schedule type`. */
  schedulerLabel: string;
  notes: string[];
}

/**
 * `"DPM++ 2M Karras"` → DPM++ 2M + Karras; unknown samplers fall back to the default (the first of
 * `available`), unknown schedulers to Automatic; a scheduler equal to the sampler's own default is Automatic.
 */
export function resolveSampler(samplerName: string | null, schedulerName: string | null, available: SamplerInfo[] = SAMPLERS): ResolvedSampler {
  const notes: string[] = [];
  let name = samplerName ?? '';
  let schedName = schedulerName;
  let sampler = findSampler(name, available);
  if (!sampler) {
    for (const sc of SCHEDULERS) {
      for (const suffix of [sc.label, sc.name, ...(sc.aliases ?? [])]) {
        if (name.toLowerCase().endsWith(' ' + suffix.toLowerCase())) {
          const base = findSampler(name.slice(0, name.length - suffix.length - 1), available);
          if (base) {
            sampler = base;
            schedName ??= sc.name;
          }
        }
      }
      if (sampler) break;
    }
  }
  if (!sampler) {
    sampler = available[0]!;
    if (name !== '') notes.push(`Sampler '${name}' is not available; used ${sampler.name}`);
    name = sampler.name;
  }
  let sched = schedName ? findScheduler(schedName) : SCHEDULERS[0]!;
  if (!sched) {
    notes.push(`Scheduler '${schedName}' is not available; used Automatic`);
    sched = SCHEDULERS[0]!;
  }
  if (sched.name === sampler.options['scheduler']) sched = SCHEDULERS[0]!;
  return { sampler: sampler.name, scheduler: sched.name, schedulerLabel: sched.label, notes };
}
