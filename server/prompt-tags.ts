/** A1111 extra-network tags (`<lora:name:te:unet:dyn>`, `<hypernet:…>`) in prompts: parsing and stripping. */
import { UserError } from '../engine/util/errors.ts';

export interface ExtraNetworkTag {
  type: string;
  positional: string[];
  named: Record<string, string>;
}

const RE_EXTRA_NET = /<(\w+):([^>]+)>/g;

/** Removes every tag from the prompt (whitespace around it stays, as in A1111) and returns the tags. */
export function extractTags(prompt: string): { prompt: string; tags: ExtraNetworkTag[] } {
  const tags: ExtraNetworkTag[] = [];
  const stripped = prompt.replace(RE_EXTRA_NET, (_m, type: string, args: string) => {
    const positional: string[] = [];
    const named: Record<string, string> = {};
    for (const item of args.split(':')) {
      const parts = item.split('=');
      // Python's item.split('=', 2) has exactly two parts only when there is exactly one '='.
      if (parts.length === 2) named[parts[0]!] = parts[1]!;
      else positional.push(item);
    }
    tags.push({ type, positional, named });
    return '';
  });
  return { prompt: stripped, tags };
}

export function stripTags(prompt: string): string {
  return prompt.replace(RE_EXTRA_NET, '');
}

function num(v: string, what: string): number {
  const n = Number(v.trim());
  if (v.trim() === '' || !Number.isFinite(n)) throw new UserError(`prompt: ${what}: '${v}' is not a number`, { status: 422 });
  return n;
}

export interface LoraTag {
  name: string;
  te: number;
  unet: number;
  dyn: number | null;
}

/** `<lora:NAME[:TE[:UNET[:DYN]]]>` with named `te=`, `unet=`, `dyn=` overriding (A1111 semantics). */
export function loraTag(tag: ExtraNetworkTag): LoraTag {
  const what = `<${tag.type}:${tag.positional.join(':')}>`;
  const name = tag.positional[0] ?? '';
  let te = tag.positional.length > 1 ? num(tag.positional[1]!, what) : 1.0;
  if ('te' in tag.named) te = num(tag.named['te']!, what);
  let unet = tag.positional.length > 2 ? num(tag.positional[2]!, what) : te;
  if ('unet' in tag.named) unet = num(tag.named['unet']!, what);
  let dyn: number | null = tag.positional.length > 3 ? Math.trunc(num(tag.positional[3]!, what)) : null;
  if ('dyn' in tag.named) dyn = Math.trunc(num(tag.named['dyn']!, what));
  return { name, te, unet, dyn };
}
