import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fixturesDir } from './paths.ts';

/**
 * Load options for the sd-tiny single file. Its text encoder is the fixtures' documented exception to the
 * 64-wide-head family rule, and a single file records no head count, so the count comes from the same
 * fixture's diffusers config (as a user would give it for such a custom model).
 */
export async function sdTinySingleFileOptions(): Promise<{ textEncoderHeads: number }> {
  const cfg = JSON.parse(await readFile(join(fixturesDir, 'sd-tiny', 'diffusers', 'text_encoder', 'config.json'), 'utf8')) as { num_attention_heads: number };
  return { textEncoderHeads: cfg.num_attention_heads };
}
