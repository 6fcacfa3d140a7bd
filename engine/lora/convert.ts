/** kohya ↔ diffusers/PEFT conversion of a LoRA file, for `lora-scripts convert`. */
import { stat } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { Checkpoint } from '../sd/checkpoint.ts';
import { inferUnetLayout, LDM_PREFIX, type UnetLayout } from '../sd/keymap.ts';
import { UserError } from '../util/errors.ts';
import { loadLora } from './load.ts';
import type { LoraModule, ParsedLora } from './types.ts';
import { kohyaMetadata, writeKohyaLora, writePeftLora, type SaveDType } from './write.ts';

export type LoraFormat = 'kohya' | 'peft';

export interface ConvertOptions {
  input: string;
  /** A .safetensors file, or for PEFT a folder (pytorch_lora_weights.safetensors is written in it). */
  output: string;
  /** Default: the other format than the input's. */
  to?: LoraFormat;
  dtype?: SaveDType;
  /** Checkpoint whose UNet layout names LDM-style (SDXL kohya) modules in diffusers terms. */
  base?: string;
}

export interface ConvertResult {
  from: ParsedLora['format'];
  to: LoraFormat;
  file: string;
  modules: number;
  /** Keys of the input that belong to no module; they are not carried over. */
  dropped: string[];
}

/** sdxl's UNet numbering (3 levels, 2 res blocks, attention on the two lower levels), the only LDM-named kohya LoRAs. */
const SDXL_LAYOUT: UnetLayout = { levels: 3, layersPerBlock: 2, attention: [false, true, true], midAttention: true };

function mode(xs: number[]): number {
  const c = new Map<number, number>();
  for (const x of xs) c.set(x, (c.get(x) ?? 0) + 1);
  return [...c.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 0;
}

function baseVersionOf(l: ParsedLora): string {
  if (l.metadata.ss_base_model_version) return l.metadata.ss_base_model_version;
  if (l.modules.some((m) => m.part === 'te2')) return 'sdxl_base_v1-0';
  return l.metadata.ss_v2 === 'True' ? 'sd_v2' : 'sd_v1';
}

async function baseLayout(base: string): Promise<UnetLayout> {
  const ck = await Checkpoint.open(base);
  try {
    return inferUnetLayout(ck.keys().filter((k) => k.startsWith(LDM_PREFIX.unet)));
  } finally {
    await ck.close();
  }
}

async function layoutFor(l: ParsedLora, base: string | undefined): Promise<UnetLayout | undefined> {
  const ldmNamed = l.modules.some((m) => m.part === 'unet' && /^(input_blocks|middle_block|output_blocks)\./.test(m.path));
  if (!ldmNamed) return undefined;
  if (base) return baseLayout(base);
  if (baseVersionOf(l).startsWith('sdxl')) return SDXL_LAYOUT;
  throw new UserError(`${l.path}: UNet modules use LDM block names; pass --base <checkpoint> so they can be renamed to diffusers paths`);
}

export async function convertLora(opts: ConvertOptions): Promise<ConvertResult> {
  const lora = await loadLora(opts.input);
  const to: LoraFormat = opts.to ?? (lora.format === 'kohya' ? 'peft' : 'kohya');
  if (lora.modules.length === 0) throw new UserError(`${lora.path}: no LoRA modules found (${lora.unknownKeys.length} unrecognised tensors)`);
  const modules: LoraModule[] = lora.modules;
  let file = opts.output;
  const isDir = await stat(file).then((s) => s.isDirectory(), () => false);
  if (isDir || (to === 'peft' && extname(file) === '')) file = join(file, 'pytorch_lora_weights.safetensors');
  if (to === 'kohya') {
    const carried = Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => k.startsWith('ss_') || k.startsWith('modelspec.')));
    const ranks = modules.map((m) => m.rank ?? 0);
    const generated = kohyaMetadata({
      outputName: basename(file, extname(file)),
      networkDim: mode(ranks),
      networkAlpha: mode(modules.map((m) => (m.rank ?? 1) * m.scale)),
      baseModelVersion: baseVersionOf(lora),
    });
    // SDXL kohya files name UNet modules by LDM path; SD1/SD2 ones by diffusers path.
    const sdxl = baseVersionOf(lora).startsWith('sdxl');
    const ldmUnetNames = sdxl ? (opts.base ? await baseLayout(opts.base) : SDXL_LAYOUT) : undefined;
    await writeKohyaLora(file, modules, { ...generated, ...carried }, { dtype: opts.dtype, ldmUnetNames });
  } else {
    const carried = Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => k.startsWith('ss_')));
    await writePeftLora(file, modules, { dtype: opts.dtype, unetLayout: await layoutFor(lora, opts.base), extraMetadata: carried });
  }
  return { from: lora.format, to, file, modules: modules.length, dropped: lora.unknownKeys };
}
