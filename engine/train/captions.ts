/**
 * Per-step caption processing, in kohya's order: whole-caption dropout, then split into comma-separated tags,
 * keep the first keep_tokens in place, shuffle the rest, drop each of the rest with caption_tag_dropout_rate.
 * Randomness comes from (seed, image key, step), so a resumed run sees the same captions as an uninterrupted one.
 */
import type { TrainConfig } from './config.ts';
import { seededRandom, shuffled, type Random } from './seeded-random.ts';

export interface CaptionOptions {
  shuffle: boolean;
  keepTokens: number;
  dropoutRate: number;
  tagDropoutRate: number;
}

export const TAG_SEPARATOR = ',';

export function captionOptions(config: TrainConfig): CaptionOptions {
  return {
    shuffle: config.shuffle_caption,
    keepTokens: config.keep_tokens,
    dropoutRate: config.caption_dropout_rate,
    tagDropoutRate: config.caption_tag_dropout_rate,
  };
}

export function splitTags(caption: string): string[] {
  return caption
    .split(TAG_SEPARATOR)
    .map((t) => t.trim())
    .filter((t) => t.length > 0);
}

/** Applies the options with the given random source. A caption is returned untouched when no option changes it. */
export function processCaption(caption: string, opts: CaptionOptions, random: Random): string {
  // Draw the whole-caption dropout first and always, so enabling tag options does not shift later draws.
  if (opts.dropoutRate > 0 && random() < opts.dropoutRate) return '';
  if (!opts.shuffle && opts.tagDropoutRate <= 0) return caption;
  const tags = splitTags(caption);
  const fixed = tags.slice(0, opts.keepTokens);
  let flex = tags.slice(opts.keepTokens);
  if (opts.shuffle) flex = shuffled(flex, random);
  if (opts.tagDropoutRate > 0) flex = flex.filter(() => random() >= opts.tagDropoutRate);
  return [...fixed, ...flex].join(`${TAG_SEPARATOR} `);
}

/** The caption an image gets at one training step; `key` identifies the image (its path relative to the data folder). */
export function captionForStep(caption: string, opts: CaptionOptions, seed: number, key: string, step: number): string {
  return processCaption(caption, opts, seededRandom(seed, 'caption', key, step));
}
