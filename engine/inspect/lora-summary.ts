/**
 * Rank / alpha / target summary of a LoRA-family file, read from the file itself: kohya `.alpha` tensors,
 * diffusers `__metadata__.lora_adapter_metadata`, or a PEFT `adapter_config.json` beside the file.
 */
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { SafetensorsFile } from '../safetensors/index.ts';

export interface Count<T> {
  value: T;
  count: number;
}

export interface LoraSummary {
  /** Module types present, e.g. ["lora"], ["loha"], ["lokr", "lora"]. */
  algorithms: string[];
  /** Number of patched modules. */
  targets: number;
  /** Targets per model part (unet, text_encoder, te1, model, …). */
  parts: Record<string, number>;
  ranks: Count<number>[];
  /** null = no alpha for those modules (scale 1, as every consumer treats it). */
  alphas: Count<number | null>[];
  /** alpha / rank (or alpha / √rank for rsLoRA) per module, grouped. */
  scales: Count<number>[];
  /** Where alpha came from, in words. */
  alphaSource: string;
}

export interface ModuleInfo {
  module: string;
  part: string;
  algo: string;
  rank: number | undefined;
  alpha: number | null;
}

function group<T>(xs: T[]): Count<T>[] {
  const m = new Map<T, number>();
  for (const x of xs) m.set(x, (m.get(x) ?? 0) + 1);
  return [...m.entries()].map(([value, count]) => ({ value, count })).sort((a, b) => b.count - a.count);
}

export function summarise(mods: ModuleInfo[], alphaSource: string, rslora = false): LoraSummary {
  const parts: Record<string, number> = {};
  for (const m of mods) parts[m.part] = (parts[m.part] ?? 0) + 1;
  const ranks = mods.flatMap((m) => (m.rank === undefined ? [] : [m.rank]));
  const scales = mods.flatMap((m) => {
    if (m.rank === undefined || m.rank === 0) return [];
    if (m.alpha === null) return [1];
    return [m.alpha / (rslora ? Math.sqrt(m.rank) : m.rank)];
  });
  return {
    algorithms: [...new Set(mods.map((m) => m.algo))].sort(),
    targets: mods.length,
    parts,
    ranks: group(ranks),
    alphas: group(mods.map((m) => m.alpha)),
    scales: group(scales),
    alphaSource,
  };
}

const KOHYA_PART: Record<string, string> = {
  lora_unet: 'unet',
  lora_te: 'text_encoder',
  lora_te1: 'text_encoder_1',
  lora_te2: 'text_encoder_2',
  lora_prior_unet: 'prior_unet',
  lora_prior_te: 'prior_text_encoder',
};

export function kohyaPart(module: string): string {
  const m = /^(lora_(?:prior_)?(?:unet|te\d?))_/.exec(module);
  return m ? (KOHYA_PART[m[1]!] ?? m[1]!) : 'other';
}

/** kohya-style files (LoRA, LoCon, LoHa, LoKr): `<module>.<suffix>`, alpha as a 0-d tensor per module. */
export async function kohyaStyleModules(f: SafetensorsFile): Promise<ModuleInfo[]> {
  const byModule = new Map<string, Set<string>>();
  for (const name of f.names()) {
    const dot = name.indexOf('.');
    if (dot < 0) continue;
    const mod = name.slice(0, dot);
    if (!byModule.has(mod)) byModule.set(mod, new Set());
    byModule.get(mod)!.add(name.slice(dot + 1));
  }
  const out: ModuleInfo[] = [];
  for (const [mod, sfx] of byModule) {
    const shape0 = (s: string) => (sfx.has(s) ? f.info(`${mod}.${s}`).shape[0] : undefined);
    let algo: string;
    let rank: number | undefined;
    if (sfx.has('lora_down.weight') && sfx.has('lora_up.weight')) {
      algo = 'lora';
      rank = shape0('lora_down.weight');
    } else if (sfx.has('hada_w1_a') && sfx.has('hada_w1_b')) {
      algo = 'loha';
      rank = shape0('hada_w1_b');
    } else if ((sfx.has('lokr_w1') || sfx.has('lokr_w1_a')) && (sfx.has('lokr_w2') || sfx.has('lokr_w2_a'))) {
      algo = 'lokr';
      // LoKr's "dim" is the rank of a decomposed factor; with both factors full there is none.
      rank = shape0('lokr_w1_b') ?? shape0('lokr_w2_b');
    } else if (sfx.has('diff')) algo = 'full';
    else if (sfx.has('on_input') && sfx.has('weight')) algo = 'ia3';
    else if (sfx.has('oft_blocks') || sfx.has('oft_diag')) algo = 'oft';
    else if (sfx.has('a1.weight') && sfx.has('b1.weight')) algo = 'glora';
    else continue;
    let alpha: number | null = null;
    if (sfx.has('alpha')) {
      const a = await f.readFloat32(`${mod}.alpha`);
      if (a.length === 1) alpha = a[0]!;
    }
    // LoKr without a decomposed factor ignores alpha (scale 1), like A1111.
    if (algo === 'lokr' && rank === undefined) alpha = null;
    out.push({ module: mod, part: kohyaPart(mod), algo, rank, alpha });
  }
  return out;
}

