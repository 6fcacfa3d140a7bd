/**
 * LoRA module → LDM weight key of a given model. Built like ComfyUI's key map: from the model's own weight
 * keys, every name a LoRA might use for that weight (diffusers path, LDM path, HF CLIP path) is indexed in
 * kohya's flattened form, so kohya names never need their `_` turned back into `.` to be found, and a name
 * the model does not have is simply absent.
 */
import { SDXL_TEXT } from '../sd/arch.ts';
import { inferUnetLayout, ldmToDiffusers, LDM_PREFIX, type UnetLayout } from '../sd/keymap.ts';
import type { LoraPart } from './names.ts';
import type { LoraModule, ParsedLora } from './types.ts';

export interface Target {
  key: string;
  rows?: [number, number];
}

const flat = (dotted: string) => dotted.replaceAll('.', '_');

/** OpenCLIP text transformer (SD2 TE, SDXL TE2) relative key → HF CLIP names; fused q/k/v come back with row ranges. */
function openclipNames(rel: string, shape: number[] | undefined): { name: string; rows?: [number, number] }[] {
  let m: RegExpMatchArray | null;
  if ((m = rel.match(/^transformer\.resblocks\.(\d+)\.attn\.in_proj_weight$/))) {
    if (!shape) return [];
    const d = shape[0]! / 3;
    return (['q', 'k', 'v'] as const).map((x, i) => ({
      name: `text_model.encoder.layers.${m![1]}.self_attn.${x}_proj`,
      rows: [i * d, (i + 1) * d] as [number, number],
    }));
  }
  if ((m = rel.match(/^transformer\.resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/))) {
    const hf = { 'attn.out_proj': 'self_attn.out_proj', 'mlp.c_fc': 'mlp.fc1', 'mlp.c_proj': 'mlp.fc2' }[m[2] as 'attn.out_proj'];
    return [{ name: `text_model.encoder.layers.${m[1]}.${hf}` }];
  }
  return [];
}

const TEXT_ENCODERS: { prefix: string; part: LoraPart; layout: 'hf' | 'openclip' }[] = [
  { prefix: LDM_PREFIX.text_encoder, part: 'te', layout: 'hf' },
  { prefix: LDM_PREFIX.text_encoder_openclip, part: 'te', layout: 'openclip' },
  { prefix: SDXL_TEXT.te1, part: 'te', layout: 'hf' },
  { prefix: SDXL_TEXT.te2OpenClip, part: 'te2', layout: 'openclip' },
  // SDXL from a diffusers folder: the OpenCLIP tower in the transformers layout.
  { prefix: SDXL_TEXT.te2Hf, part: 'te2', layout: 'hf' },
];

export class TargetIndex {
  private readonly map = new Map<string, Target>();
  readonly unetLayout: UnetLayout | undefined;

  /** `keys` are the model's LDM keys; `shapeOf` is needed only for fused OpenCLIP q/k/v. */
  constructor(keys: Iterable<string>, shapeOf?: (key: string) => number[] | undefined) {
    const all = [...keys];
    const unetKeys = all.filter((k) => k.startsWith(LDM_PREFIX.unet));
    this.unetLayout = unetKeys.length > 0 ? inferUnetLayout(unetKeys) : undefined;
    for (const key of all) {
      if (key.startsWith(LDM_PREFIX.unet) && key.endsWith('.weight')) {
        const ldm = key.slice(LDM_PREFIX.unet.length, -'.weight'.length);
        this.add('unet', ldm, { key });
        const d = ldmToDiffusers(key, { unet: this.unetLayout });
        if (d) this.add('unet', d.name.slice(0, -'.weight'.length), { key });
        continue;
      }
      for (const te of TEXT_ENCODERS) {
        if (!key.startsWith(te.prefix)) continue;
        const rel = key.slice(te.prefix.length);
        if (te.layout === 'hf') {
          if (!key.endsWith('.weight') || !rel.startsWith('text_model.')) continue;
          const path = rel.slice(0, -'.weight'.length);
          this.add(te.part, path, { key });
          this.add(te.part, path.slice('text_model.'.length), { key });
        } else {
          for (const n of openclipNames(rel, shapeOf?.(key))) {
            this.add(te.part, n.name, n.rows ? { key, rows: n.rows } : { key });
            this.add(te.part, n.name.slice('text_model.'.length), n.rows ? { key, rows: n.rows } : { key });
          }
        }
      }
    }
  }

  private add(part: LoraPart, dotted: string, t: Target): void {
    this.map.set(`${part}:${flat(dotted)}`, t);
  }

  resolve(part: LoraPart, path: string): Target | undefined {
    return this.map.get(`${part}:${flat(path)}`);
  }

  get size(): number {
    return this.map.size;
  }
}

/** Splits a parsed LoRA into modules with their target set, and the names of modules the model lacks. */
export function resolveTargets(lora: ParsedLora, index: TargetIndex): { matched: LoraModule[]; unmatched: string[] } {
  const matched: LoraModule[] = [];
  const unmatched: string[] = [...lora.unknownKeys];
  for (const m of lora.modules) {
    const t = index.resolve(m.part, m.path);
    if (t) matched.push({ ...m, target: t });
    else unmatched.push(m.name);
  }
  return { matched, unmatched };
}
