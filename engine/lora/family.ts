/**
 * Which model family a LoRA was made for, and refusing one made for another family. A LoRA for SD 1.x
 * merged into SDXL (or the reverse) matches few or no weights by name and would silently do nothing, or
 * fail on shapes half-way; naming both families tells the user what went wrong.
 *
 * The file says it in its metadata (kohya `ss_base_model_version`, `ss_v2`, the modelspec `architecture`);
 * without metadata, a second text encoder's modules (`lora_te2_`, `text_encoder_2.`) mean SDXL.
 */
import type { SdFamily } from '../sd/arch.ts';
import { UserError } from '../util/errors.ts';
import type { ParsedLora } from './types.ts';

export const FAMILY_NAMES: Record<SdFamily, string> = { sd1: 'SD 1.x', sd2: 'SD 2.x', sdxl: 'SDXL', 'sdxl-refiner': 'SDXL refiner' };

/** The family a LoRA declares or shows, or undefined when it says nothing. */
export function loraFamily(lora: ParsedLora): SdFamily | undefined {
  const md = lora.metadata;
  const base = (md.ss_base_model_version ?? '').toLowerCase();
  if (base.startsWith('sdxl')) return 'sdxl';
  if (base.startsWith('sd_v2')) return 'sd2';
  if (base.startsWith('sd_v1')) return 'sd1';
  const arch = (md['modelspec.architecture'] ?? '').toLowerCase();
  if (arch.startsWith('stable-diffusion-xl')) return 'sdxl';
  if (arch.startsWith('stable-diffusion-v2')) return 'sd2';
  if (arch.startsWith('stable-diffusion-v1')) return 'sd1';
  if (lora.modules.some((m) => m.part === 'te2')) return 'sdxl';
  if (md.ss_v2 === 'True') return 'sd2';
  return undefined;
}

/** Throws when the LoRA is for another family than the model's (SD 1.x and 2.x LoRAs are told apart only by metadata). */
export function refuseWrongFamily(lora: ParsedLora, name: string, modelFamily: SdFamily): void {
  const family = loraFamily(lora);
  if (family === undefined || family === modelFamily) return;
  throw new UserError(`LoRA '${name}' is made for ${FAMILY_NAMES[family]}, but the loaded checkpoint is ${FAMILY_NAMES[modelFamily]}; use a ${FAMILY_NAMES[modelFamily]} LoRA`);
}
