/**
 * The numbers SDXL embeds beside the pooled text (`label_emb`), per image, as A1111 sets them
 * (`sd_models_xl.get_learned_conditioning`): original size = target size = the size being sampled, the crop
 * from the options `sdxl_crop_top` / `sdxl_crop_left`; the refiner swaps the target size for an aesthetic score,
 * high for the prompt and low for the negative prompt.
 */
import { SDXL_REFINER_SIZE_CONDITIONS, type UnetArch } from './arch.ts';

/** A1111's options `sdxl_refiner_high_aesthetic_score` and `sdxl_refiner_low_aesthetic_score`. */
export const REFINER_AESTHETIC_SCORE = 6.0;
export const REFINER_NEGATIVE_AESTHETIC_SCORE = 2.5;

export interface SizeConditionOptions {
  sdxlCropTop?: number;
  sdxlCropLeft?: number;
  aestheticScore?: number;
  negativeAestheticScore?: number;
}

/**
 * Each of `batch` rows' numbers, flat: [original h, w, crop top, left, target h, w] (base) or
 * [original h, w, crop top, left, aesthetic score] (refiner); undefined for a UNet without `label_emb`.
 */
export function sizeConditionRows(adm: UnetArch['adm'], batch: number, height: number, width: number, o: SizeConditionOptions, negative: boolean): number[] | undefined {
  if (!adm) return undefined;
  const crop = [o.sdxlCropTop ?? 0, o.sdxlCropLeft ?? 0];
  const row =
    adm.sizeConditions === SDXL_REFINER_SIZE_CONDITIONS
      ? [height, width, ...crop, negative ? (o.negativeAestheticScore ?? REFINER_NEGATIVE_AESTHETIC_SCORE) : (o.aestheticScore ?? REFINER_AESTHETIC_SCORE)]
      : [height, width, ...crop, height, width];
  return Array.from({ length: batch }, () => row).flat();
}
