/** A1111 prompt styles from `<data-dir>/styles.csv` (columns name, prompt, negative_prompt). */
import { readFile } from 'node:fs/promises';
import { parse } from 'csv-parse/sync';
import { UserError } from '../engine/util/errors.ts';

export interface PromptStyle {
  name: string;
  prompt: string;
  negative_prompt: string;
}

export async function readStyles(path: string): Promise<PromptStyle[]> {
  const text = await readFile(path, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return null;
    throw e;
  });
  if (text === null) return [];
  let rows: Record<string, string>[];
  try {
    rows = parse(text, { columns: true, skip_empty_lines: true, relax_column_count: true, bom: true }) as Record<string, string>[];
  } catch (e) {
    throw new UserError(`${path}: ${(e as Error).message}`);
  }
  return rows
    .filter((r) => (r['name'] ?? '') !== '')
    .map((r) => ({ name: r['name']!, prompt: r['prompt'] ?? '', negative_prompt: r['negative_prompt'] ?? '' }));
}

/** A1111 `apply_styles_to_prompt`: `{prompt}` in the style is replaced by the prompt, else the style is appended with ", ". */
export function applyStyle(prompt: string, style: string): string {
  if (style.includes('{prompt}')) return style.replace('{prompt}', prompt);
  if (style === '') return prompt;
  return prompt === '' ? style : `${prompt}, ${style}`;
}
