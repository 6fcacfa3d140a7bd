/**
 * Any LoRA state dict (kohya / A1111, LyCORIS LoCon / LoHa / LoKr / full, DoRA, diffusers / PEFT and its
 * older spellings) → a list of format-independent modules with their scale. Unknown keys are collected
 * by name, never thrown on: a LoRA with one odd key must still apply the rest.
 */
import { UserError } from '../util/errors.ts';
import { parseModuleName, type LoraPart } from './names.ts';
import type { DoraAxis, F32Tensor, LoraKind, LoraModule, ParsedLora } from './types.ts';

type Style = 'kohya' | 'peft' | 'diffusers-legacy';

/** Tensor-key suffix → (role, naming style). Checked in order; the first match wins. */
const SUFFIXES: [string, string, Style][] = [
  ['.lora_down.weight', 'down', 'kohya'],
  ['.lora_up.weight', 'up', 'kohya'],
  ['.lora_mid.weight', 'mid', 'kohya'],
  ['.lora_A.default.weight', 'down', 'peft'],
  ['.lora_B.default.weight', 'up', 'peft'],
  ['.lora_A.weight', 'down', 'peft'],
  ['.lora_B.weight', 'up', 'peft'],
  ['.lora_linear_layer.down.weight', 'down', 'diffusers-legacy'],
  ['.lora_linear_layer.up.weight', 'up', 'diffusers-legacy'],
  ['.lora.down.weight', 'down', 'diffusers-legacy'],
  ['.lora.up.weight', 'up', 'diffusers-legacy'],
  ['_lora.down.weight', 'down', 'diffusers-legacy'],
  ['_lora.up.weight', 'up', 'diffusers-legacy'],
  ['.lora_magnitude_vector.default.weight', 'magnitude', 'peft'],
  ['.lora_magnitude_vector.weight', 'magnitude', 'peft'],
  ['.lora_magnitude_vector', 'magnitude', 'peft'],
  ['.dora_scale', 'dora_scale', 'kohya'],
  ['.alpha', 'alpha', 'kohya'],
  ['.scale', 'scale', 'kohya'],
  ...['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b', 'hada_t1', 'hada_t2', 'lokr_w1', 'lokr_w1_a', 'lokr_w1_b', 'lokr_w2', 'lokr_w2_a', 'lokr_w2_b', 'lokr_t2', 'diff', 'diff_b'].map(
    (r): [string, string, Style] => [`.${r}`, r, 'kohya'],
  ),
  // LyCORIS IA3: `<module>.weight` + `<module>.on_input`; last, so every longer suffix wins first.
  ['.on_input', 'on_input', 'kohya'],
  ['.weight', 'ia3_weight', 'kohya'],
];

function splitKey(key: string): { module: string; role: string; style: Style } | undefined {
  for (const [suffix, role, style] of SUFFIXES) {
    if (key.endsWith(suffix) && key.length > suffix.length) {
      // `to_q_lora.down.weight` keeps `_lora` on the module so the name parser can strip it.
      const module = suffix.startsWith('_lora') ? key.slice(0, -suffix.length + '_lora'.length) : key.slice(0, -suffix.length);
      return { module, role, style };
    }
  }
  return undefined;
}

/** PEFT rank_pattern / alpha_pattern: a key matches pattern p when it ends with p at a module boundary. */
function patternValue(patterns: Record<string, number> | undefined, path: string): number | undefined {
  if (!patterns) return undefined;
  for (const [p, v] of Object.entries(patterns)) {
    try {
      if (new RegExp(`^(.*\\.)?(${p})$`).test(path)) return v;
    } catch {
      if (path === p || path.endsWith('.' + p)) return v;
    }
  }
  return undefined;
}

interface PeftConfig {
  r?: number;
  lora_alpha?: number;
  use_rslora?: boolean;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
}

const PEFT_COMPONENT: Record<LoraPart, string> = { unet: 'unet', te: 'text_encoder', te2: 'text_encoder_2' };

/** diffusers' `lora_adapter_metadata`: LoraConfig fields flattened as "<component>.<field>". */
function peftConfigs(metadata: Record<string, string>, source: string): Partial<Record<LoraPart, PeftConfig>> {
  const raw = metadata.lora_adapter_metadata;
  if (raw === undefined) return {};
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(raw);
  } catch (e) {
    throw new UserError(`${source}: __metadata__.lora_adapter_metadata is not valid JSON`, { cause: e });
  }
  const out: Partial<Record<LoraPart, PeftConfig>> = {};
  for (const [part, comp] of Object.entries(PEFT_COMPONENT) as [LoraPart, string][]) {
    const get = (f: string) => obj[`${comp}.${f}`];
    if (get('r') === undefined && get('lora_alpha') === undefined) continue;
    out[part] = {
      r: get('r') as number | undefined,
      lora_alpha: get('lora_alpha') as number | undefined,
      use_rslora: get('use_rslora') === true,
      rank_pattern: get('rank_pattern') as Record<string, number> | undefined,
      alpha_pattern: get('alpha_pattern') as Record<string, number> | undefined,
    };
  }
  return out;
}

