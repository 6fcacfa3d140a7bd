/**
 * The settings of a labelling run, one schema for the three ways in: `lora-scripts label` flags, a YAML
 * `--config` file and the server's `POST /sdapi/v1/label` body all use these snake_case keys.
 */
import { z } from 'zod';
import { UserError } from '../util/errors.ts';
import { DEFAULT_CLIP_CAPTION, type ClipCaptionOptions } from './clip-captioner.ts';
import { DEFAULT_TABLES, TABLE_NAMES } from './tables.ts';
import { DEFAULT_WD14, type Wd14Options } from './wd14.ts';
import { CAPTION_WRITE_MODES } from '../train/caption-table.ts';

const probability = z.number().min(0).max(1);

export const labelSettingsSchema = z
  .object({
    /** What writes the captions: CLIP phrases, WD14 tags, or the CLIP caption followed by the tags. */
    model: z.enum(['clip', 'wd14', 'both']).default('clip'),
    /** missing: only images without a caption; overwrite: replace; append: add the new tags an old caption lacks. */
    mode: z.enum(CAPTION_WRITE_MODES).default('missing'),
    /** metadata: the folder's metadata.csv (or .jsonl); sidecar: photo.png → photo.txt. */
    target: z.enum(['metadata', 'sidecar']).default('metadata'),
    caption_extension: z.string().regex(/^\.[A-Za-z0-9_-]+$/, 'a file extension such as .txt').default('.txt'),
    /** Written first in every new caption (a LoRA's trigger word). */
    trigger: z.string().trim().default(''),
    dry_run: z.boolean().default(false),
    clip_mode: z.enum(['fast', 'best']).default(DEFAULT_CLIP_CAPTION.mode),
    tables: z.array(z.enum(TABLE_NAMES)).default([...DEFAULT_TABLES]),
    /** Shorthand for adding the artists table. */
    artists: z.boolean().default(false),
    user_tables: z.record(z.string(), z.array(z.string())).default({}),
    vocab: z.array(z.string()).default([]),
    max_flavors: z.number().int().min(0).max(32).default(DEFAULT_CLIP_CAPTION.maxFlavors),
    general_threshold: probability.default(DEFAULT_WD14.generalThreshold),
    character_threshold: probability.default(DEFAULT_WD14.characterThreshold),
    ratings: z.boolean().default(DEFAULT_WD14.ratings),
    replace_underscores: z.boolean().default(DEFAULT_WD14.replaceUnderscores),
    exclude_tags: z.array(z.string()).default([]),
    max_tags: z.number().int().positive().nullable().default(DEFAULT_WD14.maxTags),
  })
  .strict();

export type LabelSettings = z.infer<typeof labelSettingsSchema>;

/** Validates settings; the error names the key (`where` says which file or request). */
export function parseLabelSettings(raw: unknown, where: string): LabelSettings {
  const r = labelSettingsSchema.safeParse(raw ?? {});
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${i.path.join('.') || '(settings)'}: ${i.message}`);
    throw new UserError(`${where}: ${problems.join('; ')}`);
  }
  return r.data;
}

export function clipCaptionOptions(s: LabelSettings): ClipCaptionOptions {
  const tables = s.artists && !s.tables.includes('artists') ? [...s.tables, 'artists' as const] : s.tables;
  return { mode: s.clip_mode, tables, userTables: s.user_tables, vocab: s.vocab, maxFlavors: s.max_flavors };
}

export function wd14Options(s: LabelSettings): Wd14Options {
  return {
    generalThreshold: s.general_threshold,
    characterThreshold: s.character_threshold,
    ratings: s.ratings,
    replaceUnderscores: s.replace_underscores,
    exclude: s.exclude_tags,
    maxTags: s.max_tags,
  };
}