/** PEFT-style keys: `<module>.lora_A.weight` / `.lora_B.weight` (also the older diffusers namings). */
const PEFT_DOWN = [/\.lora_A(?:\.[^.]+)?\.weight$/, /\.lora\.down\.weight$/, /\.lora_linear_layer\.down\.weight$/, /_lora\.down\.weight$/];

export function peftModules(f: SafetensorsFile, partOf: (module: string) => string): Array<Omit<ModuleInfo, 'alpha'>> {
  const out: Array<Omit<ModuleInfo, 'alpha'>> = [];
  for (const name of f.names()) {
    for (const re of PEFT_DOWN) {
      const m = re.exec(name);
      if (!m) continue;
      const module = name.slice(0, m.index);
      out.push({ module, part: partOf(module), algo: 'lora', rank: f.info(name).shape[0] });
      break;
    }
  }
  return out;
}

/**
 * PEFT's per-module override rule for rank_pattern / alpha_pattern: a key matches a module whose full name
 * ends with it at a dot boundary (the key is a regex).
 */
function patternValue(module: string, patterns: unknown): number | undefined {
  if (!patterns || typeof patterns !== 'object') return undefined;
  for (const [k, v] of Object.entries(patterns as Record<string, unknown>)) {
    if (typeof v !== 'number') continue;
    try {
      if (new RegExp(`^(.*\\.)?(${k})$`).test(module)) return v;
    } catch {
      // A pattern that is not a valid JS regex cannot be applied; fall back to the global value.
    }
  }
  return undefined;
}

/** diffusers: alpha per component from `lora_adapter_metadata` ("unet.lora_alpha", …); absent means alpha = r. */
export function diffusersAlphas(f: SafetensorsFile, mods: Array<Omit<ModuleInfo, 'alpha'>>): { mods: ModuleInfo[]; source: string } {
  let meta: Record<string, unknown> | undefined;
  const raw = f.metadata.lora_adapter_metadata;
  if (raw !== undefined) {
    try {
      const j = JSON.parse(raw) as unknown;
      if (j && typeof j === 'object' && !Array.isArray(j)) meta = j as Record<string, unknown>;
    } catch {
      // Unparseable metadata is reported as absent; diffusers itself would then assume alpha = r.
    }
  }
  const out = mods.map((m) => {
    const comp = m.module.split('.')[0]!;
    const inner = m.module.slice(comp.length + 1);
    const global = meta?.[`${comp}.lora_alpha`];
    const pat = patternValue(inner, meta?.[`${comp}.alpha_pattern`]);
    const alpha = pat ?? (typeof global === 'number' ? global : (m.rank ?? null));
    return { ...m, alpha };
  });
  return {
    mods: out,
    source: meta ? '__metadata__.lora_adapter_metadata' : 'not in file: diffusers assumes alpha = rank',
  };
}

/** PEFT adapters keep r / lora_alpha in adapter_config.json next to the weights. */
export async function peftConfigAlphas(
  path: string,
  mods: Array<Omit<ModuleInfo, 'alpha'>>,
): Promise<{ mods: ModuleInfo[]; source: string; rslora: boolean }> {
  const cfgPath = join(dirname(path), 'adapter_config.json');
  let cfg: Record<string, unknown> | undefined;
  try {
    const j = JSON.parse(await readFile(cfgPath, 'utf8')) as unknown;
    if (j && typeof j === 'object' && !Array.isArray(j)) cfg = j as Record<string, unknown>;
  } catch {
    cfg = undefined;
  }
  if (!cfg) return { mods: mods.map((m) => ({ ...m, alpha: null })), source: 'unknown: no readable adapter_config.json beside the file', rslora: false };
  const out = mods.map((m) => {
    const inner = m.module.replace(/^base_model\.model\./, '');
    const pat = patternValue(inner, cfg.alpha_pattern);
    const alpha = pat ?? (typeof cfg.lora_alpha === 'number' ? cfg.lora_alpha : null);
    return { ...m, alpha };
  });
  return { mods: out, source: cfgPath, rslora: cfg.use_rslora === true };
}
