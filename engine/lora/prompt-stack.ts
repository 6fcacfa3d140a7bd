/**
 * Prompt → LoRA stack, the way A1111 activates extra networks: tags are stripped from the prompt, each
 * `<lora:…>` / `<lyco:…>` name is resolved in the LoRA library, and the result feeds `LoraMerger.apply`.
 * Unlike A1111 (which logs and carries on), an unknown name is a UserError that lists the closest names.
 */
import { extractPromptTags, type LoraTag, type OtherTag } from './prompt-tags.ts';
import type { StackItem } from './merge.ts';
import type { LoraEntry, LoraLibrary } from './resolve.ts';

export interface PromptStack {
  /** Prompt text with every tag removed. */
  prompt: string;
  stack: StackItem[];
  /** The tag and the library entry behind each stack item, in prompt order. */
  resolved: { tag: LoraTag; entry: LoraEntry }[];
  /** Tags of other types (hypernet, unknown): stripped; the caller may log "skipping unknown extra network". */
  other: OtherTag[];
}

export async function stackFromPrompt(prompt: string, library: LoraLibrary, options: { defaultMultiplier?: number } = {}): Promise<PromptStack> {
  const tags = extractPromptTags(prompt, options);
  const resolved: PromptStack['resolved'] = [];
  for (const tag of tags.loras) resolved.push({ tag, entry: await library.resolve(tag.name) });
  return {
    prompt: tags.prompt,
    stack: resolved.map(({ tag, entry }) => ({ path: entry.path, te: tag.te, unet: tag.unet, name: tag.name, ...(tag.dyn === undefined ? {} : { dyn: tag.dyn }) })),
    resolved,
    other: tags.other,
  };
}