function scalarOf(t: F32Tensor | undefined): number | undefined {
  return t && t.data.length >= 1 ? t.data[0] : undefined;
}

function kindOf(roles: Record<string, F32Tensor>): LoraKind | undefined {
  if (roles.down && roles.up) {
    const k = roles.down.shape.slice(2).reduce((a, b) => a * b, 1);
    return roles.mid || k > 1 ? 'locon' : 'lora';
  }
  if (roles.hada_w1_a && roles.hada_w1_b && roles.hada_w2_a && roles.hada_w2_b) return 'loha';
  if ((roles.lokr_w1 || (roles.lokr_w1_a && roles.lokr_w1_b)) && (roles.lokr_w2 || (roles.lokr_w2_a && roles.lokr_w2_b))) return 'lokr';
  if (roles.diff) return 'full';
  if (roles.ia3_weight && roles.on_input) return 'ia3';
  return undefined;
}

function rankOf(kind: LoraKind, roles: Record<string, F32Tensor>): number | undefined {
  switch (kind) {
    case 'lora':
    case 'locon':
      return roles.down!.shape[0];
    case 'loha':
      return roles.hada_w1_b!.shape[0];
    case 'lokr':
      return roles.lokr_w1_b?.shape[0] ?? roles.lokr_w2_b?.shape[0];
    case 'full':
    case 'ia3':
      return undefined;
  }
}

function doraOf(roles: Record<string, F32Tensor>): { magnitude: F32Tensor; axis: DoraAxis } | undefined {
  if (roles.magnitude) return { magnitude: roles.magnitude, axis: 'out' };
  const d = roles.dora_scale;
  if (!d) return undefined;
  // kohya / A1111 store [1, in, (1, 1)]; LyCORIS' wd_on_out variant stores [out, 1, (1, 1)].
  return { magnitude: d, axis: d.shape[0] === 1 && d.data.length > 1 ? 'in' : 'out' };
}

/**
 * Groups tensors into modules. `tensors` are already float32; `source` names the file in messages.
 */
export function parseLoraTensors(tensors: Map<string, F32Tensor>, metadata: Record<string, string>, source = 'LoRA'): ParsedLora {
  const groups = new Map<string, { roles: Record<string, F32Tensor>; styles: Set<Style>; keys: string[] }>();
  const unknownKeys: string[] = [];
  const embeddings = new Set<string>();
  for (const [key, t] of tensors) {
    const emb = key.match(/^bundle_emb\.([^.]+)\./);
    if (emb) {
      embeddings.add(emb[1]!);
      continue;
    }
    const s = splitKey(key);
    if (!s) {
      unknownKeys.push(key);
      continue;
    }
    let g = groups.get(s.module);
    if (!g) groups.set(s.module, (g = { roles: {}, styles: new Set(), keys: [] }));
    g.roles[s.role] = t;
    g.keys.push(key);
    if (!['alpha', 'scale', 'dora_scale', 'magnitude'].includes(s.role)) g.styles.add(s.style);
  }
  const peft = peftConfigs(metadata, source);
  const modules: LoraModule[] = [];
  const styles = new Set<Style>();
  for (const [module, { roles, styles: st, keys }] of groups) {
    const kind = kindOf(roles);
    const name = parseModuleName(module);
    if (!kind || !name) {
      unknownKeys.push(...keys);
      continue;
    }
    st.forEach((x) => styles.add(x));
    const rank = rankOf(kind, roles);
    let alpha = scalarOf(roles.alpha);
    const explicitScale = scalarOf(roles.scale);
    let scale: number;
    const isPeft = st.has('peft') || st.has('diffusers-legacy');
    const cfg = peft[name.part];
    if (explicitScale !== undefined) scale = explicitScale;
    else if (alpha === undefined && isPeft && cfg && rank !== undefined) {
      alpha = patternValue(cfg.alpha_pattern, name.path) ?? cfg.lora_alpha ?? patternValue(cfg.rank_pattern, name.path) ?? cfg.r ?? rank;
      scale = cfg.use_rslora ? alpha / Math.sqrt(rank) : alpha / rank;
    } else if (alpha !== undefined && rank !== undefined && rank > 0) scale = alpha / rank;
    // No alpha anywhere: every consumer (A1111, kohya, ComfyUI, diffusers) uses scale 1.
    else scale = 1;
    // LoKr with neither factor decomposed has no rank to divide by (A1111: scale 1).
    if (kind === 'lokr' && rank === undefined && explicitScale === undefined) scale = 1;
    const own: Record<string, F32Tensor> = {};
    for (const [role, t] of Object.entries(roles)) if (!['alpha', 'scale', 'dora_scale', 'magnitude'].includes(role)) own[role] = t;
    modules.push({ name: module, part: name.part, path: name.path, kind, tensors: own, rank, alpha, scale, dora: doraOf(roles) });
  }
  const format = styles.size === 1 ? [...styles][0]! : styles.size === 0 ? 'kohya' : styles.has('kohya') ? 'mixed' : 'peft';
  return { metadata, format, modules, unknownKeys: unknownKeys.sort(), bundledEmbeddings: [...embeddings].sort() };
}
